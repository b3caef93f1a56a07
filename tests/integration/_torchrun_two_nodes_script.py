"""A tiny multi-task benchmark trained with CSO for four steps: ``python THIS OUT``.

Launched by ``torchrun`` (any number of nodes and processes) it trains on the global batch
with :class:`taskprio.distributed.GradientSync` and synchronized task norms, and rank 0
writes the parameters to OUT; run by plain ``python`` it is one process on the whole batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

import taskprio
from taskprio.data import TensorMultiTaskDataset
from taskprio.distributed import (
    GradientSync,
    broadcast_module,
    broadcast_seed,
    init_from_env,
    iterate_rank_batches,
    label_counts,
    shutdown,
    sync_batch_norms,
)
from taskprio.methods import CSO
from taskprio.nn import active_task, make_task_specific

TASKS = ("digit", "size")
GLOBAL_BATCH = 8
EPOCHS = 2


def tiny_benchmark() -> TensorMultiTaskDataset:
    """16 samples of 6 features: a 3-class label and a regression target."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=generator, dtype=torch.float64)
    digit = (x[:, :3] @ torch.randn(3, 3, generator=generator, dtype=torch.float64)).argmax(1)
    size = x[:, 3] - 2 * x[:, 4] * x[:, 5]
    return TensorMultiTaskDataset(x, {"digit": digit, "size": size})


def train() -> tuple[bool, dict[str, Tensor]]:
    """Train; (is rank 0, the final parameters and running statistics, the same on every rank)."""
    info = init_from_env(timeout_s=60)
    seed = broadcast_seed(5)
    torch.manual_seed(seed + info.rank)  # a different init per rank, undone by broadcast_module
    trunk = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh())
    model = nn.ModuleDict(
        {"trunk": trunk, "digit": nn.Linear(8, 3), "size": nn.Linear(8, 1)}
    ).double()
    model = make_task_specific(model, TASKS)
    is_distributed = info.world_size > 1
    if is_distributed:
        sync_batch_norms(model)
        broadcast_module(model)  # every rank starts from rank 0's initialization
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        TASKS,
        method=CSO(epochs=EPOCHS, seed=seed),
        gradient_sync=GradientSync() if is_distributed else None,
    )
    data = tiny_benchmark()
    generator = torch.Generator().manual_seed(seed)  # the same batch order on every rank
    for epoch in range(EPOCHS):
        for x, labels, masks in iterate_rank_batches(
            data, GLOBAL_BATCH, shuffle=True, generator=generator
        ):

            def task_loss(task: str, x: Tensor = x, labels: dict[str, Tensor] = labels) -> Tensor:
                with active_task(model, task):
                    out = model[task](model["trunk"](x))
                if task == "digit":
                    return nn.functional.cross_entropy(out, labels[task])
                return nn.functional.mse_loss(out.squeeze(1), labels[task])

            step(task_loss, epoch=epoch, sample_counts=label_counts(masks))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    shutdown()
    return info.is_main_process, state


if __name__ == "__main__":
    is_main, final = train()
    if is_main:
        torch.save(final, Path(sys.argv[1]))
