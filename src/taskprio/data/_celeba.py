"""CelebA: aligned face images with 40 binary attributes, one classification task each.

The layout of the official release, under the root (``data/celeba`` by default, or one level
down in ``celeba/``, as torchvision keeps it); the files may also sit in the release's
``Img/``, ``Anno/`` and ``Eval/`` folders; 162,770 train / 19,867 val / 19,962 test images::

    img_align_celeba/<nnnnnn>.jpg   RGB 178x218 (width x height), 000001.jpg .. 202599.jpg
    list_attr_celeba.txt            line 1: the number of images; line 2: the 40 attribute
                                    names; then per image: "<file> v1 ... v40", v = 1 or -1
    list_eval_partition.txt         per image: "<file> p", p = 0 train, 1 val, 2 test

Targets: one task per attribute, named as in ``list_attr_celeba.txt`` (``5_o_Clock_Shadow``,
``Arched_Eyebrows``, ...): a 0-dim int64 tensor, 1 where the file says 1 and 0 where it says
-1, so batches stack to [B] class indices for ``cross_entropy`` (or, as floats, targets for
``binary_cross_entropy_with_logits``). A mapping of 40 tasks, rather than one [40] tensor,
lets every attribute be a task of :class:`taskprio.MultiTaskStep`, as in Sener & Koltun
(2018).

Where to get it: the official page "Large-scale CelebFaces Attributes (CelebA) Dataset"
(Liu et al., ICCV 2015, mmlab.ie.cuhk.edu.hk/projects/CelebA.html): ``Img/img_align_celeba.zip``,
``Anno/list_attr_celeba.txt`` and ``Eval/list_eval_partition.txt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from taskprio.data._dense import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_image_options,
    check_tasks,
    image_tensor,
    missing_data_error,
    normalize_image,
    resize_sample,
    resolve_root,
)
from taskprio.data._image_io import read_rgb

_LAYOUT = __doc__ or ""
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
SPLITS = {"train": 0, "val": 1, "test": 2}


def _find(base: Path, name: str, folder: str) -> Path | None:
    for path in (base / name, base / folder / name):
        if path.exists():
            return path
    return None


class CelebA(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """CelebA's aligned faces with their 40 binary attributes as 40 tasks.

    Each item is ``(image, targets)``: image [3, H, W] float32 normalized by `mean` and `std`
    (218x178 as stored), targets ``{attribute: 0-dim int64 in {0, 1}}``.

    Args:
        root: the data folder; ``<data_root()>/celeba`` when None.
        split: ``"train"``, ``"val"``, ``"test"`` (the official partition) or ``"all"``.
        attributes: the attributes to return, in order; all 40 when None.
        augment: random horizontal flip (attributes do not depend on left and right); off by
            default.
        image_size: (height, width) to resize to (e.g. (64, 64), as Sener & Koltun); None
            keeps 218x178.
        mean, std: per-channel normalization of the [0, 1] image (ImageNet's by default).
        generator: the flip's random generator; None (default) uses torch's global one,
            seeded per DataLoader worker (a generator given here is copied into each).

    Raises:
        FileNotFoundError: the attribute file, partition file or image folder is missing; the
            message shows the expected layout.
        ValueError: a bad `split`, `attributes` or option, or a damaged annotation file.

    Attributes:
        attribute_names: the 40 names in file order.
        tasks: the returned attributes, in order.
        ids: the image files of the split (``000001.jpg``, ...), in order.
    """

    NAME: ClassVar[str] = "CelebA"
    COMMAND: ClassVar[str] = "celeba"
    DIRNAME: ClassVar[str] = "celeba"
    LAYOUT: ClassVar[str] = _LAYOUT

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        split: str = "train",
        attributes: Sequence[str] | None = None,
        augment: bool = False,
        image_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
    ) -> None:
        self.image_size, _ = check_image_options(image_size, (), mean, std)
        self.augment = augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.generator = generator
        if split not in (*SPLITS, "all"):
            raise ValueError(f"`split` must be one of {[*SPLITS, 'all']}; got {split!r}.")
        self.split = split
        self.requested_root = resolve_root(root, self.DIRNAME)
        files = None
        for base in (self.requested_root, self.requested_root / "celeba"):
            attribute_file = _find(base, ATTRIBUTE_FILE, "Anno")
            partition_file = _find(base, PARTITION_FILE, "Eval")
            image_dir = _find(base, IMAGE_FOLDER, "Img")
            if attribute_file and partition_file and image_dir:
                files = attribute_file, partition_file, image_dir
                break
        if files is None:
            found = (
                "the folder does not exist"
                if not self.requested_root.exists()
                else f"it lacks {IMAGE_FOLDER}/, {ATTRIBUTE_FILE} or {PARTITION_FILE}"
            )
            raise missing_data_error(
                self.NAME, self.COMMAND, self.requested_root, self.LAYOUT, found=found
            )
        attribute_file, partition_file, self.image_dir = files
        self.attribute_names, names, values = read_attributes(attribute_file)
        self.tasks = check_tasks(attributes, self.attribute_names, self.NAME)
        partition = read_partition(partition_file)
        missing = [name for name in names if name not in partition]
        if missing:
            raise ValueError(
                f"{partition_file} gives no partition for {len(missing)} images of "
                f"{attribute_file} (first: {missing[0]})."
            )
        keep = [
            i for i, name in enumerate(names) if split == "all" or partition[name] == SPLITS[split]
        ]
        columns = [self.attribute_names.index(task) for task in self.tasks]
        self.ids = [names[i] for i in keep]
        # 1 → 1, -1 → 0; [N, tasks] int64.
        self._labels = torch.from_numpy((values[keep][:, columns] > 0).astype(np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples.")
        path = self.image_dir / self.ids[index]
        if not path.is_file():
            raise missing_data_error(
                self.NAME,
                self.COMMAND,
                self.requested_root,
                self.LAYOUT,
                found=f"{path} is missing",
            )
        image = image_tensor(read_rgb(path))
        if self.image_size is not None:
            image, _ = resize_sample(image, {}, self.image_size)
        if self.augment and bool(torch.rand((), generator=self.generator) < 0.5):
            image = image.flip(-1)
        labels = self._labels[index]
        targets = {task: labels[k].clone() for k, task in enumerate(self.tasks)}
        return normalize_image(image, self.mean, self.std), targets

    def __repr__(self) -> str:
        return (
            f"CelebA(root={str(self.requested_root)!r}, split={self.split!r}, "
            f"attributes={len(self.tasks)}, samples={len(self)})"
        )


def read_attributes(path: Path) -> tuple[tuple[str, ...], list[str], NDArray[np.int8]]:
    """Parse ``list_attr_celeba.txt``.

    Returns:
        The attribute names, the image file names, and their values [N, attributes] in {-1, 1}.

    Raises:
        ValueError: the file does not have that format.
    """
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"{path} must start with the image count, then the attribute names.")
    count, names = int(lines[0]), tuple(lines[1].split())
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count or any(len(row) != len(names) + 1 for row in rows):
        raise ValueError(
            f"{path} announces {count} images of {len(names)} attributes but holds {len(rows)} "
            "rows, or a row without one value per attribute."
        )
    values = np.array([row[1:] for row in rows], dtype=np.int8)
    if not np.isin(values, (-1, 1)).all():
        raise ValueError(f"{path}: attribute values must be 1 or -1.")
    return names, [row[0] for row in rows], values


def read_partition(path: Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into ``{file: 0 train | 1 val | 2 test}``."""
    partition = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}: each line must be '<file> <0|1|2>'; got {line!r}.")
        partition[fields[0]] = int(fields[1])
    return partition
