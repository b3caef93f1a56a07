"""Front evaluation: per-α norm recalibration, restored statistics, reference points."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from _pareto_inputs import TASKS, TwoHeadConvNet, regression_splits, small_qm9, subset

from taskprio.models import MultiTaskMLP
from taskprio.pareto import (
    COSMOSModel,
    PaMaLModel,
    evaluate_front,
    loss_reference_point,
    metric_reference_point,
    train_pareto,
)


def _trained_members():
    torch.manual_seed(0)
    members = [MultiTaskMLP(34, dict.fromkeys(TASKS, 1), hidden_sizes=(12,), head_hidden=6)]
    members.append(MultiTaskMLP(34, dict.fromkeys(TASKS, 1), hidden_sizes=(12,), head_hidden=6))
    for member in members:  # give every member's norms some statistics of their own
        member(torch.randn(32, 34) * 3 + 1)
    return members


def test_recalibrated_vertex_is_the_member_with_its_own_statistics():
    benchmark = small_qm9()
    splits = regression_splits()
    members = _trained_members()
    model = PaMaLModel(members, TASKS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vertex = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    result = evaluate_front(
        benchmark, model, splits["test"], vertex,
        recalibration_data=splits["train"], recalibration_batches=2, recalibration_batch_size=16,
    )  # fmt: skip
    # Reference: member 1 alone, its BatchNorm reset and averaged over the same 32 samples.
    reference = copy.deepcopy(members[1])
    norm = reference.trunk[1]
    norm.reset_running_stats()
    norm.momentum = None
    reference.train()
    with torch.no_grad():
        reference(splits["train"].inputs[:16])
        reference(splits["train"].inputs[16:32])
    expected = benchmark.evaluate(reference, splits["test"], tasks=TASKS)
    for task in TASKS:
        assert result.metrics[0][task]["mae"] == pytest.approx(expected[task]["mae"], rel=1e-6)
    # The model's own statistics and modes are back, bit for bit.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert members[0].trunk[1].momentum == 0.1 and model.training
    # Without recalibration the shared (first member's) statistics are used: another result.
    plain = evaluate_front(benchmark, model, splits["test"], vertex)
    assert plain.metrics[0]["mu"]["mae"] != pytest.approx(result.metrics[0]["mu"]["mae"])


def test_model_factory_replaces_the_benchmarks_network():
    def factory(tasks):
        return MultiTaskMLP(34, dict.fromkeys(tasks, 1), hidden_sizes=(5,), batch_norm=False)

    run = train_pareto(
        small_qm9(), method="cosmos", tasks=TASKS, epochs=1, splits=regression_splits(),
        model_factory=factory, eval_preferences=torch.tensor([[0.5, 0.5]]),
    )  # fmt: skip
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in run.model.modules())
    assert run.model.model.trunk[0].in_features == 36


def test_cosmos_warns_when_a_norm_follows_its_input_layer(caplog):
    with caplog.at_level(logging.WARNING, logger="taskprio.pareto._cosmos"):
        COSMOSModel(TwoHeadConvNet(), ["left", "right"])
    assert "BatchNorm2d" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="taskprio.pareto._cosmos"):
        COSMOSModel(MultiTaskMLP(3, {"a": 1, "b": 1}, batch_norm=False), ["a", "b"])
    assert caplog.text == ""


def test_reference_points():
    benchmark = small_qm9()
    train = regression_splits()["train"]
    specs = benchmark.select(TASKS)
    variances = [float(train.labels[t].double().var(unbiased=False)) for t in TASKS]
    assert loss_reference_point(specs, train) == pytest.approx(variances)
    masked = train.with_masks(
        {t: torch.arange(len(train)) < 10 for t in TASKS}
    )  # only the first 10 labels count
    expected = [float(train.labels["mu"][:10].double().std(unbiased=False)) * 2.0]
    assert metric_reference_point(specs[:1], masked) == pytest.approx(expected)
    assert metric_reference_point(specs[:1], subset(train, 10)) == pytest.approx(expected)
