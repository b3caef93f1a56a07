"""What the dense-prediction data sets share: target conventions, transforms, missing-data errors.

Every dense data set returns ``(image, targets)``: ``image`` is [3, H, W] float32, normalized
with a per-channel mean and std (ImageNet's by default), and ``targets`` maps each task to a
tensor of one of these kinds:

- ``"label"``: int64 [H, W] class ids, :data:`IGNORE_INDEX` (255) where unlabelled;
- ``"depth"``: float32 [1, H, W], 0 where the depth is unknown;
- ``"normals"``: float32 [3, H, W], unit vectors, (0, 0, 0) where unknown; channel 0 points
  right in the image (it changes sign under a horizontal flip);
- ``"binary"``: float32 [1, H, W] with values in [0, 1] (edges, saliency; 0 or 1 in the
  published data).

Geometric transforms act on the image and all its targets alike: the image is resized
bilinearly, the targets by nearest neighbour, so labels, invalid depths and unit normals stay
what they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.nn import functional
from torch.utils.data import Dataset

from taskprio.data._paths import data_root

TargetKind = Literal["label", "depth", "normals", "binary"]
DenseSample = tuple[Tensor, dict[str, Tensor]]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MTAN's random scale-crop factors (lorenmt/mtan, also CAGrad and Nash-MTL).
DEFAULT_SCALES = (1.0, 1.2, 1.5)
# A stored normal shorter than this is "unknown": 0 in .npy files, mid-grey (norm ≈ 0.007) in
# PNG files. Valid normals stored in 8 bits have norms within 1 ± 0.02.
MIN_NORMAL_NORM = 0.5


def resolve_root(root: str | Path | None, dirname: str) -> Path:
    """``root`` as a Path, or ``<data_root()>/<dirname>`` when it is None."""
    return data_root() / dirname if root is None else Path(root).expanduser()


def missing_data_error(
    name: str, command: str, root: Path, layout: str, *, found: str = ""
) -> FileNotFoundError:
    """The error for a data set that is not on disk: where it was looked for, the layout.

    Args:
        name: the data set's display name (``"NYUv2"``).
        command: its ``taskprio data`` subcommand (``"nyuv2"``).
        root: the folder that was searched.
        layout: the expected layout and where to get the data (the class's ``LAYOUT``).
        found: what was wrong, when the folder exists (``"no gt_sets/ or train/image/"``).
    """
    detail = f"\n{found[:1].upper()}{found[1:]}." if found else ""
    return FileNotFoundError(
        f"{name} not found at {root}. Put it there or set data.root; "
        f"`taskprio data {command}` shows how.{detail}\n\n{layout.strip()}"
    )


def check_split(split: str, available: Sequence[str], where: str) -> None:
    """Raise ValueError naming the splits in `available` when `split` is not one of them."""
    if split not in available:
        raise ValueError(
            f"`split` must be one of {sorted(available)} (found in {where}); got {split!r}."
        )


def check_tasks(
    tasks: Sequence[str] | None, available: Sequence[str], name: str
) -> tuple[str, ...]:
    """The requested tasks (all of `available` when None), each known, in the given order."""
    if tasks is None:
        return tuple(available)
    if isinstance(tasks, str):
        raise ValueError(f"`tasks` must be a sequence of task names, not the string {tasks!r}.")
    chosen = tuple(tasks)
    unknown = [task for task in chosen if task not in available]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"`tasks` must name distinct tasks among {list(available)} for {name}; got "
            f"{list(chosen)}."
        )
    return chosen


def read_split_ids(path: Path) -> list[str]:
    """The sample ids of a split file: one per line, blank lines skipped."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def find_file(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    """``folder/<stem><suffix>`` for the first suffix that exists, else None."""
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


# -- conversions from stored arrays ------------------------------------------------------------


def image_tensor(pixels: NDArray[np.generic]) -> Tensor:
    """[H, W, 3] uint8 (0..255) or float (0..1) pixels → [3, H, W] float32 in [0, 1]."""
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image must be [H, W, 3]; got shape {array.shape}.")
    # A writable copy: the arrays Pillow gives are read-only, which torch.from_numpy warns of.
    values = torch.from_numpy(np.array(array, order="C")).permute(2, 0, 1)
    if array.dtype == np.uint8:
        return values.float() / 255.0
    return values.float()


def label_tensor(labels: NDArray[np.generic]) -> Tensor:
    """[H, W] class ids (any numeric dtype) → int64 [H, W]; negative ids become the ignore index."""
    values = torch.from_numpy(np.rint(np.asarray(labels, dtype=np.float64))).long()
    return values.masked_fill(values < 0, IGNORE_INDEX)


def depth_tensor(depth: NDArray[np.generic]) -> Tensor:
    """[H, W] or [H, W, 1] depths → float32 [1, H, W]; non-finite values become 0 (unknown)."""
    array = np.asarray(depth, dtype=np.float32)
    if array.ndim == 3:
        array = array[:, :, 0]
    values = torch.from_numpy(np.ascontiguousarray(array))[None]
    return torch.where(torch.isfinite(values), values, torch.zeros_like(values))


def normals_tensor(normals: NDArray[np.generic]) -> Tensor:
    """[H, W, 3] normals in [-1, 1] → float32 [3, H, W] unit vectors, 0 where unknown."""
    array = np.asarray(normals, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"normals must be [H, W, 3]; got shape {array.shape}.")
    return unit_normals(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))


def unit_normals(normals: Tensor) -> Tensor:
    """Scale each [3] vector of [3, H, W] to unit length; vectors shorter than 0.5 become 0."""
    finite = torch.nan_to_num(normals, nan=0.0, posinf=0.0, neginf=0.0)
    norm = finite.norm(dim=0, keepdim=True)
    is_valid = norm >= MIN_NORMAL_NORM
    return torch.where(is_valid, finite / norm.clamp_min(MIN_NORMAL_NORM), torch.zeros_like(finite))


def binary_tensor(values: NDArray[np.generic], *, scale: float = 1.0) -> Tensor:
    """[H, W] values → float32 [1, H, W], divided by `scale` (255 for 8-bit PNG maps)."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 3:
        array = array[:, :, 0]
    return torch.from_numpy(np.ascontiguousarray(array))[None] / scale


# -- transforms --------------------------------------------------------------------------------


def _as_batch(target: Tensor) -> Tensor:
    """Any target as a float [1, C, H, W] batch (labels are exact in float32: ids < 2^24)."""
    values = target.float()
    return values[None, None] if values.ndim == 2 else values[None]


def _from_batch(values: Tensor, like: Tensor) -> Tensor:
    out = values[0, 0] if like.ndim == 2 else values[0]
    return out.round().to(like.dtype) if not like.is_floating_point() else out.to(like.dtype)


def resize_sample(
    image: Tensor,
    targets: Mapping[str, Tensor],
    size: tuple[int, int],
) -> DenseSample:
    """Resize the [3, H, W] image bilinearly and every target by nearest neighbour to `size`.

    Targets that already have the size are left as they are.
    """
    resized_image = image
    if tuple(image.shape[-2:]) != size:
        resized_image = functional.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0.0, 1.0)
    resized = {}
    for task, target in targets.items():
        if tuple(target.shape[-2:]) == size:
            resized[task] = target
        else:
            batch = functional.interpolate(_as_batch(target), size=size, mode="nearest")
            resized[task] = _from_batch(batch, target)
    return resized_image, resized


def match_sizes(image: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """Resize (nearest) the targets stored at another size than the image, as MTI-Net does."""
    size = (int(image.shape[-2]), int(image.shape[-1]))
    if all(tuple(t.shape[-2:]) == size for t in targets.values()):
        return targets
    return resize_sample(image, targets, size)[1]


def hflip_sample(
    image: Tensor, targets: Mapping[str, Tensor], kinds: Mapping[str, TargetKind]
) -> DenseSample:
    """Mirror the image and its targets left-right; normals' x component changes sign."""
    flipped = {}
    for task, target in targets.items():
        mirrored = target.flip(-1)
        if kinds[task] == "normals":
            mirrored = torch.cat([-mirrored[:1], mirrored[1:]])
        flipped[task] = mirrored
    return image.flip(-1), flipped


def scale_crop_sample(
    image: Tensor,
    targets: Mapping[str, Tensor],
    kinds: Mapping[str, TargetKind],
    scale: float,
    top: int,
    left: int,
) -> DenseSample:
    """Zoom in by `scale`: crop an (H/scale, W/scale) window at (top, left), resize it back.

    As in MTAN's ``RandomScaleCrop``: the image is resized bilinearly, targets by nearest
    neighbour, and depth is divided by `scale` (the scene looks `scale` times closer).
    """
    height, width = image.shape[-2:]
    crop_h, crop_w = int(height / scale), int(width / scale)
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    cropped_image = image[:, window[0], window[1]]
    cropped = {task: target[..., window[0], window[1]] for task, target in targets.items()}
    zoomed_image, zoomed = resize_sample(cropped_image, cropped, (height, width))
    for task, kind in kinds.items():
        if kind == "depth" and task in zoomed:
            zoomed[task] = zoomed[task] / scale
    return zoomed_image, zoomed


def random_augment(
    image: Tensor,
    targets: Mapping[str, Tensor],
    kinds: Mapping[str, TargetKind],
    *,
    scales: Sequence[float],
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> DenseSample:
    """MTAN-style training augmentation: a random scale-crop, then a random horizontal flip.

    The scale is drawn uniformly from `scales` (1.0 keeps the sample), the crop window
    uniformly among those that fit, and the flip with probability 1/2. Draws use `generator`,
    or torch's global generator when None (which DataLoader seeds per worker).
    """
    out_image, out_targets = image, dict(targets)
    if scales:
        scale = float(scales[int(torch.randint(len(scales), (1,), generator=generator))])
        if scale != 1.0:
            height, width = image.shape[-2:]
            crop_h, crop_w = int(height / scale), int(width / scale)
            top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
            out_image, out_targets = scale_crop_sample(
                out_image, out_targets, kinds, scale, top, left
            )
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        out_image, out_targets = hflip_sample(out_image, out_targets, kinds)
    return out_image, out_targets


def normalize_image(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(image - mean) / std per channel of a [3, H, W] image."""
    mean_t = image.new_tensor(mean).view(-1, 1, 1)
    std_t = image.new_tensor(std).view(-1, 1, 1)
    return (image - mean_t) / std_t


def check_image_options(
    image_size: tuple[int, int] | None,
    scales: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[tuple[int, int] | None, tuple[float, ...]]:
    """Validate the options every dense data set takes; returns the size and scales as tuples."""
    size = None
    if image_size is not None:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(
                f"`image_size` must be (height, width), both positive; got {image_size}."
            )
    scale_values = tuple(float(s) for s in scales)
    if any(not math.isfinite(s) or s < 1.0 for s in scale_values):
        raise ValueError(f"`scales` must be zoom factors >= 1; got {list(scales)}.")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"`mean` and `std` must hold 3 values, std positive; got {mean}, {std}.")
    return (size[0], size[1]) if size is not None else None, scale_values


class DenseDataset(Dataset[DenseSample]):
    """Base of the dense data sets: resize, augment and normalize what a subclass loads.

    A subclass sets :attr:`ids` and :attr:`kinds` (task → :data:`TargetKind`) and implements
    :meth:`load` (the raw sample, image in [0, 1]); it may override :meth:`finish_targets`.
    """

    ids: list[str]
    kinds: dict[str, TargetKind]

    def __init__(
        self,
        *,
        augment: bool,
        scales: Sequence[float],
        image_size: tuple[int, int] | None,
        mean: Sequence[float],
        std: Sequence[float],
        generator: torch.Generator | None,
    ) -> None:
        self.image_size, self.scales = check_image_options(image_size, scales, mean, std)
        self.augment = augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.generator = generator

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks of each sample's target mapping, in order."""
        return tuple(self.kinds)

    def load(self, index: int) -> DenseSample:
        """Sample `index` as stored: image [3, H, W] in [0, 1], targets by the conventions."""
        raise NotImplementedError

    def finish_targets(self, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """A last per-sample rule applied after the transforms (none by default)."""
        return targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> DenseSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples.")
        image, targets = self.load(index % len(self))
        if self.image_size is not None:
            image, targets = resize_sample(image, targets, self.image_size)
        if self.augment:
            image, targets = random_augment(
                image, targets, self.kinds, scales=self.scales, generator=self.generator
            )
        return normalize_image(image, self.mean, self.std), self.finish_targets(targets)
