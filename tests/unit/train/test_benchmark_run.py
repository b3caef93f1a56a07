"""Training any benchmark, single-task baselines and Δm against them (on yeast: fast)."""

from __future__ import annotations

import math

import pytest

from taskprio.data import data_root, get_benchmark
from taskprio.train import benchmark_delta_m, single_task_baselines, train_benchmark

TASKS = ["class1", "class2", "class3"]


@pytest.fixture(scope="module")
def yeast():
    if not (data_root() / "yeast.npz").is_file():
        pytest.skip(f"yeast cache not found at {data_root() / 'yeast.npz'}; run `make data`")
    return get_benchmark("yeast", epochs=1)


def test_same_seed_same_run_and_delta_m_of_a_baseline_is_zero(yeast):
    first = train_benchmark(yeast, tasks=TASKS, seed=3)
    second = train_benchmark(yeast, tasks=TASKS, seed=3)
    assert first.test == second.test
    assert set(first.test) == set(TASKS)
    baselines = single_task_baselines(yeast, tasks=TASKS, seed=3)
    assert set(baselines) == set(TASKS)
    one = baselines["class1"]
    assert benchmark_delta_m(yeast, one, {"class1": one}) == 0.0
    value = benchmark_delta_m(yeast, first, baselines)
    assert math.isfinite(value)


def test_task_norms_and_cso_through_the_closure_form(yeast):
    from taskprio.methods import CSO

    run = train_benchmark(
        yeast, tasks=TASKS, method=CSO(epochs=1), task_specific_norms=True, seed=0
    )
    assert run.method == "cso"
    assert all(math.isfinite(v) for loss in run.epoch_losses for v in loss.values())
    for task in TASKS:
        assert 0.0 <= run.test[task]["acc"] <= 1.0
