"""Cityscapes at 128x256 as MTAN preprocessed it: semantic segmentation and depth.

The layout of MTAN's ``cityscapes2.zip`` (lorenmt/mtan; the data of CAGrad, Nash-MTL and the
CSO paper's Cityscapes table), under the root (``data/cityscapes`` by default, or one level
down in ``cityscapes/`` or ``cityscapes2/``); 2,975 train / 500 val images::

    train/image/<i>.npy      float [128, 256, 3] RGB in [0, 1]; i = 0, 1, ... (val/ alike)
    train/label_7/<i>.npy    float [128, 256] class ids 0..6, -1 unlabelled
    train/label_2/<i>.npy    (2 classes) and train/label_19/<i>.npy (19 classes), if present
    train/depth/<i>.npy      float [128, 256, 1] (inverse) depth, 0 unknown

Tasks and targets (conventions of :mod:`taskprio.data._dense`): ``semseg`` int64 [H, W] with
-1 → 255 (ignored), 7 classes by default (``num_classes`` picks ``label_<n>``); ``depth`` float
[1, H, W] with 0 unknown. MTAN's "depth" is an inverse depth (disparity); the scale-crop
augmentation divides it by the zoom factor as MTAN, CAGrad and Nash-MTL do, although a
disparity would scale the other way.

Where to get it: ``cityscapes2.zip`` (128x256, 651 MB) is linked from the README of
lorenmt/mtan. The original data are on the official "Cityscapes Dataset" page
(cityscapes-dataset.com, registration required).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from taskprio.data._dense import (
    DEFAULT_SCALES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DenseDataset,
    DenseSample,
    TargetKind,
    check_split,
    check_tasks,
    depth_tensor,
    image_tensor,
    label_tensor,
    match_sizes,
    missing_data_error,
    resolve_root,
)

_LAYOUT = __doc__ or ""
_KINDS: dict[str, TargetKind] = {"semseg": "label", "depth": "depth"}
_SUBFOLDERS = ("", "cityscapes", "cityscapes2")
NUM_CLASSES_CHOICES = (2, 7, 19)


def _detect(root: Path) -> Path | None:
    for sub in _SUBFOLDERS:
        base = root / sub if sub else root
        if (base / "train" / "image").is_dir() or (base / "val" / "image").is_dir():
            return base
    return None


class Cityscapes(DenseDataset):
    """MTAN's 128x256 Cityscapes: semantic segmentation (7 classes by default) and depth.

    Each item is ``(image, targets)``: image [3, 128, 256] float32 normalized by `mean` and
    `std`; targets ``{"semseg": int64 [128, 256], "depth": float [1, 128, 256]}`` (layout and
    conventions in the module docstring).

    Args:
        root: the data folder; ``<data_root()>/cityscapes`` when None.
        split: ``"train"`` or ``"val"`` (MTAN and its successors report val as the test set).
        tasks: the tasks to load, in order; both when None.
        num_classes: 7 (default, CAGrad / Nash-MTL), 19, or 2: reads ``label_<num_classes>``.
        augment: MTAN's random scale-crop (factor from `scales`) and horizontal flip; off by
            default.
        scales: the zoom factors of the scale-crop.
        image_size: (height, width) to resize to; None keeps 128x256.
        mean, std: per-channel normalization of the [0, 1] image (ImageNet's by default; pass
            (0, 0, 0) and (1, 1, 1) for MTAN's raw [0, 1] input).
        generator: the augmentation's random generator; None (default) uses torch's global
            one, seeded per DataLoader worker (a generator given here is copied into each).

    Raises:
        FileNotFoundError: no ``train/image`` or ``val/image`` under `root`, or a file of the
            split is missing; the message shows the expected layout.
        ValueError: a bad `split`, `tasks`, `num_classes` or option.

    >>> import tempfile, numpy as np
    >>> root = Path(tempfile.mkdtemp())
    >>> for folder, array in [("image", np.zeros((4, 8, 3))), ("label_7", -np.ones((4, 8))),
    ...                       ("depth", np.zeros((4, 8, 1)))]:
    ...     (root / "val" / folder).mkdir(parents=True)
    ...     np.save(root / "val" / folder / "0.npy", array.astype(np.float32))
    >>> image, targets = Cityscapes(root, split="val")[0]
    >>> tuple(image.shape), targets["semseg"].unique().tolist(), tuple(targets["depth"].shape)
    ((3, 4, 8), [255], (1, 4, 8))
    """

    NAME: ClassVar[str] = "Cityscapes"
    COMMAND: ClassVar[str] = "cityscapes"
    DIRNAME: ClassVar[str] = "cityscapes"
    LAYOUT: ClassVar[str] = _LAYOUT

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        num_classes: int = 7,
        augment: bool = False,
        scales: Sequence[float] = DEFAULT_SCALES,
        image_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            augment=augment,
            scales=scales,
            image_size=image_size,
            mean=mean,
            std=std,
            generator=generator,
        )
        if num_classes not in NUM_CLASSES_CHOICES:
            raise ValueError(
                f"`num_classes` must be one of {NUM_CLASSES_CHOICES} (MTAN's label_2, label_7, "
                f"label_19); got {num_classes!r}."
            )
        self.requested_root = resolve_root(root, self.DIRNAME)
        base = _detect(self.requested_root)
        if base is None:
            found = (
                "the folder does not exist"
                if not self.requested_root.exists()
                else "it holds no train/image/ or val/image/"
            )
            raise missing_data_error(
                self.NAME, self.COMMAND, self.requested_root, self.LAYOUT, found=found
            )
        self.root = base
        check_split(split, [p.name for p in base.iterdir() if (p / "image").is_dir()], str(base))
        self.split = split
        self.num_classes = num_classes
        chosen = check_tasks(tasks, tuple(_KINDS), self.NAME)
        self.kinds = {task: _KINDS[task] for task in chosen}
        self.task_outputs = {task: num_classes if task == "semseg" else 1 for task in chosen}
        folders = {"image": "image", "semseg": f"label_{num_classes}", "depth": "depth"}
        images = base / split / "image"
        stems = [p.stem for p in images.glob("*.npy")]
        if not all(stem.isdigit() for stem in stems):
            raise ValueError(f"{images} must hold files named <i>.npy (0.npy, 1.npy, ...).")
        self.ids = sorted(stems, key=int)
        self._files = []
        for sample_id in self.ids:
            paths = {}
            for key in ("image", *self.kinds):
                path = base / split / folders[key] / f"{sample_id}.npy"
                if not path.is_file():
                    raise missing_data_error(
                        self.NAME,
                        self.COMMAND,
                        self.requested_root,
                        self.LAYOUT,
                        found=f"{path} is missing",
                    )
                paths[key] = path
            self._files.append(paths)

    def load(self, index: int) -> DenseSample:
        """Sample `index` as stored, image in [0, 1] (before resizing and augmenting)."""
        paths = self._files[index]
        image = image_tensor(np.load(paths["image"]))
        targets = {}
        for task in self.kinds:
            stored = np.load(paths[task])
            targets[task] = label_tensor(stored) if task == "semseg" else depth_tensor(stored)
        return image, match_sizes(image, targets)

    def __repr__(self) -> str:
        return (
            f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, "
            f"num_classes={self.num_classes}, tasks={list(self.kinds)}, samples={len(self)})"
        )
