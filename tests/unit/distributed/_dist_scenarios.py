"""Seeded float64 multi-task problems trained for three steps, on one process or on a group.

``run(name)`` trains scenario ``name`` on the current rank's part of each global batch
(:func:`taskprio.distributed.iterate_rank_batches`): in a process group it is synchronized by
:class:`taskprio.distributed.GradientSync`; without one it is the single-process reference on
the whole (concatenated) batch, through the plain :class:`taskprio.MultiTaskStep`.

Data: 21 samples, global batch 7, no shuffling, so with two ranks the shards have 4 and 3
samples (unequal: the counts matter even with every label present). With ``partial``, labels
are masked at random and, by construction, task ``c`` has labels on rank 0's part only in the
second batch and task ``b`` has none at all in the third.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

import taskprio
from taskprio.data import TensorMultiTaskDataset
from taskprio.distributed import (
    GradientSync,
    is_distributed,
    iterate_rank_batches,
    label_counts,
    sync_batch_norms,
)
from taskprio.methods import CSO, GradDrop, PCGrad, WeightedPCGrad
from taskprio.nn import active_task, make_task_specific
from taskprio.weighting import RLW

DTYPE = torch.float64
TASKS = ("a", "b", "c")
GLOBAL_BATCH = 7
STEPS = 3


@dataclass(frozen=True)
class Scenario:
    """One training problem.

    Attributes:
        method: a registry key or a factory of the method (a fresh, seeded one per run).
        weighting: a registry key or a factory of the weighting.
        form: ``"mapping"`` (one forward, ``{task: loss}``), ``"closure"`` (one forward per
            task), ``"features"`` (mapping plus the shared representation).
        partial: mask labels (see the module docstring).
        norms: ``"none"``, or ``"task_bn"`` (task-specific BatchNorm in the trunk, needed by
            CSO), synchronized across ranks unless ``sync_norms`` is False.
        sync: the GradientSync options.
        ddp: wrap the model in DistributedDataParallel (forwards under ``no_sync``).
        average_after: a negative control: no GradientSync; each rank combines its own
            per-task gradients and the combined gradients are averaged (what plain DDP does).
    """

    method: str | Callable[[], Any] = "sum"
    weighting: str | Callable[[], Any] = "equal"
    form: str = "mapping"
    partial: bool = False
    norms: str = "none"
    sync_norms: bool = True
    sync: dict[str, Any] = field(default_factory=dict)
    ddp: bool = False
    average_after: bool = False


SCENARIOS: dict[str, Scenario] = {
    "sum": Scenario(method="sum", partial=True),
    "pcgrad": Scenario(method=lambda: PCGrad(seed=3), partial=True),
    "mgda": Scenario(method="mgda"),
    "cagrad": Scenario(method="cagrad", partial=True),
    "nash_mtl": Scenario(method="nash_mtl"),
    "rlw": Scenario(method="sum", weighting=lambda: RLW(seed=4), partial=True),
    "graddrop": Scenario(method=lambda: GradDrop(seed=5)),
    "wpcgrad": Scenario(method=lambda: WeightedPCGrad(seed=6), partial=True),
    "cso_phase1": Scenario(
        method=lambda: CSO(epochs=4, schedule="phase1", task_order="shuffled", seed=7),
        form="closure",
        norms="task_bn",
    ),
    "cso_phase2": Scenario(
        method=lambda: CSO(epochs=4, schedule="phase2"), form="closure", norms="task_bn"
    ),
    "cso_mixed": Scenario(
        method=lambda: CSO(epochs=4, schedule="mixed", seed=1), form="closure", norms="task_bn"
    ),
    "pcgrad_closure_per_task_bucket": Scenario(
        method=lambda: PCGrad(seed=3), form="closure", partial=True, sync={"bucket": "task"}
    ),
    "mgda_ub": Scenario(method="mgda_ub", form="features", partial=True),
    "famo": Scenario(method="mean", weighting="famo", form="closure"),
    "gradnorm": Scenario(method="sum", weighting="gradnorm", partial=True),
    "pcgrad_ddp_no_sync": Scenario(method=lambda: PCGrad(seed=3), ddp=True, partial=True),
}
"""Scenarios whose synchronized run must equal the single-process reference."""

CONTROLS: dict[str, Scenario] = {
    "pcgrad_average_after": Scenario(method=lambda: PCGrad(seed=3), average_after=True),
    "cso_phase2_local_norms": Scenario(
        method=lambda: CSO(epochs=4, schedule="phase2"),
        form="closure",
        norms="task_bn",
        sync_norms=False,
    ),
}
"""Scenarios that must *not* equal the reference (the comparison can fail)."""


def dataset(*, partial: bool) -> TensorMultiTaskDataset:
    """21 samples of 4 features and three regression targets, two of them conflicting."""
    generator = torch.Generator().manual_seed(0)
    num = STEPS * GLOBAL_BATCH
    x = torch.randn(num, 4, generator=generator, dtype=DTYPE)
    base = x @ torch.randn(4, generator=generator, dtype=DTYPE)
    noise = 0.3 * torch.randn(3, num, generator=generator, dtype=DTYPE)
    labels = {"a": base + noise[0], "b": -base + noise[1], "c": x[:, 0] * x[:, 1] + noise[2]}
    if not partial:
        return TensorMultiTaskDataset(x, labels)
    masks = {t: torch.rand(num, generator=generator) < 0.7 for t in TASKS}
    for t in TASKS:  # at least one label per task in rank 0's part of every batch
        masks[t][0::GLOBAL_BATCH] = True
    masks["c"][GLOBAL_BATCH + 4 : 2 * GLOBAL_BATCH] = False  # batch 2: on rank 0 only
    masks["b"][2 * GLOBAL_BATCH :] = False  # batch 3: nowhere
    return TensorMultiTaskDataset(x, labels, masks)


class SharedModel(nn.Module):
    """A tanh trunk shared by three linear heads; optionally task-specific BatchNorm."""

    def __init__(self, *, norms: str) -> None:
        super().__init__()
        torch.manual_seed(11)
        layers: list[nn.Module] = [nn.Linear(4, 6)]
        if norms == "task_bn":
            layers.append(nn.BatchNorm1d(6))
        layers.append(nn.Tanh())
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS})
        self.to(DTYPE)
        if norms == "task_bn":
            make_task_specific(self, TASKS)
            generator = torch.Generator().manual_seed(12)
            with torch.no_grad():
                for norm in self.trunk[1].norms.values():
                    norm.weight.uniform_(0.5, 2.0, generator=generator)
                    norm.bias.uniform_(-0.5, 0.5, generator=generator)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        return {t: head(features).squeeze(1) for t, head in self.heads.items()}


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor | None:
    """Mean squared error over the labelled samples; None without any."""
    count = int(mask.sum())
    if count == 0:
        return None
    return ((prediction - target) ** 2 * mask).sum() / count


class _AveragingSGD(torch.optim.SGD):
    """SGD that first averages ``.grad`` across ranks: DDP's semantics (the negative control)."""

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        return super().step(closure)


def _build(value: str | Callable[[], Any]) -> Any:
    return value if isinstance(value, str) else value()


def run(name: str) -> dict[str, Any]:
    """Train scenario ``name`` for three steps; the final state and the records."""
    scenario = SCENARIOS.get(name) or CONTROLS[name]
    is_synced = is_distributed() and not scenario.average_after
    model: nn.Module = SharedModel(norms=scenario.norms)
    if is_synced and scenario.norms == "task_bn" and scenario.sync_norms:
        sync_batch_norms(model)
    inner = model
    if scenario.ddp and is_distributed():
        # No DDP bucket reduction: every forward runs under no_sync(), GradientSync reduces.
        model = nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    optimizer_class = _AveragingSGD if scenario.average_after and is_distributed() else None
    optimizer = (optimizer_class or torch.optim.SGD)(model.parameters(), lr=0.1, momentum=0.9)
    step = taskprio.MultiTaskStep(
        model,
        optimizer,
        TASKS,
        method=_build(scenario.method),
        weighting=_build(scenario.weighting),
        gradient_sync=GradientSync(**scenario.sync) if is_synced else None,
    )
    data = dataset(partial=scenario.partial)
    records = []
    for epoch, (x, labels, masks) in enumerate(
        iterate_rank_batches(data, GLOBAL_BATCH, shuffle=False, generator=None)
    ):
        counts = label_counts(masks)
        context = (
            model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else None
        )
        if context is not None:
            context.__enter__()
        try:
            record = _one_step(scenario, step, inner, model, x, labels, masks, counts, epoch)
        finally:
            if context is not None:
                context.__exit__(None, None, None)
        records.append(
            {"losses": record.losses, "weights": record.weights, "phase": record.phase or ""}
        )
    state = {k: v.detach().clone() for k, v in inner.state_dict().items() if v.is_floating_point()}
    result: dict[str, Any] = {"state": state, "records": records}
    method = step.method
    if isinstance(method, CSO):
        shares = method.priority_map()
        result["owners"] = {c.name: c.owner(TASKS).tolist() for c in method.connections}
        result["num_connections"] = len(shares.layers)
    return result


def _one_step(
    scenario: Scenario,
    step: taskprio.MultiTaskStep,
    inner: nn.Module,
    model: nn.Module,
    x: Tensor,
    labels: dict[str, Tensor],
    masks: dict[str, Tensor],
    counts: dict[str, Tensor],
    epoch: int,
) -> taskprio.StepRecord:
    if scenario.form == "closure":

        def task_loss(task: str) -> Tensor | None:
            with active_task(inner, task):
                prediction = model(x)[task]
            return masked_mse(prediction, labels[task], masks[task])

        return step(task_loss, epoch=epoch, sample_counts=counts)
    if scenario.form == "features":
        assert isinstance(inner, SharedModel)
        features = inner.trunk(x)
        outputs = {t: head(features).squeeze(1) for t, head in inner.heads.items()}
    else:
        outputs = model(x)
    losses = {t: masked_mse(outputs[t], labels[t], masks[t]) for t in TASKS}
    present = {t: loss for t, loss in losses.items() if loss is not None}
    if scenario.form == "features":
        return step(present, epoch=epoch, sample_counts=counts, features=features)
    return step(present, epoch=epoch, sample_counts=counts)
