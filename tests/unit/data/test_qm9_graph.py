"""QM9 as graphs: the same molecules and split as ``qm9``, atoms and positions, MPNN training."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import taskprio
from taskprio.data import (
    build_qm9,
    build_qm9_graph,
    data_root,
    get_benchmark,
    load_qm9,
    load_qm9_graph,
)
from taskprio.data.__main__ import main
from taskprio.data._qm9 import CACHE_FILENAME as QM9_CACHE
from taskprio.data._qm9 import TASKS, qm9pack_data_dir, read_qm9
from taskprio.data._qm9_graph import CACHE_FILENAME, FORMAT_VERSION
from taskprio.methods import CSO
from taskprio.nn import active_task

REPO_ROOT = Path(__file__).resolve().parents[3]
NUM_SMALL = 300
SMALL = {"num_train": 200, "num_val": 40, "max_molecules": NUM_SMALL}
# A small MPNN keeps the training tests fast.
SMALL_MODEL = {"width": 16, "num_blocks": 1, "num_rbf": 6, "head_hidden": 8}


def _data_dir() -> Path:
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def source_dir() -> Path:
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed; `pip install qm9pack`")
    return qm9pack_data_dir()


@pytest.fixture(scope="module")
def small_root(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with small builds of both caches, from the same arguments."""
    root = tmp_path_factory.mktemp("qm9_graph")
    build_qm9(source_dir, root / QM9_CACHE, **SMALL)
    build_qm9_graph(source_dir, root / CACHE_FILENAME, **SMALL)
    return root


def test_same_molecules_split_and_normalization_as_qm9(small_root):
    graph, fixed = _arrays(small_root / CACHE_FILENAME), _arrays(small_root / QM9_CACHE)
    keys = ["train_rows", "val_rows", "test_rows", "index", "targets", "target_mean"]
    for key in [*keys, "target_std", "tasks", "seed", "source_sha256"]:
        np.testing.assert_array_equal(graph[key], fixed[key], err_msg=key)
    assert [len(graph[f"{s}_rows"]) for s in ("train", "val", "test")] == [200, 40, 60]
    assert int(graph["format_version"]) == FORMAT_VERSION


def test_atoms_and_positions_follow_the_csv(small_root, source_dir):
    _, _, numbers, positions = read_qm9(source_dir, max_molecules=NUM_SMALL)
    cache = _arrays(small_root / CACHE_FILENAME)
    assert cache["atomic_numbers"].dtype == np.int8
    assert cache["positions"].dtype == np.float32
    np.testing.assert_array_equal(cache["atomic_numbers"], numbers)
    np.testing.assert_array_equal(cache["positions"], positions.astype(np.float32))
    assert cache["atomic_numbers"][0, :6].tolist() == [6, 1, 1, 1, 1, 0]  # methane


def test_load_gives_atoms_positions_and_the_labels_of_qm9(small_root, source_dir):
    _, _, numbers, positions = read_qm9(source_dir, max_molecules=NUM_SMALL)
    for split in ("train", "test"):
        graph, fixed = load_qm9_graph(split, small_root), load_qm9(split, small_root)
        rows = _arrays(small_root / CACHE_FILENAME)[f"{split}_rows"]
        assert graph.inputs.shape == (len(rows), 29, 4)
        assert graph.inputs.dtype == torch.float32
        assert graph.inputs[..., 0].tolist() == numbers[rows].tolist()
        expected = torch.from_numpy(positions[rows].astype(np.float32))
        assert torch.equal(graph.inputs[..., 1:], expected)
        assert graph.tasks == TASKS
        assert graph.target_normalization == fixed.target_normalization
        for task in TASKS:
            assert torch.equal(graph.labels[task], fixed.labels[task]), task


def test_benchmark_shares_the_tasks_of_qm9():
    graph, fixed = get_benchmark("qm9_graph"), get_benchmark("qm9")
    assert graph.tasks == fixed.tasks
    assert graph.input_shape == (29, 4)


def _steps(model, benchmark, data, method, *, use_task_norms: bool, num_steps: int):
    """Run ``num_steps`` MultiTaskSteps on the first batches; return the records."""
    step = taskprio.MultiTaskStep(
        model, torch.optim.Adam(model.parameters(), lr=1e-2), benchmark.task_names, method=method
    )
    batches = benchmark.batches(data, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    records = []
    for epoch, (x, labels, masks) in zip(range(num_steps), batches, strict=False):
        if use_task_norms:

            def task_loss(task: str, x=x, labels=labels, masks=masks) -> torch.Tensor:
                with active_task(model, task):
                    prediction = model.forward_task(x, task)
                return benchmark.task(task).loss(prediction, labels[task], masks[task])

            records.append(step(task_loss, epoch=epoch))
        else:
            records.append(step(benchmark.losses(model(x), labels, masks), epoch=epoch))
    return records


def test_linear_scalarization_lowers_the_loss(small_root):
    torch.manual_seed(0)
    benchmark = get_benchmark("qm9_graph", **SMALL_MODEL)
    data = benchmark.load("train", small_root)
    model = benchmark.make_model()
    x, labels, masks = next(benchmark.batches(data, 64, shuffle=False, generator=None))
    step = taskprio.MultiTaskStep(
        model, torch.optim.Adam(model.parameters(), lr=1e-2), benchmark.task_names
    )
    # Each record holds the losses before its update: the same batch, 8 times.
    totals = [
        sum(step(benchmark.losses(model(x), labels, masks)).losses.values()) for _ in range(8)
    ]
    assert totals[-1] < 0.7 * totals[0]


def test_trains_with_task_norms_and_with_cso(small_root):
    torch.manual_seed(0)
    benchmark = get_benchmark("qm9_graph", **SMALL_MODEL)
    data = benchmark.load("train", small_root)
    model = benchmark.make_model(task_norms=True)
    records = _steps(model, benchmark, data, "sum", use_task_norms=True, num_steps=2)
    assert all(set(r.losses) == set(TASKS) for r in records)
    # CSO: Phase 1 in epoch 0, Phase 2 in epoch 1 (a schedule over 2 epochs).
    model = benchmark.make_model(task_norms=True)
    before = [p.detach().clone() for p in model.parameters()]
    cso = CSO(epochs=2, schedule="sequential")
    records = _steps(model, benchmark, data, cso, use_task_norms=True, num_steps=2)
    assert [r.phase for r in records] == ["phase1", "phase2"]
    assert all(math.isfinite(v) for r in records for v in r.losses.values())
    found = [c.name for c in cso.connections]
    assert found == [
        "blocks.0.atom_in", "blocks.0.update_in", "blocks.0.update_out", "atom_out.0",
        "molecule.0",
    ]  # fmt: skip
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    maes = benchmark.evaluate(model, benchmark.load("val", small_root), 64)
    assert set(maes) == set(TASKS)
    assert all(math.isfinite(m["mae"]) and m["mae"] > 0 for m in maes.values())


def test_missing_cache_names_the_command(tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as error:
        load_qm9_graph("train", tmp_path)
    assert f"python -m taskprio.data qm9_graph --root {tmp_path}" in str(error.value)
    assert "pip install qm9pack" in str(error.value)
    with pytest.raises(ValueError, match="`split`"):
        load_qm9_graph("dev", tmp_path)  # type: ignore[arg-type]
    assert main(["qm9_graph", "--root", str(tmp_path), "--source-dir", str(tmp_path)]) == 2
    assert "qm9_part1.csv" in capsys.readouterr().err


def test_bad_sizes_are_refused(source_dir, tmp_path):
    with pytest.raises(ValueError, match="leave test molecules"):
        build_qm9_graph(source_dir, tmp_path / "g.npz", num_train=8, num_val=2, max_molecules=10)
    with pytest.raises(ValueError, match="`seed`"):
        build_qm9_graph(source_dir, tmp_path / "g.npz", seed=-1)


def test_full_cache_has_the_split_of_qm9():
    graph_path, fixed_path = _data_dir() / CACHE_FILENAME, _data_dir() / QM9_CACHE
    for path, name in ((graph_path, "qm9_graph"), (fixed_path, "qm9")):
        if not path.is_file():
            pytest.skip(f"{path} not built; run `python -m taskprio.data {name}`")
    with np.load(graph_path, allow_pickle=False) as graph, np.load(fixed_path) as fixed:
        assert int(graph["format_version"]) == FORMAT_VERSION
        assert graph["atomic_numbers"].shape == (130_831, 29)
        assert graph["positions"].shape == (130_831, 29, 3)
        for key in ("train_rows", "val_rows", "test_rows", "index", "target_mean", "target_std"):
            np.testing.assert_array_equal(graph[key], fixed[key], err_msg=key)
        assert [len(graph[f"{s}_rows"]) for s in ("train", "val", "test")] == [
            110_000,
            10_000,
            10_831,
        ]
