"""PASCAL-Context as MTI-Net / ASTMT prepared it: five dense tasks on PASCAL VOC 2010 images.

The layout of ``PASCAL_MT.tgz`` (also ATRC's ``PASCALContext``), under the root
(``data/pascal_context`` by default, or one level down in ``PASCAL_MT/`` or
``PASCALContext/``); 4,998 train / 5,105 val images of about 500x375::

    ImageSets/Context/train.txt, val.txt    one image id per line (2008_000002, ...)
    JPEGImages/<id>.jpg                     RGB
    semseg/VOC12/<id>.png                   class ids 0..20 (0 background), 255 ignored;
      or semseg/pascal-context/<id>.png     (VOC12 is read first, as MTI-Net does)
    human_parts/<id>.mat                    PASCAL-Part annotation: struct ``anno`` with
                                            ``objects(k).class_ind`` (15 = person),
                                            ``.mask``, ``.parts(j).part_name``, ``.parts(j).mask``
    sal_distill/<id>.png                    saliency 0..255, thresholded at 128 (> 0.5)
    normals_distill/<id>.png                normals as RGB 0..255 → 2·v/255 - 1
    pascal-context/trainval/<id>.mat        ``LabelMap``: PASCAL-Context's 459-class labels

Tasks and targets (conventions of :mod:`taskprio.data._dense`):

- ``semseg``: int64 [H, W], 21 classes, 255 ignored.
- ``human_parts``: int64 [H, W], 7 classes: background and MTI-Net's six parts (head, torso,
  upper arms, lower arms and hands, upper legs, lower legs and feet), from every person
  (``class_ind`` 15) that has parts. A sample whose target is all background after the
  transforms (no person with parts in view) is all 255, as MTI-Net's ``AddIgnoreRegions``.
- ``sal``: float [1, H, W] in {0, 1}.
- ``normals``: float [3, H, W] unit vectors, kept only on the 170 PASCAL-Context classes that
  NYUv2 also has (the distilled normals come from a model trained on NYUv2), 0 elsewhere.
- ``edge``: float [1, H, W] in {0, 1}: where the 4-neighbour Laplacian of ``LabelMap`` is not
  0 (reflected borders), thinned to one pixel as ``skimage.morphology.thin`` does, as MTI-Net.

Every sample is resized to `image_size` (512x512 by default, as MTI-Net): the image
bilinearly, the targets by nearest neighbour.

Where to get it: ``PASCAL_MT.tgz`` is linked from the READMEs of facebookresearch/astmt and
SimonVandenhende/Multi-Task-Learning-PyTorch (ATRC's copy from brdav/atrc). Its sources are
the official pages "The PASCAL Visual Object Classes Challenge 2010" (VOC2010 images),
"PASCAL-Context Dataset" (Mottaghi et al., CVPR 2014) and "PASCAL-Part Dataset" (Chen et al.,
CVPR 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from taskprio.data._dense import (
    DEFAULT_SCALES,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DenseDataset,
    DenseSample,
    TargetKind,
    binary_tensor,
    check_split,
    check_tasks,
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

_LAYOUT = __doc__ or ""
_KINDS: dict[str, TargetKind] = {
    "semseg": "label",
    "human_parts": "label",
    "sal": "binary",
    "normals": "normals",
    "edge": "binary",
}
_OUTPUTS = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3, "edge": 1}
_SUBFOLDERS = ("", "PASCAL_MT", "PASCALContext")
PERSON_CLASS = 15
# MTI-Net's 6-part grouping of PASCAL-Part's person parts (HUMAN_PART[6] in its loader).
HUMAN_PART_IDS = {
    "hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "mouth": 1, "nose": 1, "rear": 1,
    "rebrow": 1, "reye": 1, "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3, "lhand": 4,
    "llarm": 4, "rhand": 4, "rlarm": 4, "luleg": 5, "ruleg": 5, "lfoot": 6, "llleg": 6,
    "rfoot": 6, "rlleg": 6,
}  # fmt: skip
# PASCAL-Context label ids (1..459) whose class name is also an NYUv2 class name, except
# "unknown", plus "tvmonitor" (427): MTI-Net's normals_valid_classes, computed from its
# data/db_info/context_classes.json and nyu_classes.json.
NORMALS_VALID_CLASSES = (
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49,
    50, 51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101,
    104, 105, 107, 111, 113, 115, 122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159,
    165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202, 213, 215, 216, 219, 220, 223,
    225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269,
    272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309,
    310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368,
    370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417,
    419, 421, 423, 427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454, 457,
)  # fmt: skip


def _detect(root: Path) -> Path | None:
    for sub in _SUBFOLDERS:
        base = root / sub if sub else root
        if (base / "ImageSets" / "Context").is_dir() and (base / "JPEGImages").is_dir():
            return base
    return None


class PASCALContext(DenseDataset):
    """PASCAL-Context with MTI-Net's five tasks, read from the ``PASCAL_MT`` layout.

    Each item is ``(image, targets)``: image [3, H, W] float32 normalized by `mean` and `std`;
    targets maps each task to its tensor (layout and conventions in the module docstring).

    Args:
        root: the data folder; ``<data_root()>/pascal_context`` when None.
        split: ``"train"`` or ``"val"`` (any ``ImageSets/Context/<split>.txt``).
        tasks: the tasks to load, in order; all five (``semseg``, ``human_parts``, ``sal``,
            ``normals``, ``edge``) when None.
        augment: random scale-crop (factor from `scales`) and horizontal flip after the
            resize; off by default. (MTI-Net also rotates by up to 20°; not done here.)
        scales: the zoom factors of the scale-crop.
        image_size: (height, width) of every sample, (512, 512) by default as MTI-Net; None
            keeps each image's size (then batches need equal sizes).
        mean, std: per-channel normalization of the [0, 1] image (ImageNet's by default).
        generator: the augmentation's random generator; None (default) uses torch's global
            one, seeded per DataLoader worker (a generator given here is copied into each).

    Raises:
        FileNotFoundError: no ``ImageSets/Context`` and ``JPEGImages`` under `root`, or a file
            of the split is missing; the message shows the expected layout.
        ValueError: a bad `split`, `tasks` or option.

    Attributes:
        ids: the image ids of the split, in order.
        task_outputs: output channels per task for a model.

    >>> import tempfile
    >>> PASCALContext(tempfile.mkdtemp() + "/absent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: PASCAL-Context not found at .../absent. Put it there or set data.root; ...
    """

    NAME: ClassVar[str] = "PASCAL-Context"
    COMMAND: ClassVar[str] = "pascal_context"
    DIRNAME: ClassVar[str] = "pascal_context"
    LAYOUT: ClassVar[str] = _LAYOUT

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        augment: bool = False,
        scales: Sequence[float] = DEFAULT_SCALES,
        image_size: tuple[int, int] | None = (512, 512),
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
        self.requested_root = resolve_root(root, self.DIRNAME)
        base = _detect(self.requested_root)
        if base is None:
            found = (
                "the folder does not exist"
                if not self.requested_root.exists()
                else "it holds no ImageSets/Context/ and JPEGImages/"
            )
            raise missing_data_error(
                self.NAME, self.COMMAND, self.requested_root, self.LAYOUT, found=found
            )
        self.root = base
        sets = base / "ImageSets" / "Context"
        check_split(split, [p.stem for p in sets.glob("*.txt")], str(sets))
        self.split = split
        chosen = check_tasks(tasks, tuple(_KINDS), self.NAME)
        self.kinds = {task: _KINDS[task] for task in chosen}
        self.task_outputs = {task: _OUTPUTS[task] for task in chosen}
        self.ids = read_split_ids(sets / f"{split}.txt")
        self._files = [self._paths(sample_id) for sample_id in self.ids]

    def _paths(self, sample_id: str) -> dict[str, Path]:
        wanted: dict[str, tuple[Path, ...]] = {"image": (self.root / "JPEGImages",)}
        if "semseg" in self.kinds:
            wanted["semseg"] = (
                self.root / "semseg" / "VOC12",
                self.root / "semseg" / "pascal-context",
            )
        if "human_parts" in self.kinds:
            wanted["human_parts"] = (self.root / "human_parts",)
        if "sal" in self.kinds:
            wanted["sal"] = (self.root / "sal_distill",)
        if "normals" in self.kinds:
            wanted["normals"] = (self.root / "normals_distill",)
        if "normals" in self.kinds or "edge" in self.kinds:
            wanted["context"] = (self.root / "pascal-context" / "trainval",)
        suffix = {"image": ".jpg", "human_parts": ".mat", "context": ".mat"}
        paths = {}
        for key, folders in wanted.items():
            found = None
            for folder in folders:
                found = find_file(folder, sample_id, (suffix.get(key, ".png"),))
                if found is not None:
                    break
            if found is None:
                missing = folders[-1] / f"{sample_id}{suffix.get(key, '.png')}"
                raise missing_data_error(
                    self.NAME,
                    self.COMMAND,
                    self.requested_root,
                    self.LAYOUT,
                    found=f"{missing} is missing",
                )
            paths[key] = found
        return paths

    def load(self, index: int) -> DenseSample:
        """Sample `index` at its stored size, image in [0, 1] (before resizing and augmenting)."""
        paths = self._files[index]
        image = image_tensor(read_rgb(paths["image"]))
        height, width = image.shape[-2:]
        label_map = None
        if "context" in paths:
            label_map = np.asarray(load_mat(paths["context"])["LabelMap"])
        targets: dict[str, Tensor] = {}
        for task in self.kinds:
            if task == "semseg":
                targets[task] = label_tensor(read_image(paths["semseg"]))
            elif task == "human_parts":
                parts = human_parts_target(load_mat(paths["human_parts"]), (height, width))
                targets[task] = torch.from_numpy(parts)
            elif task == "sal":
                saliency = np.asarray(read_image(paths["sal"]), dtype=np.float32) / 255.0
                targets[task] = binary_tensor(saliency > 0.5)
            elif task == "normals":
                assert label_map is not None
                targets[task] = distilled_normals(read_image(paths["normals"]), label_map)
            else:
                assert label_map is not None
                targets[task] = binary_tensor(label_edges(label_map))
        return image, match_sizes(image, targets)

    def finish_targets(self, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """A human-parts target with no part in view is ignored everywhere (MTI-Net's rule)."""
        parts = targets.get("human_parts")
        if parts is not None and bool((parts == 0).all()):
            targets = {**targets, "human_parts": torch.full_like(parts, IGNORE_INDEX)}
        return targets

    def __repr__(self) -> str:
        return (
            f"PASCALContext(root={str(self.root)!r}, split={self.split!r}, "
            f"tasks={list(self.kinds)}, samples={len(self)})"
        )


# -- targets -----------------------------------------------------------------------------------


def load_mat(path: Path) -> dict[str, Any]:
    """Read a MATLAB (v5) file with scipy, which the PASCAL-Context tasks need."""
    try:
        from scipy.io import loadmat  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(
            "Reading PASCAL-Context's .mat files (human_parts, normals, edge) needs scipy: "
            "`pip install scipy`."
        ) from error
    mat: dict[str, Any] = loadmat(path)
    return mat


def _field(record: Any, name: str) -> Any:
    """Field `name` of a MATLAB struct as scipy.io.loadmat returns it (a record or a 1x1 array)."""
    value = record[name]
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    return value


def _records(array: Any) -> list[Any]:
    """The elements of a MATLAB struct array (empty for ``[]``)."""
    values = np.asarray(array)
    if values.size == 0 or values.dtype.names is None:
        return []
    return list(values.ravel())


def human_parts_target(mat: dict[str, Any], size: tuple[int, int]) -> NDArray[np.int64]:
    """The [H, W] part map of a PASCAL-Part annotation: 0 background, 1..6 MTI-Net's parts.

    Args:
        mat: ``scipy.io.loadmat`` of ``human_parts/<id>.mat``.
        size: (H, W) of the image, for annotations without any person part.

    Returns:
        int64 [H, W]; all 0 when no person has parts (the caller turns that into ignore).
    """
    anno = np.asarray(mat["anno"]).ravel()[0]
    target: NDArray[np.int64] | None = None
    for obj in _records(_field(anno, "objects")):
        class_id = int(np.asarray(_field(obj, "class_ind")).ravel()[0])
        parts = _records(_field(obj, "parts"))
        if class_id != PERSON_CLASS or not parts:
            continue
        if target is None:
            target = np.zeros(np.asarray(_field(obj, "mask")).shape, dtype=np.int64)
        for part in parts:
            name = str(np.asarray(_field(part, "part_name")).ravel()[0])
            if name not in HUMAN_PART_IDS:
                raise ValueError(f"unknown PASCAL-Part person part {name!r}.")
            target[np.asarray(_field(part, "mask")).astype(bool)] = HUMAN_PART_IDS[name]
    return np.zeros(size, dtype=np.int64) if target is None else target


def distilled_normals(stored: NDArray[Any], label_map: NDArray[Any]) -> Tensor:
    """Normals from ``normals_distill/<id>.png``, kept on :data:`NORMALS_VALID_CLASSES` only.

    Returns:
        float32 [3, H, W] unit vectors, 0 outside the valid classes.
    """
    normals = 2.0 * np.asarray(stored, dtype=np.float32)[:, :, :3] / 255.0 - 1.0
    is_valid = np.isin(label_map, NORMALS_VALID_CLASSES)
    if is_valid.shape != normals.shape[:2]:
        raise ValueError(
            f"LabelMap {is_valid.shape} and normals {normals.shape[:2]} differ in size."
        )
    return normals_tensor(np.where(is_valid[:, :, None], normals, 0.0))


def label_edges(label_map: NDArray[Any]) -> NDArray[np.bool_]:
    """MTI-Net's edge target: ``thin(|Laplacian(label_map)| > 0)``.

    The Laplacian is OpenCV's ``cv2.Laplacian(x, cv2.CV_64F)`` (kernel [[0, 1, 0], [1, -4, 1],
    [0, 1, 0]], borders reflected without repeating the edge pixel); :func:`thin` follows
    ``skimage.morphology.thin``.

    >>> labels = np.zeros((5, 6), dtype=np.uint16)
    >>> labels[:, 3:] = 7
    >>> label_edges(labels).astype(int)
    array([[0, 0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0, 0],
           [0, 0, 1, 0, 0, 0],
           [0, 0, 1, 0, 0, 0],
           [0, 0, 1, 0, 0, 0]])
    """
    values = np.asarray(label_map, dtype=np.float64)
    padded = np.pad(values, 1, mode="reflect")
    laplacian = (
        padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * values
    )
    return thin(laplacian != 0)


def _thin_luts() -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Deletion tables of the two subiterations of Lam, Lee & Suen's thinning (1992).

    Index n codes the 8 neighbours as bits 0..7 = E, NE, N, NW, W, SW, S, SE (x1..x8 of the
    paper); conditions G1 (one 8-connected component), G2 (2 or 3 neighbours), and G3 / G3'.
    """
    first, second = np.zeros(256, dtype=bool), np.zeros(256, dtype=bool)
    for n in range(256):
        x = [bool(n >> i & 1) for i in range(8)]
        crossings = sum(1 for i in (0, 2, 4, 6) if not x[i] and (x[i + 1] or x[(i + 2) % 8]))
        n1 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[k - 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[(k + 1) % 8])
        g12 = crossings == 1 and min(n1, n2) in (2, 3)
        first[n] = g12 and not ((x[1] or x[2] or not x[7]) and x[0])
        second[n] = g12 and not ((x[5] or x[6] or not x[3]) and x[4])
    return first, second


_THIN_LUTS = _thin_luts()
# Bit of each neighbour in a pixel's code: E 1, NE 2, N 4, NW 8, W 16, SW 32, S 64, SE 128.
_NEIGHBOUR_BITS = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]], dtype=np.uint8)


def _neighbour_codes(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Each pixel's 8-neighbourhood of a 0/1 mask as one byte (outside the mask counts as 0)."""
    height, width = mask.shape
    padded = np.pad(mask, 1)
    codes = np.zeros((height, width), dtype=np.uint8)
    for dy in range(3):
        for dx in range(3):
            codes |= padded[dy : dy + height, dx : dx + width] * _NEIGHBOUR_BITS[dy, dx]
    return codes


def thin(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Thin a binary mask to one-pixel lines, as ``skimage.morphology.thin`` (no iteration cap).

    The example of skimage's documentation gives the same result:

    >>> square = np.zeros((7, 7), dtype=np.uint8)
    >>> square[1:-1, 2:-2] = 1
    >>> square[0, 1] = 1
    >>> thin(square).astype(np.uint8)
    array([[0, 1, 0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0, 0, 0],
           [0, 0, 0, 1, 0, 0, 0],
           [0, 0, 0, 1, 0, 0, 0],
           [0, 0, 0, 1, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0]], dtype=uint8)
    """
    skeleton = np.asarray(mask, dtype=bool).astype(np.uint8)
    count_before, count = -1, int(skeleton.sum())
    while count != count_before:
        count_before = count
        for lut in _THIN_LUTS:
            codes = _neighbour_codes(skeleton)
            skeleton[lut[codes]] = 0
        count = int(skeleton.sum())
    return skeleton.astype(bool)
