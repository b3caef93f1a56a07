"""Evaluating a trained front: per-preference test losses and metrics, and reference points.

The hypervolume of a front needs a reference point per objective. The defaults are fixed per
data set, never per method or run, so HVs of different methods compare:

- metrics where higher is better and 0 is the worst value (accuracy, F1): 0, as in the
  LORPMAN paper (its MultiMNIST HV 0.918 ≈ 0.958² is a product of accuracies);
- mean absolute error: the standard deviation of the training targets (in the reported
  units), about the error of always predicting the mean;
- losses: the loss of a predictor that knows nothing: log C for C classes, log 2 for a binary
  task, the variance of the training targets for a regression (in the loss's normalized units).

Norm statistics. A BatchNorm's running statistics are shared by every θ(α) and were gathered
over the mixture of networks seen in training, so they fit no single α; PaMaL's end points
suffer most. With ``recalibration_data``, each θ(α) first gets its own statistics from a few
training batches (as for weight-space subspaces, Wortsman et al. 2021); the model's own
statistics are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from taskprio.data import Benchmark, TaskSpec, TensorMultiTaskDataset
from taskprio.data._benchmark import BenchmarkSplit
from taskprio.pareto._model import AtPreference, ParetoModel


@dataclass
class FrontEvaluation:
    """A model's test losses and metrics at each of P preferences.

    Attributes:
        tasks: the task names (m), in preference order.
        preferences: [P][m] the α evaluated.
        losses: per preference, task → mean loss over the labelled samples.
        metrics: per preference, task → metric → value (:func:`taskprio.data.evaluate`).
    """

    tasks: tuple[str, ...]
    preferences: list[list[float]] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def loss_front(self) -> NDArray[np.float64]:
        """[P, m] the per-task losses, one row per preference."""
        return np.array(
            [[row[task] for task in self.tasks] for row in self.losses], dtype=np.float64
        ).reshape(len(self.losses), len(self.tasks))

    def metric_front(self, metric_names: Sequence[str]) -> NDArray[np.float64]:
        """[P, m] task t's metric ``metric_names[t]``, one row per preference."""
        if len(metric_names) != len(self.tasks):
            raise ValueError(
                f"`metric_names` must name one metric per task ({len(self.tasks)}); got "
                f"{len(metric_names)}."
            )
        return np.array(
            [
                [row[task][name] for task, name in zip(self.tasks, metric_names, strict=True)]
                for row in self.metrics
            ],
            dtype=np.float64,
        ).reshape(len(self.metrics), len(self.tasks))


@torch.no_grad()
def evaluate_front(
    benchmark: Benchmark,
    model: ParetoModel,
    dataset: BenchmarkSplit,
    preferences: Tensor,
    *,
    batch_size: int = 1024,
    recalibration_data: BenchmarkSplit | None = None,
    recalibration_batches: int = 8,
    recalibration_batch_size: int = 256,
) -> FrontEvaluation:
    """Each task's loss and metrics on ``dataset`` at every preference, in eval mode.

    Args:
        benchmark: gives the task specs (losses, metrics).
        model: the trained Pareto-front model; its tasks must be the benchmark's or a subset.
        dataset: the split (label masks honoured).
        preferences: [P, m] the α to evaluate, rows on the simplex.
        batch_size: samples per forward.
        recalibration_data: a split (the training one) whose first batches give each θ(α)
            its own norm statistics (:func:`recalibrated_norms`); None keeps the trained ones.
        recalibration_batches: how many batches.
        recalibration_batch_size: their size.

    Returns:
        A :class:`FrontEvaluation`. A task with no labelled sample gets NaN.
    """
    tasks = model.tasks
    if preferences.ndim != 2 or preferences.shape[1] != len(tasks):
        raise ValueError(
            f"`preferences` must be [P, {len(tasks)}], one α per row; got "
            f"{tuple(preferences.shape)}."
        )
    result = FrontEvaluation(tasks=tasks)
    for preference in preferences:
        calibration = (
            None
            if recalibration_data is None
            else _first_inputs(
                benchmark, recalibration_data, recalibration_batch_size, recalibration_batches
            )
        )
        with recalibrated_norms(model, preference, calibration):
            # One pass: the metrics' forwards also feed the losses (checked batch by batch);
            # a second pass only when the benchmark evaluates in another order.
            recorder = _LossRecorder(model, preference, benchmark, dataset, batch_size)
            metrics = benchmark.evaluate(recorder, dataset, batch_size, tasks=tasks)
            losses = recorder.mean_losses()
            if losses is None:
                fixed = AtPreference(model, preference)
                losses = _mean_losses(benchmark, fixed, dataset, batch_size)
        result.preferences.append([float(value) for value in preference])
        result.losses.append(losses)
        result.metrics.append(metrics)
    return result


def _first_inputs(
    benchmark: Benchmark, dataset: BenchmarkSplit, batch_size: int, num_batches: int
) -> Iterator[Tensor]:
    for index, (x, _, _) in enumerate(
        benchmark.batches(dataset, batch_size, shuffle=False, generator=None)
    ):
        if index >= num_batches:
            return
        yield x


def _running_stat_norms(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
    ]


@contextlib.contextmanager
def recalibrated_norms(
    model: ParetoModel, preference: Tensor, inputs: Iterable[Tensor] | None
) -> Iterator[None]:
    """Within the block, the norms' running statistics are those of θ(α) on ``inputs``.

    Every BatchNorm (or InstanceNorm) with running statistics is reset and fed ``inputs``
    through θ(α) with a cumulative average (``momentum=None``), the rest of the network in
    eval mode, without gradients. On exit the statistics, momentum and modes are restored
    bit for bit. Nothing happens when ``inputs`` is None or the model has no such norm.

    Args:
        model: the Pareto-front model.
        preference: [m] α.
        inputs: the calibration batches ([B, ...] each).

    >>> from taskprio.pareto import PaMaLModel
    >>> from taskprio.models import MultiTaskMLP
    >>> model = PaMaLModel([MultiTaskMLP(3, {"a": 1, "b": 1}, hidden_sizes=(4,))
    ...                     for _ in range(2)], ["a", "b"])
    >>> norm = model.members[0].trunk[1]
    >>> with recalibrated_norms(model, torch.tensor([1.0, 0.0]), [torch.ones(8, 3)]):
    ...     int(norm.num_batches_tracked)
    1
    >>> int(norm.num_batches_tracked)
    0
    """
    norms = _running_stat_norms(model)
    if inputs is None or not norms:
        yield
        return
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    saved = [
        ({name: getattr(norm, name).clone() for name in buffers}, norm.momentum, norm.training)
        for norm in norms
    ]
    was_training = model.training
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
            norm.training = True
        with torch.no_grad():
            for x in inputs:
                model(x, preference)
        for norm in norms:
            norm.training = False
        yield
    finally:
        model.train(was_training)
        for norm, (state, momentum, training) in zip(norms, saved, strict=True):
            with torch.no_grad():
                for name, value in state.items():
                    getattr(norm, name).copy_(value)
            norm.momentum = momentum
            norm.training = training


class _LossSums:
    """Per task, Σ batch loss × labelled count and Σ labelled count.

    Their ratio is the mean over all labelled samples, whatever the batch boundaries.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.sums = dict.fromkeys(tasks, 0.0)
        self.counts = dict.fromkeys(tasks, 0.0)

    def add(
        self,
        benchmark: Benchmark,
        outputs: Mapping[str, Tensor],
        labels: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
    ) -> None:
        losses = benchmark.losses(
            {task: outputs[task] for task in self.sums}, labels, masks, skip_unlabeled=False
        )
        for task in self.sums:
            count = float(masks[task].sum())
            self.sums[task] += float(losses[task].detach()) * count
            self.counts[task] += count

    def means(self) -> dict[str, float]:
        return {
            task: self.sums[task] / self.counts[task] if self.counts[task] else math.nan
            for task in self.sums
        }


class _LossRecorder(AtPreference):
    """θ(α) that also accumulates the losses of the batches it is run on.

    It walks ``benchmark.batches(dataset)`` in order beside the caller; if a forward's input
    is not the next batch's, the record is dropped (:meth:`mean_losses` gives None).
    """

    def __init__(
        self,
        model: ParetoModel,
        preference: Tensor,
        benchmark: Benchmark,
        dataset: BenchmarkSplit,
        batch_size: int,
    ) -> None:
        super().__init__(model, preference)
        self._benchmark = benchmark
        self._batches = iter(benchmark.batches(dataset, batch_size, shuffle=False, generator=None))
        self._sums = _LossSums(model.tasks)
        self._is_valid = True

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = super().forward(x)
        if self._is_valid:
            batch = next(self._batches, None)
            if batch is None or batch[0].shape != x.shape or not torch.equal(batch[0], x):
                self._is_valid = False
            else:
                self._sums.add(self._benchmark, outputs, batch[1], batch[2])
        return outputs

    def mean_losses(self) -> dict[str, float] | None:
        """The mean losses, or None when the forwards did not follow the batches."""
        if not self._is_valid or next(self._batches, None) is not None:
            return None
        return self._sums.means()


@torch.no_grad()
def _mean_losses(
    benchmark: Benchmark, model: AtPreference, dataset: BenchmarkSplit, batch_size: int
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    sums = _LossSums(model.model.tasks)
    try:
        for x, labels, masks in benchmark.batches(
            dataset, batch_size, shuffle=False, generator=None
        ):
            sums.add(benchmark, model(x), labels, masks)
    finally:
        model.train(was_training)
    return sums.means()


def _in_memory(train: BenchmarkSplit) -> TensorMultiTaskDataset:
    if not isinstance(train, TensorMultiTaskDataset):
        raise TypeError(
            f"default reference points read the training labels of an in-memory split; got "
            f"{type(train).__name__}. Pass `reference_point` explicitly."
        )
    return train


def _labelled_targets(spec: TaskSpec, train: TensorMultiTaskDataset) -> Tensor:
    targets = train.labels[spec.name].to(torch.float64)
    if train.masks is not None:
        targets = targets[train.masks[spec.name]]
    if targets.numel() == 0:
        raise ValueError(f"task {spec.name!r} has no labelled training sample; pass a reference.")
    return targets


def _zero(spec: TaskSpec, train: TensorMultiTaskDataset) -> float:
    del spec, train
    return 0.0


def _target_std(spec: TaskSpec, train: TensorMultiTaskDataset) -> float:
    scale = train.target_normalization.get(spec.name, (0.0, 1.0))[1]
    return float(_labelled_targets(spec, train).std(unbiased=False)) * scale


METRIC_REFERENCES: dict[str, Callable[[TaskSpec, TensorMultiTaskDataset], float]] = {
    "acc": _zero,
    "f1": _zero,
    "mae": _target_std,
}
"""Metric name → its default reference value, from the task and the training split."""


def _log_classes(spec: TaskSpec, train: TensorMultiTaskDataset) -> float:
    del train
    return math.log(spec.num_outputs)


def _log_two(spec: TaskSpec, train: TensorMultiTaskDataset) -> float:
    del spec, train
    return math.log(2.0)


def _target_variance(spec: TaskSpec, train: TensorMultiTaskDataset) -> float:
    return float(_labelled_targets(spec, train).var(unbiased=False))


LOSS_REFERENCES: dict[str, Callable[[TaskSpec, TensorMultiTaskDataset], float]] = {
    "classification": _log_classes,
    "binary": _log_two,
    "regression": _target_variance,
}
"""Task kind → the loss of an uninformed predictor, the default loss reference."""


def metric_reference_point(specs: Sequence[TaskSpec], train: BenchmarkSplit) -> list[float]:
    """The default reference point for the tasks' main metrics (:data:`METRIC_REFERENCES`).

    Args:
        specs: the tasks; each one's first metric is its objective.
        train: the training split (for target spreads).

    Returns:
        [m] one value per task.

    >>> from taskprio.data import classification_task
    >>> data = TensorMultiTaskDataset(torch.zeros(2, 1), {"a": torch.tensor([0, 1])})
    >>> metric_reference_point([classification_task("a", 10)], data)
    [0.0]
    """
    reference = []
    for spec in specs:
        metric = spec.metrics[0][0]
        if metric not in METRIC_REFERENCES:
            raise ValueError(
                f"no default reference for metric {metric!r} of task {spec.name!r}; pass "
                f"`reference_point` (known: {sorted(METRIC_REFERENCES)})."
            )
        reference.append(METRIC_REFERENCES[metric](spec, _in_memory(train)))
    return reference


def loss_reference_point(specs: Sequence[TaskSpec], train: BenchmarkSplit) -> list[float]:
    """The default reference point for the tasks' losses (:data:`LOSS_REFERENCES`).

    >>> from taskprio.data import binary_task, classification_task
    >>> data = TensorMultiTaskDataset(torch.zeros(2, 1), {"a": torch.tensor([0, 1]),
    ...                                                   "b": torch.tensor([0.0, 1.0])})
    >>> [round(v, 4) for v in loss_reference_point(
    ...     [classification_task("a", 10), binary_task("b")], data)]
    [2.3026, 0.6931]
    """
    unknown = sorted({spec.kind for spec in specs} - set(LOSS_REFERENCES))
    if unknown:
        raise ValueError(
            f"no default loss reference for task kinds {unknown} (known: "
            f"{sorted(LOSS_REFERENCES)})."
        )
    return [LOSS_REFERENCES[spec.kind](spec, _in_memory(train)) for spec in specs]
