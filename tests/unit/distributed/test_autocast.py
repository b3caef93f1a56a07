"""Under ``torch.autocast`` (bf16 on the CPU) forwards run in bf16, the aggregation in float32."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

import taskprio
from taskprio.distributed import GradientSync
from taskprio.methods import Method
from taskprio.nn import active_task, make_task_specific
from taskprio.weighting import Weighting

TASKS = ("a", "b")


class SpyMethod(Method):
    """The plain sum, recording the precision it runs at."""

    name = "spy_precision"
    summary = "test only"

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        gramian = per_task_grads @ per_task_grads.T
        self.seen = {
            "matrix": per_task_grads.dtype,
            "gramian": gramian.dtype,
            "autocast": torch.is_autocast_enabled("cpu"),
        }
        return per_task_grads.sum(dim=0)


class SpyWeighting(Weighting):
    """Equal weights, recording the dtype of the losses it is given."""

    name = "spy_losses"
    summary = "test only"

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        self.loss_dtype = losses.dtype
        return torch.ones_like(losses)


def _model() -> nn.Module:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh())
    heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in TASKS})
    return make_task_specific(nn.ModuleDict({"trunk": trunk, "heads": heads}), TASKS)


def _data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=generator), torch.randn(16, 2, generator=generator)


def _closure(model: nn.Module, forward_dtypes: list[torch.dtype]):
    x, y = _data()

    def task_loss(task: str) -> Tensor:
        with active_task(model, task):
            prediction = model["heads"][task](model["trunk"](x)).squeeze(1)
        forward_dtypes.append(prediction.dtype)
        # Written in plain ops, so under autocast the loss itself is bf16.
        return (prediction - y[:, TASKS.index(task)].to(prediction.dtype)).pow(2).mean()

    return task_loss


@pytest.mark.parametrize("gradient_sync", [None, GradientSync()], ids=["plain", "synced"])
def test_aggregation_runs_in_float32_under_bf16_autocast(gradient_sync: GradientSync | None):
    model = _model()
    method, weighting = SpyMethod(), SpyWeighting()
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method=method,
        weighting=weighting,
        gradient_sync=gradient_sync,
    )
    forward_dtypes: list[torch.dtype] = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step(_closure(model, forward_dtypes))
        assert torch.is_autocast_enabled("cpu")  # the caller's autocast is restored
    assert forward_dtypes == [torch.bfloat16, torch.bfloat16]  # the forwards kept autocast
    assert method.seen == {
        "matrix": torch.float32,
        "gramian": torch.float32,
        "autocast": False,
    }
    assert weighting.loss_dtype == torch.float32


def test_mapping_form_under_bf16_autocast_matches_float32_closely():
    """PCGrad's step under autocast is the float32 step up to bf16 forward rounding."""
    x, y = _data()
    results = []
    for is_autocast in (False, True):
        model = nn.ModuleDict(
            {"trunk": nn.Linear(4, 8), "a": nn.Linear(8, 1), "b": nn.Linear(8, 1)}
        )
        model.load_state_dict(copy.deepcopy(_reference_state()))
        step = taskprio.MultiTaskStep(
            model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method="pcgrad"
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=is_autocast):
            features = torch.tanh(model["trunk"](x))
            losses = {
                t: (model[t](features).squeeze(1) - y[:, k]).pow(2).mean()
                for k, t in enumerate(TASKS)
            }
            record = step(losses)
        assert record.losses.keys() == set(TASKS)
        results.append([p.detach().clone() for p in model.parameters()])
        assert all(p.dtype == torch.float32 for p in model.parameters())
    for full, mixed in zip(*results, strict=True):
        torch.testing.assert_close(mixed, full, rtol=0.0, atol=2e-2)


def _reference_state() -> dict[str, Tensor]:
    torch.manual_seed(2)
    model = nn.ModuleDict({"trunk": nn.Linear(4, 8), "a": nn.Linear(8, 1), "b": nn.Linear(8, 1)})
    return model.state_dict()
