"""Yeast from river's yeast.csv.gz: reading, split, standardization, errors."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from taskprio.data import build_yeast, data_root, load_yeast
from taskprio.data.__main__ import main
from taskprio.data._yeast import CACHE_FILENAME, SPLIT_SIZES, TASKS, read_yeast, yeast_source

REPO_ROOT = Path(__file__).resolve().parents[3]


def _data_dir() -> Path:
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


@pytest.fixture(scope="module")
def source() -> Path:
    if importlib.util.find_spec("river") is None:
        pytest.skip("river is not installed; `pip install river`")
    return yeast_source()


@pytest.fixture(scope="module")
def built(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_yeast(source, tmp_path_factory.mktemp("yeast") / CACHE_FILENAME)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


def test_source(source):
    features, labels = read_yeast(source)
    assert features.shape == (2_417, 103)
    assert labels.shape == (2_417, 14)
    assert labels.dtype == np.uint8
    # Label frequencies 0.014 .. 0.751 (data-sources.md §1.4).
    frequencies = labels.mean(axis=0)
    assert frequencies.min() == pytest.approx(0.014, abs=5e-4)
    assert frequencies.max() == pytest.approx(0.751, abs=5e-4)
    with gzip.open(source, "rt", newline="") as file:
        reader = csv.reader(file)
        header = next(reader)
        first = next(reader)
    assert header[0] == "Att1"
    assert header[-1] == "Class14"
    np.testing.assert_array_equal(features[0], np.asarray(first[:103], dtype=np.float64))
    assert labels[0].tolist() == [int(v) for v in first[103:]]


def test_split_is_disjoint_complete_and_seeded(built, source, tmp_path):
    cache = _arrays(built)
    rows = {split: cache[f"{split}_rows"] for split in SPLIT_SIZES}
    assert {split: len(r) for split, r in rows.items()} == {"train": 1_500, "val": 417, "test": 500}
    assert np.array_equal(np.sort(np.concatenate(list(rows.values()))), np.arange(2_417))
    again = _arrays(build_yeast(source, tmp_path / "a.npz"))
    for key, value in cache.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other = _arrays(build_yeast(source, tmp_path / "b.npz", seed=1))
    assert not np.array_equal(other["train_rows"], rows["train"])


def test_load_standardizes_with_train_statistics(built):
    cache = _arrays(built)
    train = load_yeast("train", built.parent)
    assert train.tasks == TASKS
    assert train.inputs.shape == (1_500, 103)
    assert train.inputs.dtype == torch.float32
    torch.testing.assert_close(train.inputs.mean(dim=0), torch.zeros(103), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        train.inputs.std(dim=0, unbiased=False), torch.ones(103), atol=1e-4, rtol=0
    )
    test = load_yeast("test", built.parent)
    assert len(test) == 500
    expected = cache["labels"][cache["test_rows"]]
    for k, task in enumerate(TASKS):
        assert test.labels[task].dtype == torch.float32
        np.testing.assert_array_equal(test.labels[task].numpy(), expected[:, k])


def test_missing_river_names_the_pip_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "river" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="pip install river"):
        build_yeast(out=tmp_path / "y.npz")
    assert main(["yeast", "--root", str(tmp_path)]) == 2


def test_missing_file_and_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"yeast\.csv\.gz"):
        read_yeast(tmp_path / "yeast.csv.gz")
    with pytest.raises(FileNotFoundError) as error:
        load_yeast("val", tmp_path)
    assert f"python -m taskprio.data yeast --root {tmp_path}" in str(error.value)


def test_wrong_file_is_refused(tmp_path):
    path = tmp_path / "yeast.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write("a,b\n1,2\n")
    with pytest.raises(ValueError, match="Att1"):
        read_yeast(path)


def test_full_cache_when_built():
    path = _data_dir() / CACHE_FILENAME
    if not path.is_file():
        pytest.skip(f"{path} not built; run `python -m taskprio.data yeast`")
    assert len(load_yeast("train", path.parent)) == 1_500
