"""NYUv2 (NYU Depth Dataset V2): indoor scenes with semantic labels, depth and surface normals.

Two preprocessed layouts are read, found automatically under the root (``data/nyuv2`` by
default; the layout may also sit one level down, in ``NYUD_MT/``, ``NYUDv2/`` or ``nyuv2/``).

**MTI-Net / ASTMT** (``NYUD_MT``, used by the CSO paper; 795 train / 654 val images of
480x640; tasks ``semseg`` (40 classes), ``depth``, ``normals``, ``edge``)::

    gt_sets/train.txt, gt_sets/val.txt   one image id per line
    images/<id>.jpg                      RGB (ATRC's copy: images/<id>.png)
    segmentation/<id>.png                8-bit class ids: 0 unlabelled, 1..40 the classes
    depth/<id>.npy                       float [H, W] metres, 0 unknown
    normals/<id>.npy                     float [H, W, 3] in [-1, 1] (ATRC: normals/<id>.png,
                                         RGB 0..255 → 2·v/255 - 1), 0 unknown
    edge/<id>.npy                        float [H, W] in {0, 1} (ATRC: edge/<id>.png, 0/255)

**MTAN** (``nyuv2.zip`` of lorenmt/mtan; 795 train / 654 val images of 288x384; tasks
``semseg`` (13 classes), ``depth``, ``normals``)::

    train/image/<i>.npy    float [288, 384, 3] RGB in [0, 1]; i = 0, 1, ... (val/ alike)
    train/label/<i>.npy    float [288, 384] class ids 0..12, -1 unlabelled
    train/depth/<i>.npy    float [288, 384, 1], 0 unknown
    train/normal/<i>.npy   float [288, 384, 3] in [-1, 1], 0 unknown

Targets follow :mod:`taskprio.data._dense`: ``semseg`` int64 [H, W] with 255 for unlabelled
pixels (MTI-Net's 0 → 255, 1..40 → 0..39; MTAN's -1 → 255), ``depth`` float [1, H, W] with 0
unknown, ``normals`` float [3, H, W] unit vectors with 0 unknown, ``edge`` float [1, H, W].
MTI-Net marks unknown depth and normals with 255 in its transforms; here they stay 0.

Where to get it: the official page is "NYU Depth Dataset V2" (Silberman et al., ECCV 2012,
cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html), which has the raw labelled frames only.
The MTI-Net layout is the ``NYUD_MT.tgz`` archive linked from the README of
SimonVandenhende/Multi-Task-Learning-PyTorch (or ATRC's ``NYUDv2`` archive, from the README of
brdav/atrc); the MTAN layout is the ``nyuv2.zip`` linked from the README of lorenmt/mtan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from taskprio.data._dense import (
    DEFAULT_SCALES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DenseDataset,
    DenseSample,
    TargetKind,
    binary_tensor,
    check_split,
    check_tasks,
    depth_tensor,
    find_file,
    image_tensor,
    label_tensor,
    match_sizes,
    missing_data_error,
    normals_tensor,
    read_split_ids,
    resolve_root,
)
from taskprio.data._image_io import read_image, read_rgb

Layout = Literal["auto", "mti-net", "mtan"]

_KINDS: dict[str, TargetKind] = {
    "semseg": "label",
    "depth": "depth",
    "normals": "normals",
    "edge": "binary",
}
_LAYOUT_TASKS = {
    "mti-net": ("semseg", "depth", "normals", "edge"),
    "mtan": ("semseg", "depth", "normals"),
}
_NUM_CLASSES = {"mti-net": 40, "mtan": 13}
_SUBFOLDERS = ("", "NYUD_MT", "NYUDv2", "nyuv2")
# MTI-Net layout: task → (folder, accepted suffixes in order of preference).
_MTI_FILES = {
    "image": ("images", (".jpg", ".png")),
    "semseg": ("segmentation", (".png",)),
    "depth": ("depth", (".npy",)),
    "normals": ("normals", (".npy", ".png")),
    "edge": ("edge", (".npy", ".png")),
}
_MTAN_FOLDERS = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}
_LAYOUT = __doc__ or ""


def _detect(root: Path) -> tuple[Path, Literal["mti-net", "mtan"]] | None:
    for sub in _SUBFOLDERS:
        base = root / sub if sub else root
        if (base / "gt_sets").is_dir():
            return base, "mti-net"
        if (base / "train" / "image").is_dir() or (base / "val" / "image").is_dir():
            return base, "mtan"
    return None


class NYUv2(DenseDataset):
    """NYUv2 for dense multi-task learning, read from the MTI-Net or the MTAN layout.

    Each item is ``(image, targets)``: image [3, H, W] float32 normalized by `mean` and `std`;
    targets maps each task to its tensor (see the module docstring for layouts and
    conventions). Items keep the stored size unless `image_size` is given.

    Args:
        root: the data folder; ``<data_root()>/nyuv2`` (``data/nyuv2``) when None.
        split: ``"train"`` or ``"val"`` (MTI-Net: any ``gt_sets/<split>.txt``).
        tasks: the tasks to load, in order; all of the layout's when None.
        layout: ``"mti-net"``, ``"mtan"``, or ``"auto"`` (default) to detect it.
        augment: random scale-crop (factor drawn from `scales`) and horizontal flip, as MTAN
            trains; off by default (turn it on for the training split only).
        scales: the zoom factors of the scale-crop.
        image_size: (height, width) to resize every sample to; None keeps the stored size.
        mean, std: per-channel normalization of the [0, 1] image (ImageNet's by default).
        generator: the augmentation's random generator. None (default) uses torch's global
            one, which :class:`torch.utils.data.DataLoader` seeds differently in each worker;
            a generator given here is copied into every worker, so keep None with workers.

    Raises:
        FileNotFoundError: no known layout under `root`, or a file of the split is missing;
            the message shows the expected layout.
        ValueError: a bad `split`, `tasks` or option.

    Attributes:
        layout: the layout read, ``"mti-net"`` or ``"mtan"``.
        num_classes: semantic classes: 40 (MTI-Net) or 13 (MTAN).
        ids: the sample ids of the split, in order.
        task_outputs: output channels per task for a model (classes, 1, 3, 1).

    >>> import tempfile, numpy as np
    >>> root = Path(tempfile.mkdtemp())
    >>> for folder, array in [("image", np.zeros((8, 8, 3))), ("label", np.zeros((8, 8))),
    ...                       ("depth", np.ones((8, 8, 1))), ("normal", np.ones((8, 8, 3)))]:
    ...     (root / "val" / folder).mkdir(parents=True)
    ...     np.save(root / "val" / folder / "0.npy", array.astype(np.float32))
    >>> data = NYUv2(root, split="val")
    >>> image, targets = data[0]
    >>> data.layout, tuple(image.shape), {t: tuple(y.shape) for t, y in targets.items()}
    ('mtan', (3, 8, 8), {'semseg': (8, 8), 'depth': (1, 8, 8), 'normals': (3, 8, 8)})
    """

    NAME: ClassVar[str] = "NYUv2"
    COMMAND: ClassVar[str] = "nyuv2"
    DIRNAME: ClassVar[str] = "nyuv2"
    LAYOUT: ClassVar[str] = _LAYOUT

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        layout: Layout = "auto",
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
        if layout not in ("auto", "mti-net", "mtan"):
            raise ValueError(f"`layout` must be 'auto', 'mti-net' or 'mtan'; got {layout!r}.")
        self.requested_root = resolve_root(root, self.DIRNAME)
        detected = _detect(self.requested_root)
        if detected is None:
            found = (
                "the folder does not exist"
                if not self.requested_root.exists()
                else "it holds neither gt_sets/ (MTI-Net) nor train/image/ (MTAN)"
            )
            raise missing_data_error(
                self.NAME, self.COMMAND, self.requested_root, self.LAYOUT, found=found
            )
        self.root, found_layout = detected
        if layout != "auto" and layout != found_layout:
            raise ValueError(
                f"`layout`={layout!r}, but {self.root} holds the {found_layout!r} layout. "
                "Pass layout='auto' or point `root` at the other copy."
            )
        self.layout: Literal["mti-net", "mtan"] = found_layout
        self.split = split
        chosen = check_tasks(tasks, _LAYOUT_TASKS[found_layout], f"the {found_layout} layout")
        self.kinds = {task: _KINDS[task] for task in chosen}
        self.num_classes = _NUM_CLASSES[found_layout]
        self.task_outputs = {
            task: {"semseg": self.num_classes, "depth": 1, "normals": 3, "edge": 1}[task]
            for task in chosen
        }
        if found_layout == "mti-net":
            self.ids, self._files = self._index_mti_net(split)
        else:
            self.ids, self._files = self._index_mtan(split)

    def _missing_file(self, path: Path) -> FileNotFoundError:
        return missing_data_error(
            self.NAME,
            self.COMMAND,
            self.requested_root,
            self.LAYOUT,
            found=f"{path} is missing",
        )

    def _index_mti_net(self, split: str) -> tuple[list[str], list[dict[str, Path]]]:
        sets = self.root / "gt_sets"
        check_split(split, [p.stem for p in sets.glob("*.txt")], str(sets))
        ids = read_split_ids(sets / f"{split}.txt")
        files = []
        for sample_id in ids:
            paths = {}
            for key in ("image", *self.kinds):
                folder, suffixes = _MTI_FILES[key]
                path = find_file(self.root / folder, sample_id, suffixes)
                if path is None:
                    raise self._missing_file(self.root / folder / f"{sample_id}{suffixes[0]}")
                paths[key] = path
            files.append(paths)
        return ids, files

    def _index_mtan(self, split: str) -> tuple[list[str], list[dict[str, Path]]]:
        present = [p.name for p in self.root.iterdir() if (p / "image").is_dir()]
        check_split(split, present, str(self.root))
        images = self.root / split / "image"
        stems = [p.stem for p in images.glob("*.npy")]
        if not all(stem.isdigit() for stem in stems):
            raise ValueError(f"{images} must hold files named <i>.npy (0.npy, 1.npy, ...).")
        ids = sorted(stems, key=int)
        files = []
        for sample_id in ids:
            paths = {}
            for key in ("image", *self.kinds):
                path = self.root / split / _MTAN_FOLDERS[key] / f"{sample_id}.npy"
                if not path.is_file():
                    raise self._missing_file(path)
                paths[key] = path
            files.append(paths)
        return ids, files

    def load(self, index: int) -> DenseSample:
        """Sample `index` at its stored size, image in [0, 1] (before resizing and augmenting)."""
        paths = self._files[index]
        if self.layout == "mtan":
            image = image_tensor(np.load(paths["image"]))
        else:
            image = image_tensor(read_rgb(paths["image"]))
        targets = {task: self._load_target(task, paths[task]) for task in self.kinds}
        return image, match_sizes(image, targets)

    def _load_target(self, task: str, path: Path) -> Tensor:
        stored = np.load(path) if path.suffix == ".npy" else read_image(path)
        if task == "semseg":
            if self.layout == "mtan":
                return label_tensor(stored)  # -1 → 255
            labels = label_tensor(stored) - 1  # 0 (unlabelled) → -1, classes 1..40 → 0..39
            return labels.masked_fill(labels < 0, 255)
        if task == "depth":
            return depth_tensor(stored)
        if task == "normals":
            if path.suffix == ".png":
                stored = 2.0 * np.asarray(stored, dtype=np.float32)[:, :, :3] / 255.0 - 1.0
            return normals_tensor(stored)
        return binary_tensor(stored, scale=255.0 if path.suffix == ".png" else 1.0)

    def __repr__(self) -> str:
        return (
            f"NYUv2(root={str(self.root)!r}, layout={self.layout!r}, split={self.split!r}, "
            f"tasks={list(self.kinds)}, samples={len(self)})"
        )
