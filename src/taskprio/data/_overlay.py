"""Two small images side by side on one canvas: the construction shared by the MultiMNIST family.

MultiMNIST, MultiFashion and Fashion+MNIST (Sener & Koltun, 2018; Lin et al., 2019) all put one
28x28 item at the top-left and another at the bottom-right of a 36x36 canvas, take the max where
they overlap, and resize the canvas to 28x28. The functions here do each step on whole arrays;
:mod:`taskprio.data._multi_mnist` documents the construction in full.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray

DIGIT_SIZE = 28
CANVAS_SIZE = 36
# Each item moves up to 2 pixels from its corner towards the centre (6 pixels apart on average).
MAX_SHIFT = 2
IMAGE_SIZE = 28
# Canvases are resized in chunks to bound the float32 canvas memory (~52 MB per chunk).
_RESIZE_CHUNK = 10_000


def draw_pool_positions(
    pool_size: int, num_draws: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Draw ``num_draws`` positions in a pool so that every position is used equally often.

    The draws run through ``ceil(num_draws / pool_size)`` fresh permutations of the pool,
    truncated to ``num_draws``: each position comes up ``floor`` or ``ceil`` of
    ``num_draws / pool_size`` times.

    Args:
        pool_size: P >= 1.
        num_draws: N >= 0.
        rng: the Generator that draws the permutations.

    Returns:
        [N] int64 positions in ``0..P-1``.

    >>> sorted(np.bincount(draw_pool_positions(3, 7, np.random.default_rng(0))).tolist())
    [2, 2, 3]
    """
    if pool_size < 1:
        raise ValueError(f"`pool_size` must be positive, but got {pool_size}.")
    if num_draws < 0:
        raise ValueError(f"`num_draws` must be non-negative, but got {num_draws}.")
    num_rounds = math.ceil(num_draws / pool_size)
    return np.concatenate(
        [rng.permutation(pool_size) for _ in range(num_rounds)] or [np.zeros(0, dtype=np.int64)]
    )[:num_draws].astype(np.int64)


def draw_pairs(
    pool: NDArray[np.int64], num_pairs: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Draw (left, right) source digits for ``num_pairs`` images from one pool.

    Args:
        pool: [P] source indices, P >= 2.
        num_pairs: N, the number of images.
        rng: the Generator that draws them.

    Returns:
        [N, 2] source indices (left, right). Every pool digit is a left digit
        ``floor(N / P)`` or ``ceil(N / P)`` times; the right digit is uniform over the other
        P - 1 pool digits.

    >>> pairs = draw_pairs(np.arange(10, 15), 10, np.random.default_rng(0))
    >>> pairs.shape, bool((pairs[:, 0] != pairs[:, 1]).all()), np.bincount(pairs[:, 0])[10:]
    ((10, 2), True, array([2, 2, 2, 2, 2]))
    """
    pool_size = len(pool)
    if pool_size < 2:
        raise ValueError(f"`pool` must hold at least 2 digits to form pairs; got {pool_size}.")
    if num_pairs < 0:
        raise ValueError(f"`num_pairs` must be non-negative, but got {num_pairs}.")
    left_positions = draw_pool_positions(pool_size, num_pairs, rng)
    right_positions = (left_positions + rng.integers(1, pool_size, size=num_pairs)) % pool_size
    return np.stack([pool[left_positions], pool[right_positions]], axis=1).astype(np.int64)


def draw_cross_pairs(
    left_pool: NDArray[np.int64],
    right_pool: NDArray[np.int64],
    num_pairs: int,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Draw (left, right) items for ``num_pairs`` images, each side from its own pool.

    For images that combine two source sets (Fashion+MNIST: a Fashion item on the left, an
    MNIST digit on the right). Each side runs through its pool as in :func:`draw_pool_positions`
    (left first, then right), so every item of either pool is used equally often, within one.

    Args:
        left_pool: [P] source indices of the left items, P >= 1.
        right_pool: [Q] source indices of the right items (another source), Q >= 1.
        num_pairs: N, the number of images.
        rng: the Generator that draws them.

    Returns:
        [N, 2] int64: column 0 indexes the left source, column 1 the right source.

    >>> pairs = draw_cross_pairs(np.arange(4), np.arange(100, 102), 8, np.random.default_rng(0))
    >>> np.bincount(pairs[:, 0]).tolist(), np.bincount(pairs[:, 1] - 100).tolist()
    ([2, 2, 2, 2], [4, 4])
    """
    if num_pairs < 0:
        raise ValueError(f"`num_pairs` must be non-negative, but got {num_pairs}.")
    left_positions = draw_pool_positions(len(left_pool), num_pairs, rng)
    right_positions = draw_pool_positions(len(right_pool), num_pairs, rng)
    return np.stack([left_pool[left_positions], right_pool[right_positions]], axis=1).astype(
        np.int64
    )


def draw_corners(num_images: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Draw the canvas positions of the two digits of ``num_images`` images.

    Args:
        num_images: N.
        rng: the Generator that draws them.

    Returns:
        [N, 2, 2] upper-left corners ``[image, digit, (row, column)]``: the top-left digit's in
        ``0..2``, the bottom-right digit's in ``6..8`` (each coordinate independent, uniform).

    >>> corners = draw_corners(1000, np.random.default_rng(0))
    >>> [(int(corners[:, d].min()), int(corners[:, d].max())) for d in range(2)]
    [(0, 2), (6, 8)]
    """
    far_corner = CANVAS_SIZE - DIGIT_SIZE
    top_left = rng.integers(0, MAX_SHIFT + 1, size=(num_images, 2))
    bottom_right = far_corner - rng.integers(0, MAX_SHIFT + 1, size=(num_images, 2))
    return np.stack([top_left, bottom_right], axis=1).astype(np.int64)


def compose_canvases(
    digits: NDArray[np.uint8],
    pairs: NDArray[np.int64],
    corners: NDArray[np.int64],
    *,
    right_digits: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Paste each pair of digits on a 36x36 canvas, taking the max where they overlap.

    Args:
        digits: [D, 28, 28] uint8 source digits (or other 28x28 items).
        pairs: [N, 2] indices into ``digits`` (left, right).
        corners: [N, 2, 2] upper-left corner of each digit, from :func:`draw_corners`.
        right_digits: [D', 28, 28] the source of the right items when it differs from the left
            one (Fashion+MNIST); ``pairs[:, 1]`` then indexes it. None: ``digits``.

    Returns:
        [N, 36, 36] uint8 canvases.

    >>> digits = np.ones((2, 28, 28), dtype=np.uint8)
    >>> canvas = compose_canvases(digits, np.array([[0, 1]]), np.array([[[0, 0], [8, 8]]]))
    >>> canvas.shape, int(canvas.sum()), 2 * 28 * 28 - 20 * 20
    ((1, 36, 36), 1168, 1168)
    """
    canvases = np.zeros((len(pairs), CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)
    # One slice assignment per distinct corner (at most 25 per digit): ~8x faster than
    # scattering every pixel with fancy indexing.
    sources = (digits, digits if right_digits is None else right_digits)
    for slot, source in enumerate(sources):
        corner_codes = corners[:, slot, 0] * CANVAS_SIZE + corners[:, slot, 1]  # [N]
        for code in np.unique(corner_codes):
            row, col = divmod(int(code), CANVAS_SIZE)
            images = np.flatnonzero(corner_codes == code)  # [n]
            window = (images, slice(row, row + DIGIT_SIZE), slice(col, col + DIGIT_SIZE))
            canvases[window] = np.maximum(canvases[window], source[pairs[images, slot]])
    return canvases


def resize_canvases(canvases: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Resize 36x36 canvases to 28x28 with antialiased bilinear interpolation.

    Args:
        canvases: [N, 36, 36] uint8.

    Returns:
        [N, 28, 28] uint8, rounded. The filter is PIL's bilinear resize: a triangle whose
        support is widened by the 36/28 scale, weights normalized per output pixel.

    >>> resize_canvases(np.full((1, 36, 36), 200, dtype=np.uint8))[0, :2, :2]
    array([[200, 200],
           [200, 200]], dtype=uint8)
    """
    resized = np.empty((len(canvases), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, len(canvases), _RESIZE_CHUNK):
        chunk = torch.from_numpy(canvases[start : start + _RESIZE_CHUNK]).to(torch.float32)
        small = torch.nn.functional.interpolate(
            chunk.unsqueeze(1),  # [n, 1, 36, 36]
            size=(IMAGE_SIZE, IMAGE_SIZE),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        ).squeeze(1)  # [n, 28, 28]
        resized[start : start + len(chunk)] = small.round().clamp(0, 255).to(torch.uint8).numpy()
    return resized


def pixel_mean_std(images: NDArray[np.uint8]) -> tuple[float, float]:
    """Mean and (population) std of uint8 pixels scaled to [0, 1].

    Computed from the 256-bin histogram (``torch.bincount`` counts uint8 directly, where
    ``np.bincount`` first converts to int64): exact in float64, and ~10x faster than the
    float64 mean and std of every pixel.

    Args:
        images: uint8 array of any shape.

    Returns:
        ``(mean, std)`` of ``images / 255``.

    >>> pixel_mean_std(np.array([0, 255], dtype=np.uint8))
    (0.5, 0.5)
    """
    flat = torch.from_numpy(np.ascontiguousarray(images)).reshape(-1)
    counts = torch.bincount(flat, minlength=256).numpy().astype(np.float64)  # [256]
    levels = np.arange(256, dtype=np.float64) / 255.0  # [256]
    mean = float((counts * levels).sum() / counts.sum())
    variance = float((counts * (levels - mean) ** 2).sum() / counts.sum())
    return mean, math.sqrt(variance)


def image_pair_tensors(
    images: NDArray[np.generic],
    labels: NDArray[np.generic],
    mean: float,
    std: float,
    *,
    tasks: tuple[str, ...],
    describe: str,
    rebuild: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Check one cached split of an image-pair set and turn it into normalized tensors.

    Args:
        images: [N, 28, 28] uint8 images.
        labels: [N, 2] class per task.
        mean: the train split's pixel mean in [0, 1].
        std: the train split's pixel std in [0, 1].
        tasks: the two task names, in label-column order.
        describe: names the cache and split in the error, e.g. "MultiMNIST cache at … has test".
        rebuild: how to rebuild, appended to the error.

    Returns:
        ``(images [N, 1, 28, 28] float32 normalized, {task: labels [N] int64})``.

    Raises:
        ValueError: wrong dtype or shape, or a non-positive std.
    """
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE)
        or labels.shape != (len(images), len(tasks))
        or not std > 0
    ):
        raise ValueError(
            f"{describe} images {images.dtype} {images.shape} and labels {labels.shape}; "
            f"expected uint8 (N, 28, 28) and (N, 2). {rebuild}"
        )
    unit = torch.from_numpy(images).to(torch.float32).div_(255.0)  # [N, 28, 28]
    normalized = unit.sub_(mean).div_(std).unsqueeze(1)  # [N, 1, 28, 28]
    label_tensor = torch.from_numpy(labels.astype(np.int64))  # [N, 2]
    return normalized, {task: label_tensor[:, k].contiguous() for k, task in enumerate(tasks)}
