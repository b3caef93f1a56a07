"""QM9 as molecular graphs: atoms and 3-D positions, for a message-passing network.

The same molecules, targets (11 tasks, same units), split and target normalization as the
``qm9`` benchmark (:mod:`taskprio.data._qm9`, whose reading and split functions build this
cache too), but each molecule is given by its atoms instead of fixed features: per atom slot
the atomic number (1, 6, 7, 8, 9 for H, C, N, O, F; 0 for padding after the molecule's atoms)
and the position in ångström, padded to the largest molecule's 29 atoms.

The cache ``<data_root>/qm9_graph.npz`` (about 36 MB, built in about 13 s on a 2-core CPU)
holds ``atomic_numbers`` int8 [M, 29], ``positions`` float32 [M, 29, 3] (Å, as in the CSVs;
0 at padding slots), ``targets`` float64 [M, 11], ``index`` int64 [M] (QM9's molecule index),
``{split}_rows``, ``target_mean``/``target_std`` [11] of the train split, ``tasks``,
``format_version``, ``seed`` and ``source_sha256``.

Loaded, a split's inputs are float32 [N, 29, 4]: the atomic number, then x, y, z, per slot
(one tensor, as the trainer passes one input per batch); see :class:`taskprio.models.MPNN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taskprio.data._benchmark import BENCHMARKS, Benchmark, TaskSpec, regression_task
from taskprio.data._cache import build_command, read_npz, write_npz
from taskprio.data._paths import data_root
from taskprio.data._qm9 import (
    MAX_ATOMS,
    PIP_COMMAND,
    TASKS,
    normalized_target_split,
    qm9pack_data_dir,
    read_split_qm9,
    target_cache_arrays,
)
from taskprio.data._tensor_dataset import SPLITS, Split, TensorMultiTaskDataset
from taskprio.models._mpnn import MPNN

CACHE_FILENAME = "qm9_graph.npz"
# Bump when the cache layout or the construction changes; old caches are then refused.
FORMAT_VERSION = 1
# Per atom slot: the atomic number, then x, y, z.
NUM_ATOM_CHANNELS = 4


def build_qm9_graph(
    source_dir: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 110_000,
    num_val: int = 10_000,
    max_molecules: int | None = None,
) -> Path:
    """Build the QM9 graph cache (see the module docstring); about 13 s on a 2-core CPU.

    The arguments are those of :func:`taskprio.data.build_qm9`, and the same arguments give
    the same molecules, split rows, targets and normalization.

    Args:
        source_dir: the folder with ``qm9_part{1,2,3}.csv``; qm9pack's when None.
        out: the cache to write; default ``<data_root>/qm9_graph.npz``.
        seed: split seed.
        num_train: train molecules (default 110,000).
        num_val: validation molecules (default 10,000); the rest are the test split.
        max_molecules: use only the first molecules of the CSVs (small builds for tests).

    Returns:
        The path of the written cache.

    Raises:
        ImportError: qm9pack is not installed (and no ``source_dir``).
        FileNotFoundError: a CSV file is missing.
        ValueError: a bad argument, or a damaged source.

    >>> build_qm9_graph()  # doctest: +SKIP
    PosixPath('data/qm9_graph.npz')
    """
    source_dir = qm9pack_data_dir() if source_dir is None else source_dir
    out = data_root() / CACHE_FILENAME if out is None else out
    index, targets, atomic_numbers, positions, rows = read_split_qm9(
        source_dir, seed=seed, num_train=num_train, num_val=num_val, max_molecules=max_molecules
    )
    arrays = target_cache_arrays(
        source_dir, seed=seed, format_version=FORMAT_VERSION, index=index, targets=targets,
        rows=rows,
    )  # fmt: skip
    arrays["atomic_numbers"] = atomic_numbers.astype(np.int8)
    arrays["positions"] = positions.astype(np.float32)
    return write_npz(out, arrays)


def load_qm9_graph(split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
    """Load one split of the QM9 graph cache built by :func:`build_qm9_graph`.

    Args:
        split: ``"train"`` (110,000 molecules), ``"val"`` (10,000) or ``"test"`` (10,831).
        root: the data root holding ``qm9_graph.npz``; :func:`data_root` when None.

    Returns:
        The split: inputs float32 [N, 29, 4] (atomic number, x, y, z in Å per atom slot);
        labels per task float32 [N], normalized with the train mean and std, which
        ``target_normalization`` holds, as in :func:`taskprio.data.load_qm9`.

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.

    >>> train = load_qm9_graph("train")  # doctest: +SKIP
    >>> tuple(train.inputs.shape)  # doctest: +SKIP
    (110000, 29, 4)
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, but got {split!r}.")
    path = (data_root() if root is None else root) / CACHE_FILENAME
    command = build_command("qm9_graph", root)
    rebuild = f"Delete it and rebuild with `{command}`."
    keys = ["atomic_numbers", "positions", "targets", f"{split}_rows", "target_mean", "target_std"]
    arrays = read_npz(
        path,
        [*keys, "tasks"],
        title="QM9 graph",
        format_version=FORMAT_VERSION,
        missing_message=(
            f"QM9 graph cache not found at {path}. Build it with `{command}` (needs "
            f"`{PIP_COMMAND}`)."
        ),
        rebuild_hint=rebuild,
    )
    numbers, positions, targets = arrays["atomic_numbers"], arrays["positions"], arrays["targets"]
    num_molecules = len(numbers)
    if (
        tuple(arrays["tasks"].tolist()) != TASKS
        or numbers.shape != (num_molecules, MAX_ATOMS)
        or positions.shape != (num_molecules, MAX_ATOMS, 3)
        or targets.shape != (num_molecules, len(TASKS))
    ):
        raise ValueError(
            f"QM9 graph cache at {path} has atomic numbers {numbers.shape}, positions "
            f"{positions.shape} and targets {targets.shape}; expected (M, {MAX_ATOMS}), "
            f"(M, {MAX_ATOMS}, 3) and (M, {len(TASKS)}). {rebuild}"
        )
    rows = arrays[f"{split}_rows"]
    inputs = np.concatenate(
        [numbers[rows, :, None].astype(np.float32), positions[rows].astype(np.float32)], axis=2
    )  # [N, 29, 4]
    return normalized_target_split(torch.from_numpy(inputs), arrays, rows)


@BENCHMARKS.register("qm9_graph")
@dataclass(frozen=True)
class QM9GraphBenchmark(Benchmark):
    """QM9 as graphs (see :mod:`taskprio.data._qm9_graph`): the 11 targets of ``qm9``, MPNN.

    The tasks, their losses and metrics (MAE in the units of ``qm9``), the molecules and the
    split are those of the ``qm9`` benchmark; only the inputs and the model differ.

    Attributes:
        width: the MPNN's feature width C.
        num_blocks: its interaction blocks.
        num_rbf: its radial basis functions.
        cutoff: its interaction cutoff, in Å.
        head_hidden: the width of each head's hidden layer.

    >>> from taskprio.data import get_benchmark
    >>> benchmark = get_benchmark("qm9_graph", width=8, num_blocks=1)
    >>> benchmark.input_shape, benchmark.task("U0") == get_benchmark("qm9").task("U0")
    ((29, 4), True)
    >>> model = benchmark.make_model(["mu", "U0"], task_norms=True)
    >>> sorted({type(m).__name__ for m in model.modules() if "Task" in type(m).__name__})
    ['TaskBatchNorm1d', 'TaskLayerNorm']
    """

    name: str = "qm9_graph"
    description: str = "The 11 QM9 properties from atoms and 3-D positions (message passing)."
    tasks: tuple[TaskSpec, ...] = tuple(regression_task(task) for task in TASKS)
    input_shape: tuple[int, ...] = (MAX_ATOMS, NUM_ATOM_CHANNELS)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    width: int = 64
    num_blocks: int = 3
    num_rbf: int = 16
    cutoff: float = 5.0
    head_hidden: int = 32

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One split: atoms and positions [N, 29, 4], normalized targets."""
        return load_qm9_graph(split, root)

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        """A :class:`~taskprio.models.MPNN` with a norm after each shared Linear."""
        return MPNN(
            {spec.name: spec.num_outputs for spec in tasks},
            width=self.width,
            num_blocks=self.num_blocks,
            num_rbf=self.num_rbf,
            cutoff=self.cutoff,
            head_hidden=self.head_hidden,
        )
