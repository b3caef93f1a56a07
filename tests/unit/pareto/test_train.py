"""train_pareto end to end on tiny synthetic data, and a few steps on the cached benchmarks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _pareto_inputs import TASKS, data_dir, regression_splits, small_qm9, subset

from taskprio.data import get_benchmark
from taskprio.pareto import (
    LORPMAN,
    AtPreference,
    evaluate_front,
    hypervolume,
    train_pareto,
)
from taskprio.pareto._evaluate import _mean_losses

TWO_POINTS = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("method", "options"),
    [("lorpman", {"rank": 2}), ("pamal", {}), ("cosmos", {"cosine_weight": 2.0})],
)
def test_every_method_trains_and_reports_a_front(method, options):
    splits = regression_splits()
    run = train_pareto(
        small_qm9(), method=method, tasks=TASKS, epochs=1, splits=splits, seed=3, **options
    )
    assert run.method == method and run.tasks == TASKS and run.steps == 3
    assert len(run.test.preferences) == 11 and run.objectives == ["mu/mae", "alpha/mae"]
    assert run.maximize == [False, False]
    # MAE reference: the std of the training targets, in target units (std × scale).
    expected_reference = [
        float(splits["train"].labels[task].double().std(unbiased=False)) * scale
        for task, scale in (("mu", 2.0), ("alpha", 0.5))
    ]
    assert run.reference_point == pytest.approx(expected_reference)
    assert run.hypervolume == pytest.approx(
        hypervolume(run.metric_front(), run.reference_point, maximize=False)
    )
    assert run.loss_hypervolume == pytest.approx(
        hypervolume(run.loss_front(), run.loss_reference_point)
    )
    assert run.num_parameters == sum(p.numel() for p in run.model.parameters())
    assert run.num_main_parameters < run.num_parameters
    assert all(math.isfinite(v) for v in run.epoch_records[-1].values())
    record = run.to_dict()
    assert "model" not in record
    text = json.dumps(record, allow_nan=False)
    assert json.loads(text)["test"]["metrics"][0]["mu"]["mae"] == run.test.metrics[0]["mu"]["mae"]


def test_runs_are_reproducible_from_the_seed():
    def run(seed):
        result = train_pareto(
            small_qm9(), method="lorpman", tasks=TASKS, epochs=1, splits=regression_splits(),
            seed=seed, rank=2, eval_preferences=TWO_POINTS,
        )  # fmt: skip
        return {k: v for k, v in result.to_dict().items() if not k.endswith("time_s")}

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_one_pass_losses_equal_a_separate_pass():
    splits = regression_splits()
    benchmark = small_qm9()
    run = train_pareto(
        benchmark, method="pamal", tasks=TASKS, epochs=1, splits=splits, eval_preferences=TWO_POINTS
    )
    evaluation = evaluate_front(benchmark, run.model, splits["test"], TWO_POINTS, batch_size=7)
    for preference, losses in zip(TWO_POINTS, evaluation.losses, strict=True):
        separate = _mean_losses(benchmark, AtPreference(run.model, preference), splits["test"], 7)
        assert losses == pytest.approx(separate, rel=1e-6)
    # Batch boundaries do not change the means.
    whole = evaluate_front(benchmark, run.model, splits["test"], TWO_POINTS, batch_size=1024)
    for ours, theirs in zip(evaluation.losses, whole.losses, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)


def test_option_errors():
    with pytest.raises(ValueError, match="instance"):
        train_pareto(small_qm9(), method=LORPMAN(), rank=2, splits=regression_splits())
    with pytest.raises(ValueError, match="'train' and 'test'"):
        train_pareto(small_qm9(), tasks=TASKS, splits={"train": regression_splits()["train"]})
    with pytest.raises(ValueError, match="reference_point"):
        train_pareto(
            small_qm9(), method="cosmos", tasks=TASKS, epochs=1, splits=regression_splits(),
            reference_point=[1.0], eval_preferences=TWO_POINTS,
        )  # fmt: skip


def test_plot_of_a_run(tmp_path):
    run = train_pareto(
        small_qm9(), method="cosmos", tasks=TASKS, epochs=1, splits=regression_splits(),
        eval_preferences=TWO_POINTS,
    )  # fmt: skip
    assert run.plot(tmp_path / "front.png").is_file()
    assert run.plot(tmp_path / "loss.png", losses=True).is_file()


def _cached(name, size):
    benchmark = get_benchmark(name)
    try:
        splits = {s: subset(benchmark.load(s, data_dir()), size) for s in ("train", "test")}
    except FileNotFoundError as error:
        pytest.skip(f"{name} cache not built: {error}")
    return benchmark, splits


def test_yeast_few_steps_on_the_cached_data():
    benchmark, splits = _cached("yeast", 256)
    run = train_pareto(
        benchmark,
        method="lorpman",
        epochs=1,
        max_steps_per_epoch=3,
        splits=splits,
        rank=2,
        recalibration_batches=1,
    )
    assert run.steps == 3 and len(run.tasks) == 14
    assert len(run.test.preferences) == 15  # 14 vertices and the centroid
    assert run.reference_point == [0.0] * 14 and run.maximize == [True] * 14
    assert 0 < run.hypervolume < 1


def test_multimnist_few_steps_on_the_cached_data():
    benchmark, splits = _cached("multimnist", 128)
    run = train_pareto(
        benchmark, method="lorpman", epochs=1, max_steps_per_epoch=2, batch_size=64,
        splits=splits, eval_preferences=TWO_POINTS,
    )  # fmt: skip
    assert run.steps == 2 and run.num_parameters == 43_450
    front = run.metric_front()
    assert front.shape == (3, 2) and ((front >= 0) & (front <= 1)).all()
