"""Train a Pareto-front method on a benchmark and evaluate its front: :func:`train_pareto`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from taskprio.data import Benchmark, get_benchmark
from taskprio.data._benchmark import BenchmarkSplit
from taskprio.pareto._evaluate import (
    FrontEvaluation,
    evaluate_front,
    loss_reference_point,
    metric_reference_point,
)
from taskprio.pareto._hypervolume import evaluation_preferences, hypervolume
from taskprio.pareto._method import PARETO_METHODS, ParetoMethod
from taskprio.pareto._model import ParetoModel

logger = logging.getLogger(__name__)


@dataclass
class ParetoRun:
    """The outcome of :func:`train_pareto`: the front on the test split and its hypervolume.

    Attributes:
        benchmark: the benchmark's name.
        method: the method's registry key.
        options: the method's constructor arguments.
        tasks: the tasks (m), in preference order.
        seed: seeds the initialization, the batch order and the preferences.
        epochs: epochs trained.
        steps: optimizer steps taken.
        objectives: the HV objectives, ``"task/metric"`` (each task's main metric).
        maximize: per objective, whether higher is better.
        reference_point: the HV reference point of the metrics.
        hypervolume: HV of the test metrics over the evaluated preferences.
        loss_reference_point: the HV reference point of the losses.
        loss_hypervolume: HV of the (minimized) test losses.
        num_parameters: trainable parameters of the Pareto-front model.
        num_main_parameters: those of the underlying network (one network's worth).
        train_time_s: wall time in training steps.
        eval_time_s: wall time evaluating the front.
        test: per-preference test losses and metrics.
        epoch_records: per epoch, the mean of each objective term and each task's loss
            (``loss/<task>``, averaged over the window).
        model: the trained model (not part of :meth:`to_dict`).
    """

    benchmark: str
    method: str
    options: dict[str, Any]
    tasks: tuple[str, ...]
    seed: int
    epochs: int
    steps: int
    objectives: list[str]
    maximize: list[bool]
    reference_point: list[float]
    hypervolume: float
    loss_reference_point: list[float]
    loss_hypervolume: float
    num_parameters: int
    num_main_parameters: int
    train_time_s: float
    eval_time_s: float
    test: FrontEvaluation
    epoch_records: list[dict[str, float]] = field(default_factory=list)
    model: ParetoModel | None = field(default=None, repr=False, compare=False)

    def metric_front(self) -> NDArray[np.float64]:
        """[P, m] each task's main test metric at every evaluated preference."""
        return self.test.metric_front([name.split("/", 1)[1] for name in self.objectives])

    def loss_front(self) -> NDArray[np.float64]:
        """[P, m] each task's test loss at every evaluated preference."""
        return self.test.loss_front()

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as JSON-ready values (non-finite floats become None)."""
        record: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "model":
                continue
            value = getattr(self, item.name)
            if isinstance(value, FrontEvaluation):
                value = {f.name: getattr(value, f.name) for f in fields(value)}
            record[item.name] = _json_ready(value)
        return record

    def plot(self, path: str | Path, *, losses: bool = False) -> Path:
        """Draw the test front to a PNG (:func:`~taskprio.pareto.plot_front`)."""
        from taskprio.pareto._plots import plot_front  # matplotlib only when plotting

        names = [f"{task} loss" for task in self.tasks] if losses else self.objectives
        front = self.loss_front() if losses else self.metric_front()
        return plot_front(
            {self.method: front},
            path,
            objective_names=names,
            title=f"{self.benchmark}: {self.method}, HV {self.hypervolume:.4g}",
        )


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def train_pareto(
    benchmark: Benchmark | str,
    *,
    method: ParetoMethod | str = "lorpman",
    tasks: Sequence[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    max_steps_per_epoch: int | None = None,
    seed: int = 0,
    root: Path | None = None,
    splits: Mapping[str, BenchmarkSplit] | None = None,
    device: torch.device | str = "cpu",
    eval_preferences: Tensor | None = None,
    eval_random: int = 0,
    reference_point: Sequence[float] | None = None,
    recalibration_batches: int = 8,
    model_factory: Callable[[tuple[str, ...]], nn.Module] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    **method_options: Any,
) -> ParetoRun:
    """Train a Pareto-front method on ``benchmark`` with Adam; evaluate its front on test.

    Each step draws the method's W preferences, runs one forward of the batch per
    preference, and back-propagates the method's objective over the [W, m] losses. After
    training, the model is evaluated at :func:`~taskprio.pareto.evaluation_preferences`
    (or ``eval_preferences``), and the hypervolume of the per-task main metrics is computed
    with the reference point of :func:`~taskprio.pareto.metric_reference_point`.

    Args:
        benchmark: the benchmark or its registry name.
        method: a :class:`ParetoMethod` or its registry key (``lorpman``, ``pamal``, ``cosmos``).
        tasks: a subset of the tasks; None: all.
        epochs: overrides the benchmark's default.
        batch_size: overrides the benchmark's default.
        lr: overrides the benchmark's Adam learning rate.
        max_steps_per_epoch: stop each epoch after this many steps (a small budget).
        seed: seeds the initialization, the batch order and the preference draws.
        root: the data root.
        splits: ``{"train": ..., "test": ...}`` data to use instead of loading the benchmark's.
        device: where to train.
        eval_preferences: [P, m] the preferences to evaluate; None: the default set.
        eval_random: seeded Dir(1) preferences added to the default set.
        reference_point: [m] the metrics' HV reference point; None: the default.
        recalibration_batches: before evaluating each θ(α), recompute its norm statistics
            on this many training batches (:func:`~taskprio.pareto.recalibrated_norms`);
            0 keeps the statistics gathered in training. No cost without BatchNorm.
        model_factory: ``tasks -> fresh network`` in place of the benchmark's model (e.g.
            one without BatchNorm, as COSMOS needs; see ``docs/pareto.md``).
        on_epoch: called after each epoch with its index and its record.
        **method_options: the method's constructor arguments (with a method name only),
            e.g. ``rank=4, scale=0.5`` for LORPMAN.

    Returns:
        A :class:`ParetoRun` holding the trained model.

    >>> from taskprio.data import TensorMultiTaskDataset
    >>> gen = torch.Generator().manual_seed(0)
    >>> data = TensorMultiTaskDataset(torch.randn(32, 34, generator=gen),
    ...                               {"mu": torch.randn(32, generator=gen),
    ...                                "alpha": torch.randn(32, generator=gen)})
    >>> small_qm9 = get_benchmark("qm9", hidden_sizes=(16,), head_hidden=8)
    >>> run = train_pareto(small_qm9, method="lorpman", tasks=["mu", "alpha"], epochs=2,
    ...                    batch_size=16, splits={"train": data, "test": data}, rank=2,
    ...                    recalibration_batches=1)
    >>> run.steps, len(run.test.preferences), run.objectives
    (4, 11, ['mu/mae', 'alpha/mae'])
    """
    spec = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    if isinstance(method, ParetoMethod):
        if method_options:
            raise ValueError(
                f"method options {sorted(method_options)} were given with a {method!r} "
                "instance; set them on the instance or pass the method's name."
            )
        pareto_method = method
    else:
        pareto_method = PARETO_METHODS.create(method, **method_options)
    specs = spec.select(tasks)
    task_names = tuple(item.name for item in specs)
    epochs = spec.epochs if epochs is None else epochs
    batch_size = spec.batch_size if batch_size is None else batch_size
    lr = spec.lr if lr is None else lr
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"`epochs`, `batch_size` and `lr` must be positive; got {epochs}, {batch_size}, {lr}."
        )
    if recalibration_batches < 0:
        raise ValueError(
            f"`recalibration_batches` must be non-negative, but got {recalibration_batches}."
        )
    if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
        raise ValueError(f"`max_steps_per_epoch` must be positive, but got {max_steps_per_epoch}.")
    data = _splits(spec, splits, root, device)

    torch.manual_seed(seed)
    factory = model_factory if model_factory is not None else spec.make_model
    model = pareto_method.build(lambda: factory(task_names), task_names).to(device)
    dtype = next(model.parameters()).dtype
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Separate streams, so that changing the window does not change the batch order.
    batch_generator = torch.Generator().manual_seed(seed)
    preference_generator = torch.Generator().manual_seed(seed + 1)
    records: list[dict[str, float]] = []
    train_time_s = 0.0
    steps = 0
    for epoch in range(epochs):
        pareto_method.on_epoch_start(model, optimizer, epoch=epoch, epochs=epochs)
        model.train()
        sums: dict[str, float] = {}
        epoch_steps = 0
        started = time.perf_counter()
        for index, (x, labels, masks) in enumerate(
            spec.batches(data["train"], batch_size, shuffle=True, generator=batch_generator)
        ):
            if max_steps_per_epoch is not None and index >= max_steps_per_epoch:
                break
            preferences = pareto_method.sample_preferences(
                len(task_names), preference_generator
            ).to(device=x.device, dtype=dtype)  # [W, m]
            rows = []
            for preference in preferences:
                outputs = model(x, preference)
                task_losses = spec.losses(
                    {task: outputs[task] for task in task_names},
                    labels,
                    masks,
                    skip_unlabeled=False,
                )
                rows.append(torch.stack([task_losses[task] for task in task_names]))
            losses = torch.stack(rows)  # [W, m]
            objective = pareto_method.objective(
                model, preferences, losses, generator=preference_generator
            )
            if not bool(torch.isfinite(objective.loss)):
                raise FloatingPointError(
                    f"the {pareto_method.name} loss is {objective.loss.item()} at epoch {epoch}, "
                    f"step {index} (terms {objective.terms}); lower `lr` or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(objective.loss)
            optimizer.step()
            epoch_steps += 1
            step_record = {"loss": float(objective.loss.detach()), **objective.terms}
            mean_losses = losses.detach().mean(dim=0)  # [m]
            for task, value in zip(task_names, mean_losses.tolist(), strict=True):
                step_record[f"loss/{task}"] = value
            for key, value in step_record.items():
                sums[key] = sums.get(key, 0.0) + value
        train_time_s += time.perf_counter() - started
        steps += epoch_steps
        record = {key: value / max(epoch_steps, 1) for key, value in sums.items()}
        records.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch is not None:
            on_epoch(epoch, record)

    started = time.perf_counter()
    preferences = (
        evaluation_preferences(len(task_names), num_random=eval_random)
        if eval_preferences is None
        else eval_preferences
    )
    test = evaluate_front(
        spec,
        model,
        data["test"],
        preferences.to(device),
        recalibration_data=data["train"] if recalibration_batches else None,
        recalibration_batches=recalibration_batches,
        recalibration_batch_size=batch_size,
    )
    metric_names = [item.metrics[0][0] for item in specs]
    maximize = [item.metrics[0][1] for item in specs]
    reference = (
        metric_reference_point(specs, data["train"])
        if reference_point is None
        else [float(value) for value in reference_point]
    )
    if len(reference) != len(task_names):
        raise ValueError(
            f"`reference_point` must have one value per task ({len(task_names)}); got "
            f"{len(reference)}."
        )
    hv = _finite_hypervolume(test.metric_front(metric_names), reference, maximize)
    loss_reference = loss_reference_point(specs, data["train"])
    loss_hv = _finite_hypervolume(test.loss_front(), loss_reference, [False] * len(task_names))
    eval_time_s = time.perf_counter() - started
    count = model.parameter_count()
    return ParetoRun(
        benchmark=spec.name,
        method=pareto_method.name,
        options=pareto_method.options(),
        tasks=task_names,
        seed=seed,
        epochs=epochs,
        steps=steps,
        objectives=[f"{task}/{name}" for task, name in zip(task_names, metric_names, strict=True)],
        maximize=maximize,
        reference_point=reference,
        hypervolume=hv,
        loss_reference_point=loss_reference,
        loss_hypervolume=loss_hv,
        num_parameters=count.total,
        num_main_parameters=count.main,
        train_time_s=train_time_s,
        eval_time_s=eval_time_s,
        test=test,
        epoch_records=records,
        model=model,
    )


def _splits(
    benchmark: Benchmark,
    splits: Mapping[str, BenchmarkSplit] | None,
    root: Path | None,
    device: torch.device | str,
) -> dict[str, BenchmarkSplit]:
    if splits is None:
        return {name: benchmark.load(name, root).to(device) for name in ("train", "test")}
    missing = sorted({"train", "test"} - set(splits))
    if missing:
        raise ValueError(f"`splits` must hold 'train' and 'test'; missing {missing}.")
    return {name: splits[name].to(device) for name in ("train", "test")}


def _finite_hypervolume(
    front: NDArray[np.float64], reference: Sequence[float], maximize: Sequence[bool]
) -> float:
    """HV of the finite rows; NaN (with a logged warning) when a row is not finite."""
    finite = np.isfinite(front).all(axis=1)
    if not finite.all():
        logger.warning(
            "%d of %d front points are not finite (a task without labelled test samples?); "
            "the hypervolume is NaN.",
            int((~finite).sum()),
            len(front),
        )
        return math.nan
    return hypervolume(front, reference, maximize=list(maximize))
