"""Train a benchmark from Python in one call; single-task baselines; Δm against them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from taskprio.data import Benchmark
from taskprio.methods import Method
from taskprio.train._config import experiment_model
from taskprio.train._trainer import BenchmarkRun, Trainer, run_delta_m
from taskprio.weighting import Weighting


class _EpochCallback:
    """Adapts an ``on_epoch(epoch, losses)`` function to the trainer's progress events."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None]) -> None:
        self.on_epoch = on_epoch

    def start(self, *, total_steps: int, done_steps: int, epochs: int) -> None:
        """Nothing to do at the start."""

    def step(self, *, global_step: int, epoch: int, losses: Mapping[str, float]) -> None:
        """Nothing to do per step."""

    def epoch_end(
        self,
        *,
        epoch: int,
        train_losses: Mapping[str, float],
        val: Mapping[str, Mapping[str, float]],
    ) -> None:
        """Call the function."""
        self.on_epoch(epoch, dict(train_losses))


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
    run_dir: Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> BenchmarkRun:
    """Train ``benchmark``'s model with Adam at the benchmark's defaults; evaluate val and test.

    A shortcut over :class:`~taskprio.train.Trainer` for Python users: no config file, method
    and weighting objects accepted as they are. Masked labels (partial supervision) are
    honoured: a task without labels in a batch is left out of that step. With task-specific
    norms the step runs one forward per task (closure).

    Args:
        benchmark: the spec (:func:`taskprio.data.get_benchmark`).
        method: the aggregation method (object or registry key).
        weighting: the loss weighting (object or registry key).
        tasks: a subset of the tasks (one task: a single-task baseline); None: all.
        task_specific_norms: convert the trunk's norms to task-specific ones (CSO needs it).
        epochs: overrides the benchmark's default.
        seed: seeds the initialization and the batch order.
        root: the data root.
        device: where to train.
        run_dir: write logs, checkpoints and results there (see :class:`Trainer`).
        on_epoch: called after each epoch with its index and mean training losses.

    Returns:
        A :class:`BenchmarkRun`.
    """
    method_name = method if isinstance(method, str) else method.name
    weighting_name = weighting if isinstance(weighting, str) else weighting.name
    config = experiment_model().model_validate(
        {
            "benchmark": benchmark.name,
            "tasks": None if tasks is None else list(tasks),
            "model": {"task_norms": task_specific_norms},
            "method": {"name": method_name},
            "weighting": {"name": weighting_name},
            "epochs": epochs or benchmark.epochs,
            "data": {"root": root},
            "device": str(device),
        }
    )
    trainer = Trainer(
        config,
        seed=seed,
        run_dir=run_dir,
        benchmark=benchmark,
        method=None if isinstance(method, str) else method,
        weighting=None if isinstance(weighting, str) else weighting,
        role="baseline" if tasks is not None and len(tasks) == 1 else "method",
        progress=None if on_epoch is None else _EpochCallback(on_epoch),
    )
    return trainer.fit()


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
    """Δm (%) of ``run`` against the single-task ``baselines`` on ``split``.

    Every metric of every non-auxiliary task of ``run`` counts, each with its direction.

    Returns:
        Δm in percent; positive is better than the single-task models.
    """
    if split not in ("val", "test"):
        raise ValueError(f"`split` must be 'val' or 'test', but got {split!r}.")
    scores = run if split == "test" else _with_test(run, run.val)
    reference = {task: getattr(base, split)[task] for task, base in baselines.items()}
    return run_delta_m(benchmark, scores, reference)


def _with_test(run: BenchmarkRun, test: dict[str, dict[str, float]]) -> BenchmarkRun:
    from dataclasses import replace

    return replace(run, test=test)
