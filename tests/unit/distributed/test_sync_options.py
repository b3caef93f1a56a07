"""GradientSync on one process: the plain step's result, and clear errors for bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import taskprio
from taskprio.distributed import GradientSync

TASKS = ("a", "b")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"trunk": nn.Linear(3, 4), "a": nn.Linear(4, 1), "b": nn.Linear(4, 1)}
    ).double()


def _losses(model: nn.Module) -> dict[str, Tensor]:
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    features = torch.tanh(model["trunk"](x))
    return {"a": model["a"](features).pow(2).mean(), "b": -model["b"](features).mean()}


@pytest.mark.parametrize("method", ["sum", "pcgrad", "mgda_ub"])
@pytest.mark.parametrize("bucket", ["all", "task"])
def test_one_process_takes_the_plain_step(method: str, bucket: str):
    states = []
    for sync in (None, GradientSync(bucket=bucket)):
        model = _model()
        step = taskprio.MultiTaskStep(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            TASKS,
            method=method,
            gradient_sync=sync,
        )
        for _ in range(2):
            x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            features = torch.tanh(model["trunk"](x))
            losses = {"a": model["a"](features).pow(2).mean(), "b": -model["b"](features).mean()}
            step(losses, features=features, sample_counts={"a": 6, "b": 6})
        states.append(copy.deepcopy(model.state_dict()))
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-12, atol=1e-14)


def _step(**options: object) -> taskprio.MultiTaskStep:
    model = _model()
    return taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method="pcgrad",
        gradient_sync=GradientSync(**options),  # type: ignore[arg-type]
    )


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="`bucket` must be one of"):
        GradientSync(bucket="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`buffers` must be one of"):
        GradientSync(buffers="sum")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("counts", "error", "message"),
    [
        ({"a": 6, "c": 1}, KeyError, r"unknown tasks \['c'\]"),
        ({"a": -1, "b": 6}, ValueError, r"`sample_counts\['a'\]` must be a non-negative"),
        ({"a": 6}, KeyError, "no count for task 'b'"),
    ],
)
def test_bad_sample_counts_are_named(counts: dict[str, int], error: type, message: str):
    step = _step()
    with pytest.raises(error, match=message):
        step(_losses(step.model), sample_counts=counts)


def test_a_count_without_a_loss_is_an_error():
    step = _step()
    with pytest.raises(ValueError, match=r"`sample_counts\['b'\]` is 3 but the task has no loss"):
        step({"a": _losses(step.model)["a"]}, sample_counts={"a": 6, "b": 3})


def test_no_loss_anywhere_is_an_error():
    step = _step()
    with pytest.raises(ValueError, match="No task has a loss in this step on any rank"):
        step({})


def test_a_nan_loss_stops_the_step_before_any_change():
    step = _step()
    before = copy.deepcopy(step.model.state_dict())
    losses = _losses(step.model)
    losses["b"] = losses["b"] * float("nan")
    with pytest.raises(FloatingPointError, match="task 'b'"):
        step(losses)
    for key, value in step.model.state_dict().items():
        assert torch.equal(value, before[key])


def test_cso_needs_a_closure_with_sync_too():
    model = _model()
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method=taskprio.methods.CSO(epochs=2, schedule="phase2"),
        gradient_sync=GradientSync(),
    )
    with pytest.raises(TypeError, match="runs one forward per task"):
        step(_losses(model))
