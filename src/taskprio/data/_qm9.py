"""QM9: 11 regression targets per molecule, from fixed Coulomb-matrix features.

Source: the CSV files of the PyPI package ``qm9pack`` 1.0.3 (MIT; by R. Ramakrishnan, first
author of QM9): 130,831 molecules with at most 29 atoms (the 3,054 that failed the consistency
check are left out, as in PyG). The files are found with ``importlib.util.find_spec("qm9pack")``
and read by path: the package itself is never imported (its ``__init__`` needs
``pkg_resources``, which current setuptools no longer ships).

Targets, in this order and these units (those of PyG's ``QM9`` and of the Nash-MTL / FAMO
QM9 experiments, which use PyG targets 0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11):

====== ============================================== ============================== =========
task   meaning                                        CSV column                     unit
====== ============================================== ============================== =========
mu     dipole moment                                  ``Dipole_debye``               D
alpha  isotropic polarizability                       ``Polarizability_bohr3``       a₀³
homo   HOMO energy                                    ``HOMO_au``                    eV
lumo   LUMO energy                                    ``LUMO_au``                    eV
r2     electronic spatial extent                      ``R2_bohr2``                   a₀²
zpve   zero-point vibrational energy                  ``ZPVE_au``                    eV
U0     atomization energy at 0 K                      ``InternalEnergy_0K_au``       eV
U      atomization energy at 298.15 K                 ``InternalEnergy_298K_au``     eV
H      atomization enthalpy at 298.15 K               ``Enthalphy_298K_au``          eV
G      atomization free energy at 298.15 K            ``GibbsFreeEnergy_298K_au``    eV
Cv     heat capacity at 298.15 K                      ``Heatcapacity_Cv_cal_mol_K``  cal/mol/K
====== ============================================== ============================== =========

Hartree values are multiplied by :data:`HARTREE_TO_EV` (27.211386246, PyG's constant). The four
thermodynamic energies are *atomization* energies, as in PyG targets 12-15 and the MTL papers:
the molecule's total energy minus the sum of its free atoms' energies (:data:`ATOM_REFERENCE`,
QM9's ``atomref`` table, B3LYP/6-31G(2df,p)), so methane's U0 is
(-40.47893 - (-37.846772 - 4 x 0.500273)) Ha = -17.172 eV.

Features (34 per molecule, fixed; an MLP learns from them):

- the 29 eigenvalues of the Coulomb matrix (Rupp et al., PRL 2012) ``M_ii = 0.5 Z_i^2.4``,
  ``M_ij = Z_i Z_j / |R_i - R_j|`` with distances in bohr, sorted by decreasing absolute value
  and padded with zeros for molecules of fewer than 29 atoms (the eigenvalues of the matrix
  padded with zero rows);
- the number of H, C, N, O and F atoms.

Split, for a build seed ``s`` (default 0): a permutation of the molecules drawn by
``numpy.random.default_rng(s)`` gives 110,000 train, 10,000 val and the remaining 10,831 test
molecules (Nash-MTL's sizes). Targets are normalized with the train mean and std, features
standardized with the train mean and std (a constant feature keeps std 1); both are stored in
the cache, so every split shares them.

The cache ``<data_root>/qm9.npz`` (about 30 MB, built in about 10 s on a 2-core CPU: 2 s
reading the CSVs, 3 s for the eigenvalues, the rest parsing and compressing) holds
``features`` float32 [M, 34], ``targets`` float64 [M, 11] in the units above, ``index``
int64 [M] (QM9's molecule index, 1..133885), ``{split}_rows`` int64 row numbers of each split,
``feature_mean``/``feature_std`` [34] and ``target_mean``/``target_std`` [11] of the train
split, ``tasks``, ``format_version``, ``seed`` and ``source_sha256``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from taskprio.data._cache import KEY_VERSION, build_command, read_npz, write_npz
from taskprio.data._paths import data_root
from taskprio.data._tensor_dataset import SPLITS, Split, TensorMultiTaskDataset

TASKS: tuple[str, ...] = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "U0", "U", "H", "G", "Cv")
UNITS: dict[str, str] = {
    "mu": "D",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "r2": "bohr^2",
    "zpve": "eV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "Cv": "cal/mol/K",
}
TARGET_COLUMNS: dict[str, str] = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",  # [sic] in qm9pack
    "G": "GibbsFreeEnergy_298K_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
}
HARTREE_TO_EV = 27.211386246  # PyG's HAR2EV
ANGSTROM_TO_BOHR = 1.0 / 0.529177210903  # CODATA 2018 Bohr radius
HARTREE_TASKS: tuple[str, ...] = ("homo", "lumo", "zpve", "U0", "U", "H", "G")
ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS: dict[str, int] = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
# QM9's atomref: energies of the free atoms in hartree (B3LYP/6-31G(2df,p)), for U0, U, H, G.
ATOM_REFERENCE: dict[str, dict[str, float]] = {
    "U0": {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579, "F": -99.718730},
    "U": {"H": -0.498857, "C": -37.845355, "N": -54.582445, "O": -75.063162, "F": -99.717314},
    "H": {"H": -0.497912, "C": -37.844411, "N": -54.581501, "O": -75.062219, "F": -99.716370},
    "G": {"H": -0.510927, "C": -37.861317, "N": -54.598897, "O": -75.079532, "F": -99.733544},
}
MAX_ATOMS = 29
NUM_FEATURES = MAX_ATOMS + len(ELEMENTS)
NUM_MOLECULES = 130_831
PART_FILES: tuple[str, ...] = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
PIP_COMMAND = "pip install qm9pack"
CACHE_FILENAME = "qm9.npz"
# Bump when the cache layout or the construction changes; old caches are then refused.
FORMAT_VERSION = 1

KEY_SEED = "seed"
KEY_SOURCE_SHA256 = "source_sha256"
_COLUMNS = ("Index", "N_atoms", "Elements", "XYZ_Ang", *TARGET_COLUMNS.values())
# Molecules per eigenvalue batch: bounds the [m, k, k, 3] float64 distance array (< 200 MB).
_CHUNK = 8_192


def qm9pack_data_dir() -> Path:
    """The ``data`` folder of the installed ``qm9pack`` package, found without importing it.

    Returns:
        ``.../site-packages/qm9pack/data``.

    Raises:
        ImportError: ``qm9pack`` is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"QM9 needs the PyPI package qm9pack (its CSV files are read; it is never "
            f"imported). Install it with `{PIP_COMMAND}` or `pip install 'taskprio[data]'`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _csv_rows(source_dir: Path, max_molecules: int | None) -> Iterator[list[str]]:
    """The wanted columns of every molecule, part by part, in file order."""
    missing = [name for name in PART_FILES if not (source_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"QM9 CSV files not found in {source_dir} (missing {', '.join(missing)}). Reinstall "
            f"them with `pip install --force-reinstall qm9pack` (or `{PIP_COMMAND}`)."
        )
    count = 0
    for name in PART_FILES:
        with (source_dir / name).open(newline="") as file:
            reader = csv.reader(file)
            header = next(reader)
            absent = [column for column in _COLUMNS if column not in header]
            if absent:
                raise ValueError(
                    f"{source_dir / name} has no column {', '.join(absent)}; expected qm9pack "
                    f"1.0.3. Reinstall it with `pip install --force-reinstall 'qm9pack==1.0.3'`."
                )
            positions = [header.index(column) for column in _COLUMNS]
            for row in reader:
                if max_molecules is not None and count >= max_molecules:
                    return
                yield [row[p] for p in positions]
                count += 1


def _parse_list(cells: list[str], *, quoted: bool) -> list[str]:
    """Flatten Python list literals (``"[[0.1,0.,1.],[...]]"``, ``"['C','H']"``) to their items.

    One join and one split over all molecules instead of ``ast.literal_eval`` per molecule (the
    values contain literals like ``0.``, which JSON refuses): about 5x faster.
    """
    text = ",".join(cells).replace("[", "").replace("]", "")
    if quoted:
        text = text.replace("'", "").replace('"', "").replace(" ", "")
    return text.split(",")


def read_qm9(
    source_dir: Path | None = None, *, max_molecules: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    """Read the molecules of the qm9pack CSVs: targets in the units above, atoms and positions.

    Args:
        source_dir: the folder with ``qm9_part{1,2,3}.csv``; :func:`qm9pack_data_dir` when None.
        max_molecules: read only the first ones, in file order (small builds for tests); None
            reads all 130,831.

    Returns:
        ``(index, targets, atomic_numbers, positions)``: QM9 indices int64 [M]; targets
        float64 [M, 11] in the units of the module docstring; atomic numbers int64 [M, 29],
        0 after the molecule's atoms; positions float64 [M, 29, 3] in ångström, 0 likewise.

    Raises:
        ImportError: qm9pack is not installed (and no ``source_dir``).
        FileNotFoundError: a CSV file is missing.
        ValueError: a file that is not qm9pack's.

    >>> index, targets, numbers, positions = read_qm9(max_molecules=1)  # doctest: +SKIP
    >>> index.tolist(), numbers[0, :6].tolist()  # doctest: +SKIP
    ([1], [6, 1, 1, 1, 1, 0])
    """
    source_dir = qm9pack_data_dir() if source_dir is None else source_dir
    rows = list(_csv_rows(source_dir, max_molecules))
    if not rows:
        raise ValueError(f"{source_dir} holds no molecule.")
    columns = list(zip(*rows, strict=True))
    del rows
    index = np.asarray(columns[0], dtype=np.int64)
    counts = np.asarray(columns[1], dtype=np.int64)  # [M]
    if counts.min() < 1 or counts.max() > MAX_ATOMS:
        raise ValueError(
            f"N_atoms must be in 1..{MAX_ATOMS}; found {counts.min()}..{counts.max()}."
        )
    symbols = np.asarray(_parse_list(list(columns[2]), quoted=True))  # [A]
    flat_positions = np.fromstring(",".join(_parse_list(list(columns[3]), quoted=False)), sep=",")
    num_atoms = int(counts.sum())
    if len(symbols) != num_atoms or flat_positions.shape != (3 * num_atoms,):
        raise ValueError(
            f"{source_dir}: the Elements and XYZ_Ang columns hold {len(symbols)} atoms and "
            f"{len(flat_positions)} coordinates; N_atoms sums to {num_atoms}."
        )
    found, inverse = np.unique(symbols, return_inverse=True)
    unknown = sorted(set(found.tolist()) - set(ELEMENTS))
    if unknown:
        raise ValueError(f"{source_dir}: unexpected elements {unknown}; QM9 has {ELEMENTS}.")
    element_ids = np.asarray([ELEMENTS.index(e) for e in found.tolist()])[inverse]  # [A]
    # Atom a of molecule m goes to slot a - (first atom of m) of the [M, 29] arrays.
    molecule = np.repeat(np.arange(len(counts)), counts)  # [A]
    slot = np.arange(num_atoms) - (np.cumsum(counts) - counts)[molecule]  # [A]
    atomic_numbers = np.zeros((len(counts), MAX_ATOMS), dtype=np.int64)
    atomic_numbers[molecule, slot] = np.asarray([ATOMIC_NUMBERS[e] for e in ELEMENTS])[element_ids]
    positions = np.zeros((len(counts), MAX_ATOMS, 3), dtype=np.float64)
    positions[molecule, slot] = flat_positions.reshape(-1, 3)
    element_counts = np.zeros((len(counts), len(ELEMENTS)), dtype=np.int64)
    np.add.at(element_counts, (molecule, element_ids), 1)
    targets = np.stack(
        [
            _convert(task, np.asarray(columns[4 + k], dtype=np.float64), element_counts)
            for k, task in enumerate(TASKS)
        ],
        axis=1,
    )
    return index, targets, atomic_numbers, positions


def _convert(
    task: str, values: NDArray[np.float64], element_counts: NDArray[np.int64]
) -> NDArray[np.float64]:
    """One target column in the units of the module docstring."""
    if task in ATOM_REFERENCE:
        references = np.asarray([ATOM_REFERENCE[task][e] for e in ELEMENTS])  # [5] hartree
        values = values - element_counts @ references
    if task in HARTREE_TASKS:
        values = values * HARTREE_TO_EV
    return values


def coulomb_eigenvalues(
    atomic_numbers: NDArray[np.int64], positions_angstrom: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Sorted Coulomb-matrix eigenvalues of each molecule (Rupp et al., PRL 2012).

    Molecules are grouped by atom count and each group is diagonalized as one batch of
    ``[m, k, k]`` matrices, so padding atoms cost nothing (about 3 s for all of QM9).

    Args:
        atomic_numbers: [M, P] int, 0 for padding slots after the molecule's atoms.
        positions_angstrom: [M, P, 3] positions in ångström.

    Returns:
        [M, P] eigenvalues, by decreasing absolute value, zero-padded.

    >>> z = np.array([[1, 1, 0]])
    >>> r = np.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.529177210903], [0.0, 0.0, 0.0]]])
    >>> coulomb_eigenvalues(z, r).round(6).tolist()  # [[0.5, 1], [1, 0.5]]: 1.5 and -0.5
    [[1.5, -0.5, 0.0]]
    """
    num_molecules, num_slots = atomic_numbers.shape
    counts = (atomic_numbers > 0).sum(axis=1)  # [M]
    eigenvalues = np.zeros((num_molecules, num_slots), dtype=np.float64)
    for size in np.unique(counts).tolist():
        members = np.flatnonzero(counts == size)
        diagonal = np.arange(size)
        for start in range(0, len(members), _CHUNK):
            chunk = members[start : start + _CHUNK]  # [m]
            z = atomic_numbers[chunk, :size].astype(np.float64)  # [m, k]
            r = positions_angstrom[chunk, :size] * ANGSTROM_TO_BOHR  # [m, k, 3]
            distance = np.sqrt(((r[:, :, None] - r[:, None]) ** 2).sum(axis=-1))  # [m, k, k]
            distance[:, diagonal, diagonal] = np.inf
            matrix = z[:, :, None] * z[:, None, :] / distance  # [m, k, k]
            matrix[:, diagonal, diagonal] = 0.5 * z**2.4
            values = np.linalg.eigvalsh(matrix)  # [m, k]
            order = np.argsort(-np.abs(values), axis=1, kind="stable")
            eigenvalues[chunk, :size] = np.take_along_axis(values, order, axis=1)
    return eigenvalues


def molecule_features(
    atomic_numbers: NDArray[np.int64], positions_angstrom: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The 34 fixed features: 29 Coulomb eigenvalues, then the H, C, N, O, F counts.

    Args:
        atomic_numbers: [M, 29] int, 0 for padding.
        positions_angstrom: [M, 29, 3].

    Returns:
        [M, 34] float64.
    """
    counts = np.stack([(atomic_numbers == ATOMIC_NUMBERS[e]).sum(axis=1) for e in ELEMENTS], 1)
    return np.concatenate([coulomb_eigenvalues(atomic_numbers, positions_angstrom), counts], 1)


def _sha256(source_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in PART_FILES:
        with (source_dir / name).open("rb") as file:
            while block := file.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def split_rows(
    num_molecules: int, *, seed: int, num_train: int, num_val: int
) -> dict[Split, NDArray[np.int64]]:
    """The sorted row numbers of each split: a seeded permutation cut into train, val and test.

    Shared by every cache built from the qm9pack CSVs, so they all split QM9 alike.

    Args:
        num_molecules: M, the molecules read.
        seed: the ``numpy.random.default_rng`` seed of the permutation.
        num_train: rows in the train split.
        num_val: rows in the val split; the rest are the test split.

    Returns:
        split → int64 sorted row numbers; together they are ``0 .. M - 1`` once each.

    Raises:
        ValueError: the sizes leave no test molecule.

    >>> {split: rows.tolist() for split, rows in split_rows(5, seed=0, num_train=2,
    ...                                                     num_val=1).items()}
    {'train': [2, 4], 'val': [3], 'test': [0, 1]}
    """
    if num_train + num_val >= num_molecules:
        raise ValueError(
            f"`num_train` + `num_val` must leave test molecules: {num_train} + {num_val} >= "
            f"{num_molecules} molecules."
        )
    permutation = np.random.default_rng(seed).permutation(num_molecules).astype(np.int64)
    return {
        "train": np.sort(permutation[:num_train]),
        "val": np.sort(permutation[num_train : num_train + num_val]),
        "test": np.sort(permutation[num_train + num_val :]),
    }


def read_split_qm9(
    source_dir: Path,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    max_molecules: int | None,
) -> tuple[
    NDArray[np.int64],
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.float64],
    dict[Split, NDArray[np.int64]],
]:
    """The CSVs read (:func:`read_qm9`) and split (:func:`split_rows`), arguments checked.

    Shared by every cache built from QM9, so that they hold the same molecules in the same
    splits.
    """
    if seed < 0:
        raise ValueError(f"`seed` must be non-negative, but got {seed}.")
    if num_train < 1 or num_val < 1:
        raise ValueError(
            f"`num_train` and `num_val` must be positive, but got {num_train} and {num_val}."
        )
    if max_molecules is not None and max_molecules < 3:
        raise ValueError(f"`max_molecules` must be at least 3, but got {max_molecules}.")
    index, targets, atomic_numbers, positions = read_qm9(source_dir, max_molecules=max_molecules)
    rows = split_rows(len(index), seed=seed, num_train=num_train, num_val=num_val)
    return index, targets, atomic_numbers, positions, rows


def build_qm9(
    source_dir: Path | None = None,
    out: Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 110_000,
    num_val: int = 10_000,
    max_molecules: int | None = None,
) -> Path:
    """Build the QM9 cache (see the module docstring); about 10 s on a 2-core CPU.

    Args:
        source_dir: the folder with ``qm9_part{1,2,3}.csv``; qm9pack's when None.
        out: the cache to write; default ``<data_root>/qm9.npz``.
        seed: split seed; the same seed and sizes give identical arrays.
        num_train: train molecules (default 110,000).
        num_val: validation molecules (default 10,000); the rest are the test split.
        max_molecules: use only the first molecules of the CSVs (small builds for tests).

    Returns:
        The path of the written cache.

    Raises:
        ImportError: qm9pack is not installed (and no ``source_dir``).
        FileNotFoundError: a CSV file is missing.
        ValueError: a bad argument, or a damaged source.

    >>> build_qm9()  # doctest: +SKIP
    PosixPath('data/qm9.npz')
    """
    source_dir = qm9pack_data_dir() if source_dir is None else source_dir
    out = data_root() / CACHE_FILENAME if out is None else out
    index, targets, atomic_numbers, positions, rows = read_split_qm9(
        source_dir, seed=seed, num_train=num_train, num_val=num_val, max_molecules=max_molecules
    )
    features = molecule_features(atomic_numbers, positions)
    train_features = features[rows["train"]]
    arrays = target_cache_arrays(
        source_dir, seed=seed, format_version=FORMAT_VERSION, index=index, targets=targets,
        rows=rows,
    )  # fmt: skip
    arrays["features"] = features.astype(np.float32)
    arrays["feature_mean"] = train_features.mean(axis=0)
    arrays["feature_std"] = train_features.std(axis=0)
    return write_npz(out, arrays)


def target_cache_arrays(
    source_dir: Path,
    *,
    seed: int,
    format_version: int,
    index: NDArray[np.int64],
    targets: NDArray[np.float64],
    rows: Mapping[Split, NDArray[np.int64]],
) -> dict[str, NDArray[np.generic]]:
    """The entries every QM9 cache holds: provenance, targets, their train statistics, splits.

    Args:
        source_dir: the CSV folder (its checksum is stored).
        seed: the split seed.
        format_version: the cache's format version.
        index: [M] the molecules' QM9 indices.
        targets: [M, 11] the targets in standard units.
        rows: split → the rows of that split.
    """
    train_targets = targets[rows["train"]]
    arrays: dict[str, NDArray[np.generic]] = {
        KEY_VERSION: np.asarray(format_version, dtype=np.int64),
        KEY_SEED: np.asarray(seed, dtype=np.int64),
        KEY_SOURCE_SHA256: np.asarray(_sha256(source_dir)),
        "tasks": np.asarray(TASKS),
        "index": index,
        "targets": targets,
        "target_mean": train_targets.mean(axis=0),
        "target_std": train_targets.std(axis=0),
    }
    for split in SPLITS:
        arrays[f"{split}_rows"] = rows[split]
    return arrays


def normalized_target_split(
    inputs: Tensor, arrays: Mapping[str, NDArray[Any]], rows: NDArray[Any]
) -> TensorMultiTaskDataset:
    """A split of ``inputs`` with each task's targets normalized by the stored train statistics.

    Args:
        inputs: [N, ...] the split's inputs.
        arrays: a loaded cache with ``targets``, ``target_mean`` and ``target_std``.
        rows: [N] the split's rows of ``targets``.
    """
    target_mean = np.asarray(arrays["target_mean"], dtype=np.float64)
    target_std = np.asarray(arrays["target_std"], dtype=np.float64)
    normalized = (arrays["targets"][rows] - target_mean) / target_std  # [N, 11]
    labels = torch.from_numpy(normalized.astype(np.float32))
    return TensorMultiTaskDataset(
        inputs,
        {task: labels[:, k].contiguous() for k, task in enumerate(TASKS)},
        target_normalization={
            task: (float(target_mean[k]), float(target_std[k])) for k, task in enumerate(TASKS)
        },
    )


def load_qm9(split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
    """Load one split of the QM9 cache built by :func:`build_qm9`.

    Args:
        split: ``"train"`` (110,000 molecules), ``"val"`` (10,000) or ``"test"`` (10,831).
        root: the data root holding ``qm9.npz``; :func:`data_root` when None.

    Returns:
        The split: inputs float32 [N, 34] standardized features; labels per task float32 [N],
        normalized with the train mean and std, which ``target_normalization`` holds (errors
        in the units of the module docstring are ``std`` times the normalized ones).

    Raises:
        FileNotFoundError: no cache; the message says how to build it.
        ValueError: unknown split, or a cache that is damaged or from another format version.

    >>> train = load_qm9("train")  # doctest: +SKIP
    >>> tuple(train.inputs.shape), train.tasks[:3]  # doctest: +SKIP
    ((110000, 34), ('mu', 'alpha', 'homo'))
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, but got {split!r}.")
    path = (data_root() if root is None else root) / CACHE_FILENAME
    command = build_command("qm9", root)
    rebuild = f"Delete it and rebuild with `{command}`."
    keys = ["features", "targets", f"{split}_rows", "feature_mean", "feature_std"]
    arrays = read_npz(
        path,
        [*keys, "target_mean", "target_std", "tasks"],
        title="QM9",
        format_version=FORMAT_VERSION,
        missing_message=(
            f"QM9 not found at {path}. Build it with `{command}` (needs `{PIP_COMMAND}`)."
        ),
        rebuild_hint=rebuild,
    )
    features, targets = arrays["features"], arrays["targets"]
    if (
        tuple(arrays["tasks"].tolist()) != TASKS
        or features.ndim != 2
        or features.shape[1] != NUM_FEATURES
        or targets.shape != (len(features), len(TASKS))
    ):
        raise ValueError(
            f"QM9 cache at {path} has features {features.shape} and targets {targets.shape}; "
            f"expected (M, {NUM_FEATURES}) and (M, {len(TASKS)}). {rebuild}"
        )
    rows = arrays[f"{split}_rows"]
    feature_mean = np.asarray(arrays["feature_mean"], dtype=np.float64)
    feature_std = np.asarray(arrays["feature_std"], dtype=np.float64)
    feature_std = np.where(feature_std > 0, feature_std, 1.0)  # constant features stay 0
    standardized = (features[rows].astype(np.float64) - feature_mean) / feature_std
    return normalized_target_split(torch.from_numpy(standardized.astype(np.float32)), arrays, rows)
