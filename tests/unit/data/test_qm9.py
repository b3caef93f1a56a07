"""QM9 from qm9pack's CSVs: parsing, units, Coulomb-matrix features, split and loading."""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from taskprio.data import build_qm9, data_root, load_qm9
from taskprio.data.__main__ import main
from taskprio.data._qm9 import (
    CACHE_FILENAME,
    FORMAT_VERSION,
    NUM_FEATURES,
    TASKS,
    coulomb_eigenvalues,
    qm9pack_data_dir,
    read_qm9,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
NUM_SMALL = 400
SMALL = {"num_train": 250, "num_val": 50, "max_molecules": NUM_SMALL}


def _data_dir() -> Path:
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


@pytest.fixture(scope="module")
def source_dir() -> Path:
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed; `pip install qm9pack`")
    return qm9pack_data_dir()


@pytest.fixture(scope="module")
def csv_rows(source_dir: Path) -> list[dict[str, str]]:
    """The first molecules of qm9_part1.csv, read with the csv module."""
    with (source_dir / "qm9_part1.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        return [row for _, row in zip(range(NUM_SMALL), reader, strict=False)]


@pytest.fixture(scope="module")
def small(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qm9(source_dir, tmp_path_factory.mktemp("qm9") / CACHE_FILENAME, **SMALL)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


def test_targets_of_methane_by_hand(small, csv_rows):
    """Molecule 1 is methane: CSV row mu 0., alpha 13.21, HOMO -0.3877, LUMO 0.1171 Ha,
    R2 35.3641, ZPVE 0.044749 Ha, U0 -40.47893, U -40.476062, H -40.475117, G -40.498597 Ha,
    Cv 6.469. Atomization U0 = U0 - (U0(C) + 4 U0(H)) = -40.47893 + 37.846772 + 4 * 0.500273
    = -0.631066 Ha = -17.17218 eV (1 Ha = 27.211386246 eV); likewise U, H and G.
    """
    row = csv_rows[0]
    assert row["Index"] == "1"
    assert row["SMILES"] == "C"
    cache = _arrays(small)
    assert cache["index"][0] == 1
    ev = 27.211386246
    expected = {
        "mu": 0.0,
        "alpha": 13.21,
        "homo": -0.3877 * ev,
        "lumo": 0.1171 * ev,
        "r2": 35.3641,
        "zpve": 0.044749 * ev,
        "U0": (-40.47893 - (-37.846772 + 4 * -0.500273)) * ev,
        "U": (-40.476062 - (-37.845355 + 4 * -0.498857)) * ev,
        "H": (-40.475117 - (-37.844411 + 4 * -0.497912)) * ev,
        "G": (-40.498597 - (-37.861317 + 4 * -0.510927)) * ev,
        "Cv": 6.469,
    }
    assert expected["U0"] == pytest.approx(-17.17218, abs=1e-5)
    got = dict(zip(TASKS, cache["targets"][0].tolist(), strict=True))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_targets_follow_the_csv(small, csv_rows):
    """Every target of the small build against its CSV column, converted independently."""
    cache = _arrays(small)
    ev = 27.211386246
    reference = {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579}
    reference["F"] = -99.718730
    for n, row in enumerate(csv_rows):
        assert int(row["Index"]) == cache["index"][n]
        elements = ast.literal_eval(row["Elements"])
        free_atoms = sum(reference[e] for e in elements)
        assert cache["targets"][n, 1] == float(row["Polarizability_bohr3"])
        assert cache["targets"][n, 2] == pytest.approx(float(row["HOMO_au"]) * ev, rel=1e-12)
        u0 = (float(row["InternalEnergy_0K_au"]) - free_atoms) * ev
        assert cache["targets"][n, 6] == pytest.approx(u0, rel=1e-9)
        assert cache["targets"][n, 10] == float(row["Heatcapacity_Cv_cal_mol_K"])


def test_parsing_matches_literal_eval(source_dir, csv_rows):
    index, targets, numbers, positions = read_qm9(source_dir, max_molecules=NUM_SMALL)
    assert index.shape == (NUM_SMALL,)
    assert targets.shape == (NUM_SMALL, 11)
    z_of = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
    for n, row in enumerate(csv_rows):
        elements = ast.literal_eval(row["Elements"])
        xyz = np.asarray(ast.literal_eval(row["XYZ_Ang"]), dtype=np.float64)
        count = int(row["N_atoms"])
        assert len(elements) == count
        assert numbers[n, :count].tolist() == [z_of[e] for e in elements]
        assert (numbers[n, count:] == 0).all()
        np.testing.assert_array_equal(positions[n, :count], xyz)
        assert (positions[n, count:] == 0).all()


def _reference_eigenvalues(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The padded 29x29 Coulomb matrix built entry by entry, in bohr."""
    bohr = 1 / 0.529177210903
    matrix = np.zeros((29, 29))
    for i in range(29):
        for j in range(29):
            if numbers[i] == 0 or numbers[j] == 0:
                continue
            if i == j:
                matrix[i, j] = 0.5 * numbers[i] ** 2.4
            else:
                distance = np.sqrt(sum((positions[i, k] - positions[j, k]) ** 2 for k in range(3)))
                matrix[i, j] = numbers[i] * numbers[j] / (distance * bohr)
    values = np.linalg.eigvalsh(matrix)
    return values[np.argsort(-np.abs(values), kind="stable")]


def test_features_are_coulomb_eigenvalues_and_element_counts(small, source_dir, csv_rows):
    _, _, numbers, positions = read_qm9(source_dir, max_molecules=NUM_SMALL)
    features = _arrays(small)["features"]
    assert features.shape == (NUM_SMALL, NUM_FEATURES)
    assert features.dtype == np.float32
    for n in (0, 1, 57, NUM_SMALL - 1):
        expected = _reference_eigenvalues(numbers[n], positions[n])
        np.testing.assert_allclose(features[n, :29], expected, rtol=1e-5, atol=1e-4)
    for n, row in enumerate(csv_rows):
        # Stoichiometry is [#H, #C, #N, #O, #F].
        assert features[n, 29:].tolist() == ast.literal_eval(row["Stoichiometry"])


def test_coulomb_eigenvalues_of_hydrogen_molecule():
    """H2 1 bohr apart: [[0.5, 1], [1, 0.5]] has eigenvalues 1.5 and -0.5."""
    numbers = np.array([[1, 1, 0, 0]])
    positions = np.zeros((1, 4, 3))
    positions[0, 1, 2] = 0.529177210903
    np.testing.assert_allclose(coulomb_eigenvalues(numbers, positions), [[1.5, -0.5, 0, 0]])


def test_split_is_disjoint_seeded_and_normalized(small, source_dir, tmp_path):
    cache = _arrays(small)
    rows = {split: cache[f"{split}_rows"] for split in ("train", "val", "test")}
    assert [len(r) for r in rows.values()] == [250, 50, NUM_SMALL - 300]
    assert np.array_equal(np.sort(np.concatenate(list(rows.values()))), np.arange(NUM_SMALL))
    train_targets = cache["targets"][rows["train"]]
    np.testing.assert_allclose(cache["target_mean"], train_targets.mean(axis=0))
    np.testing.assert_allclose(cache["target_std"], train_targets.std(axis=0))
    again = _arrays(build_qm9(source_dir, tmp_path / "a.npz", **SMALL))
    for key, value in cache.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other = _arrays(build_qm9(source_dir, tmp_path / "b.npz", seed=1, **SMALL))
    assert not np.array_equal(other["train_rows"], rows["train"])


def test_load_standardizes_and_keeps_the_units(small):
    cache = _arrays(small)
    train = load_qm9("train", small.parent)
    assert train.tasks == TASKS
    assert train.inputs.shape == (250, NUM_FEATURES)
    assert train.inputs.dtype == torch.float32
    varying = cache["feature_std"] > 0
    torch.testing.assert_close(
        train.inputs.mean(dim=0)[varying], torch.zeros(int(varying.sum())), atol=1e-5, rtol=0
    )
    for k, task in enumerate(TASKS):
        labels = train.labels[task].double()
        assert labels.mean().item() == pytest.approx(0.0, abs=1e-5)
        assert labels.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
        mean, std = train.target_normalization[task]
        assert (mean, std) == (cache["target_mean"][k], cache["target_std"][k])
    test = load_qm9("test", small.parent)
    mean, std = test.target_normalization["U0"]
    values = test.labels["U0"].double() * std + mean
    np.testing.assert_allclose(values.numpy(), cache["targets"][cache["test_rows"], 6], rtol=1e-6)


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "qm9pack" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="pip install qm9pack"):
        build_qm9(out=tmp_path / "q.npz")
    assert main(["qm9", "--root", str(tmp_path)]) == 2


def test_missing_csv_and_missing_cache(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"qm9_part1\.csv"):
        build_qm9(tmp_path, tmp_path / "q.npz")
    with pytest.raises(FileNotFoundError) as error:
        load_qm9("train", tmp_path)
    assert f"python -m taskprio.data qm9 --root {tmp_path}" in str(error.value)
    assert "pip install qm9pack" in str(error.value)
    assert main(["qm9", "--root", str(tmp_path), "--source-dir", str(tmp_path)]) == 2
    assert "qm9_part1.csv" in capsys.readouterr().err


def test_bad_sizes_are_refused(source_dir, tmp_path):
    with pytest.raises(ValueError, match="leave test molecules"):
        build_qm9(source_dir, tmp_path / "q.npz", num_train=8, num_val=2, max_molecules=10)
    with pytest.raises(ValueError, match="`seed`"):
        build_qm9(source_dir, tmp_path / "q.npz", seed=-1)


def test_full_cache_when_built():
    path = _data_dir() / CACHE_FILENAME
    if not path.is_file():
        pytest.skip(f"{path} not built; run `python -m taskprio.data qm9`")
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["format_version"]) == FORMAT_VERSION
        assert npz["features"].shape == (130_831, NUM_FEATURES)
        assert npz["targets"].shape == (130_831, 11)
        assert [len(npz[f"{s}_rows"]) for s in ("train", "val", "test")] == [
            110_000,
            10_000,
            10_831,
        ]
        assert np.isfinite(npz["features"]).all()
        # PyG's QM9 (eV, atomization energies): mean U0 about -76 eV, mean homo about -6.5 eV.
        assert npz["target_mean"][6] == pytest.approx(-76.1, abs=0.5)
        assert npz["target_mean"][2] == pytest.approx(-6.54, abs=0.05)
