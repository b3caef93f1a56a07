"""Train any registered benchmark with a method and weighting; single-task baselines; Δm."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from taskprio.data import Benchmark, iterate_masked_batches
from taskprio.methods import Method
from taskprio.metrics import delta_m
from taskprio.nn import active_task, task_norms
from taskprio.optim import MultiTaskStep
from taskprio.weighting import Weighting


@dataclass
class BenchmarkRun:
    """The outcome of :func:`train_benchmark`.

    Attributes:
        benchmark: the benchmark's name.
        tasks: the tasks trained.
        method: the method's registry key.
        seed: the seed of the model's initialization and the batch order.
        epochs: epochs trained.
        val: task → metric → value on the validation split after the last epoch.
        test: the same on the test split.
        epoch_losses: per epoch, task → mean training loss.
        train_time_s: wall time in training steps.
    """

    benchmark: str
    tasks: tuple[str, ...]
    method: str
    seed: int
    epochs: int
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0


def train_benchmark(
    benchmark: Benchmark,
    *,
    method: Method | str = "sum",
    weighting: Weighting | str = "equal",
    tasks: Sequence[str] | None = None,
    task_specific_norms: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    root: Path | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> BenchmarkRun:
    """Train ``benchmark``'s model with Adam at the benchmark's defaults; evaluate val and test.

    Masked labels (partial supervision) are honoured: a task without labels in a batch is left
    out of that step. With task-specific norms the step runs one forward per task (closure).

    Args:
        benchmark: the spec (:func:`taskprio.data.get_benchmark`).
        method: the aggregation method.
        weighting: the loss weighting.
        tasks: a subset of the tasks (one task: a single-task baseline); None: all.
        task_specific_norms: convert the trunk's norms to task-specific ones (CSO needs it).
        epochs: overrides the benchmark's default.
        seed: seeds the initialization and the batch order.
        root: the data root.
        device: where to train.
        on_epoch: called after each epoch with its index and mean training losses.

    Returns:
        A :class:`BenchmarkRun`.
    """
    names = benchmark.select(tasks)
    task_names = tuple(spec.name for spec in names)
    epochs = benchmark.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    model = benchmark.make_model(task_names, task_norms=task_specific_norms).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=benchmark.lr)
    step = MultiTaskStep(model, optimizer, task_names, method=method, weighting=weighting)
    splits = {s: benchmark.load(s, root).to(device) for s in ("train", "val", "test")}
    generator = torch.Generator().manual_seed(seed)
    is_closure = bool(task_norms(model))
    run = BenchmarkRun(
        benchmark=benchmark.name, tasks=task_names, method=step.method.name, seed=seed,
        epochs=epochs,
    )  # fmt: skip
    for epoch in range(epochs):
        model.train()
        sums = dict.fromkeys(task_names, 0.0)
        counts = dict.fromkeys(task_names, 0)
        started = time.perf_counter()
        for x, labels, masks in iterate_masked_batches(
            splits["train"], benchmark.batch_size, shuffle=True, generator=generator
        ):
            if is_closure:
                closure = _task_loss_closure(benchmark, model, x, labels, masks)
                record = step(closure, epoch=epoch)
            else:
                outputs = model(x)
                losses = benchmark.losses({t: outputs[t] for t in task_names}, labels, masks)
                record = step(losses, epoch=epoch)
            for task, value in record.losses.items():
                sums[task] += value
                counts[task] += 1
        run.train_time_s += time.perf_counter() - started
        epoch_loss = {t: sums[t] / counts[t] if counts[t] else float("nan") for t in task_names}
        run.epoch_losses.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    run.val = benchmark.evaluate(model, splits["val"], tasks=task_names)
    run.test = benchmark.evaluate(model, splits["test"], tasks=task_names)
    return run


def _task_loss_closure(
    benchmark: Benchmark,
    model: torch.nn.Module,
    x: Tensor,
    labels: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None,
) -> Callable[[str], Tensor | None]:
    def task_loss(task: str) -> Tensor | None:
        with active_task(model, task):
            output = model.forward_task(x, task)  # type: ignore[operator]
        return benchmark.losses({task: output}, labels, masks).get(task)

    return task_loss


def single_task_baselines(
    benchmark: Benchmark, *, tasks: Sequence[str] | None = None, **options: Any
) -> dict[str, BenchmarkRun]:
    """One model per task, same backbone, budget and seed (the Δm baselines).

    Args:
        benchmark: the spec.
        tasks: the tasks to train a baseline for (default: every non-auxiliary task).
        **options: passed to :func:`train_benchmark` (not ``method``).

    Returns:
        task → its single-task run.
    """
    return {
        spec.name: train_benchmark(benchmark, tasks=[spec.name], method="sum", **options)
        for spec in benchmark.select(tasks)
        if not spec.is_auxiliary
    }


def benchmark_delta_m(
    benchmark: Benchmark,
    run: BenchmarkRun,
    baselines: Mapping[str, BenchmarkRun],
    *,
    split: str = "test",
) -> float:
    """Δm (%) of ``run`` against the single-task ``baselines``.

    Every metric of every non-auxiliary task of ``run`` counts, each with its direction.

    Returns:
        Δm in percent; positive is better than the single-task models.
    """
    method_values: dict[str, float] = {}
    baseline_values: dict[str, float] = {}
    directions: dict[str, bool] = {}
    for spec in benchmark.tasks:
        if spec.is_auxiliary or spec.name not in run.tasks:
            continue
        ours = getattr(run, split)[spec.name]
        theirs = getattr(baselines[spec.name], split)[spec.name]
        for metric, higher_is_better in spec.metrics:
            key = f"{spec.name}/{metric}"
            method_values[key] = ours[metric]
            baseline_values[key] = theirs[metric]
            directions[key] = not higher_is_better
    return delta_m(method_values, baseline_values, directions)
