"""Yeast: 14 binary gene-function tasks from 103 expression and phylogenetic features.

Source: ``river/datasets/yeast.csv.gz`` of the PyPI package ``river`` (BSD-3-Clause), found with
``importlib.util.find_spec("river")`` and read by path, without importing river. It is the
MULAN version of Yeast (Elisseeff & Weston, NeurIPS 2001; OpenML 40597): 2,417 genes, features
``Att1..Att103`` (floats), labels ``Class1..Class14`` (0/1; frequencies 0.014 to 0.751).

Tasks: ``class1`` .. ``class14``, one binary classification each.

Split, for a build seed ``s`` (default 0): a permutation of the 2,417 rows drawn by
``numpy.random.default_rng(s)`` gives 1,500 train rows (the size of MULAN's train file), 417
val and 500 test rows. Features are standardized with the train mean and std (stored).

The cache ``<data_root>/yeast.npz`` (built in well under a second) holds ``features`` float64
[2417, 103] and ``labels`` uint8 [2417, 14] in file order, ``{split}_rows`` int64 row numbers,
``feature_mean``/``feature_std`` [103] of the train rows, ``format_version``, ``seed`` and
``source_sha256``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import zlib
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from taskprio.data._cache import KEY_VERSION, build_command, read_npz, write_npz
from taskprio.data._paths import data_root
from taskprio.data._tensor_dataset import SPLITS, Split, TensorMultiTaskDataset

NUM_FEATURES = 103
NUM_LABELS = 14
NUM_ROWS = 2_417
TASKS: tuple[str, ...] = tuple(f"class{k}" for k in range(1, NUM_LABELS + 1))
FEATURE_COLUMNS: tuple[str, ...] = tuple(f"Att{k}" for k in range(1, NUM_FEATURES + 1))
LABEL_COLUMNS: tuple[str, ...] = tuple(f"Class{k}" for k in range(1, NUM_LABELS + 1))
SPLIT_SIZES: dict[Split, int] = {"train": 1_500, "val": 417, "test": 500}
SOURCE_MEMBER = ("datasets", "yeast.csv.gz")
PIP_COMMAND = "pip install river"
CACHE_FILENAME = "yeast.npz"
# Bump when the cache layout or the construction changes; old caches are then refused.
FORMAT_VERSION = 1

KEY_SEED = "seed"
KEY_SOURCE_SHA256 = "source_sha256"


def yeast_source() -> Path:
    """The path of river's ``yeast.csv.gz``, found without importing river.

    Returns:
        ``.../site-packages/river/datasets/yeast.csv.gz``.

    Raises:
        ImportError: river is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"Yeast needs the PyPI package river (its yeast.csv.gz is read; it is never "
            f"imported). Install it with `{PIP_COMMAND}` or `pip install 'taskprio[data]'`."
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*SOURCE_MEMBER)


def read_yeast(source: Path | None = None) -> tuple[NDArray[np.float64], NDArray[np.uint8]]:
    """Read Yeast's features and labels in file order.

    Args:
        source: the ``yeast.csv.gz``; :func:`yeast_source` when None.

    Returns:
        ``(features, labels)``: float64 [2417, 103] and uint8 [2417, 14] in {0, 1}.

    Raises:
        ImportError: river is not installed (and no ``source``).
        FileNotFoundError: ``source`` does not exist.
        ValueError: a damaged file or one with other columns.
    """
    source = yeast_source() if source is None else source
    if not source.is_file():
        raise FileNotFoundError(
            f"Yeast not found at {source}. Reinstall river with `pip install --force-reinstall "
            f"river` (or `{PIP_COMMAND}`)."
        )
    try:
        with gzip.open(source, "rb") as file:
            rows = list(csv.reader(io.TextIOWrapper(file, encoding="utf-8", newline="")))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(
            f"Could not read {source} ({type(error).__name__}: {error}). Reinstall river."
        ) from error
    header, body = rows[0], rows[1:]
    if tuple(header) != FEATURE_COLUMNS + LABEL_COLUMNS or len(body) != NUM_ROWS:
        raise ValueError(
            f"{source} has {len(header)} columns and {len(body)} rows; expected Att1..Att103, "
            f"Class1..Class14 and {NUM_ROWS} rows (river 0.26). Reinstall river."
        )
    values = np.asarray(body, dtype=np.float64)  # [2417, 117]
    labels = values[:, NUM_FEATURES:]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{source}: a label is not 0 or 1.")
    return values[:, :NUM_FEATURES], labels.astype(np.uint8)


def build_yeast(
    source: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
) -> Path:
    """Build the Yeast cache (see the module docstring).

    Args:
        source: river's ``yeast.csv.gz``; found through river's install when None.
        out: the cache to write; default ``<data_root>/yeast.npz``.
        seed: split seed; the same seed gives identical arrays.

    Returns:
        The path of the written cache.

    Raises:
        ImportError: river is not installed (and no ``source``).
        FileNotFoundError: ``source`` does not exist.
        ValueError: a bad argument, or a damaged source.

    >>> build_yeast()  # doctest: +SKIP
    PosixPath('data/yeast.npz')
    """
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, but got {seed}.")
    source = yeast_source() if source is None else source
    out = data_root() / CACHE_FILENAME if out is None else out
    features, labels = read_yeast(source)
    permutation = np.random.default_rng(seed).permutation(len(features)).astype(np.int64)
    arrays: dict[str, NDArray[np.generic]] = {
        KEY_VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        KEY_SEED: np.asarray(seed, dtype=np.int64),
        KEY_SOURCE_SHA256: np.asarray(hashlib.sha256(source.read_bytes()).hexdigest()),
        "features": features,
        "labels": labels,
    }
    start = 0
    for split in SPLITS:
        stop = start + SPLIT_SIZES[split]
        arrays[f"{split}_rows"] = np.sort(permutation[start:stop])
        start = stop
    train = features[arrays["train_rows"]]
    arrays["feature_mean"] = train.mean(axis=0)
    arrays["feature_std"] = train.std(axis=0)
    return write_npz(out, arrays)


def load_yeast(split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
    """Load one split of the Yeast cache built by :func:`build_yeast`.

    Args:
        split: ``"train"`` (1,500 genes), ``"val"`` (417) or ``"test"`` (500).
        root: the data root holding ``yeast.npz``; :func:`data_root` when None.

    Returns:
        The split: inputs float32 [N, 103] standardized with the train statistics; labels
        ``{"class1": [N], ..., "class14": [N]}`` float32 in {0, 1} (for BCE with logits).

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.

    >>> tuple(load_yeast("test").inputs.shape)  # doctest: +SKIP
    (500, 103)
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, but got {split!r}.")
    path = (data_root() if root is None else root) / CACHE_FILENAME
    command = build_command("yeast", root)
    rebuild = f"Delete it and rebuild with `{command}`."
    arrays = read_npz(
        path,
        ["features", "labels", f"{split}_rows", "feature_mean", "feature_std"],
        title="Yeast",
        format_version=FORMAT_VERSION,
        missing_message=(
            f"Yeast not found at {path}. Build it with `{command}` (needs `{PIP_COMMAND}`)."
        ),
        rebuild_hint=rebuild,
    )
    features, labels = arrays["features"], arrays["labels"]
    if features.shape != (len(labels), NUM_FEATURES) or labels.shape[1:] != (NUM_LABELS,):
        raise ValueError(
            f"Yeast cache at {path} has features {features.shape} and labels {labels.shape}; "
            f"expected (N, {NUM_FEATURES}) and (N, {NUM_LABELS}). {rebuild}"
        )
    rows = arrays[f"{split}_rows"]
    mean = np.asarray(arrays["feature_mean"], dtype=np.float64)
    std = np.asarray(arrays["feature_std"], dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    standardized = (np.asarray(features[rows], dtype=np.float64) - mean) / std
    label_tensor = torch.from_numpy(labels[rows].astype(np.float32))  # [N, 14]
    return TensorMultiTaskDataset(
        torch.from_numpy(standardized.astype(np.float32)),
        {task: label_tensor[:, k].contiguous() for k, task in enumerate(TASKS)},
    )
