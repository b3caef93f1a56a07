"""Benchmarks: a data set, its tasks (loss, metrics), a model factory and default settings.

A :class:`Benchmark` ties together what a training run needs: ``load(split)`` gives an
in-memory :class:`~taskprio.data.TensorMultiTaskDataset`, ``make_model(tasks, task_norms=...)``
a model with ``forward(x) -> {task: output}`` and ``forward_task(x, task)``, and each
:class:`TaskSpec` says how to compute that task's loss (honouring label masks) and which metrics
to report, with their direction, for Δm. :func:`evaluate` computes those metrics.

Benchmarks are looked up by name: :func:`available_benchmarks`, :func:`get_benchmark`. Each
registered benchmark is a small frozen dataclass whose fields (epochs, batch size, learning
rate, model widths) are its defaults, so a config overrides them by name:
``get_benchmark("qm9", epochs=5)``.

>>> available_benchmarks()  # doctest: +NORMALIZE_WHITESPACE
['celeba', 'cityscapes', 'fashion_mnist', 'multifashion', 'multimnist', 'nyuv2',
 'pascal_context', 'qm9', 'qm9_graph', 'yeast']
>>> qm9 = get_benchmark("qm9")
>>> qm9.task_names[:3], qm9.task("U0").metrics
(('mu', 'alpha', 'homo'), (('mae', False),))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from taskprio._registry import Registry
from taskprio.data._fashion import load_fashion_mnist, load_multi_fashion
from taskprio.data._multi_mnist import load_multi_mnist
from taskprio.data._qm9 import NUM_FEATURES as QM9_NUM_FEATURES
from taskprio.data._qm9 import TASKS as QM9_TASKS
from taskprio.data._qm9 import load_qm9
from taskprio.data._tensor_dataset import Split, TensorMultiTaskDataset, iterate_masked_batches
from taskprio.data._yeast import NUM_FEATURES as YEAST_NUM_FEATURES
from taskprio.data._yeast import TASKS as YEAST_TASKS
from taskprio.data._yeast import load_yeast
from taskprio.models._lenet import MultiLeNet
from taskprio.models._mlp import MultiTaskMLP
from taskprio.nn import active_task, make_task_specific, task_norms

TaskKind = Literal["classification", "binary", "regression", "dense"]
LossFunction = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``(prediction, target, mask) -> scalar loss``, the mean over the samples whose mask is True."""

TASK_KINDS: tuple[TaskKind, ...] = ("classification", "binary", "regression", "dense")
# The metrics :func:`evaluate` computes per task kind, with whether higher is better. Dense
# tasks (per-pixel outputs) are evaluated by their benchmark's own ``evaluate``.
KNOWN_METRICS: dict[TaskKind, dict[str, bool]] = {
    "classification": {"acc": True},
    "binary": {"acc": True, "f1": True},
    "regression": {"mae": False},
    "dense": {},
}
_SplitT = TypeVar("_SplitT", bound="BenchmarkSplit")


class BenchmarkSplit(Protocol):
    """What :meth:`Benchmark.load` returns: a split its benchmark knows how to batch.

    The in-memory benchmarks return a :class:`~taskprio.data.TensorMultiTaskDataset`; the
    dense ones a split read from disk batch by batch (``taskprio.data.DiskSplit``). Only the
    benchmark that loaded a split iterates over it (:meth:`Benchmark.batches`).
    """

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names of the labels, in order."""
        ...

    def __len__(self) -> int: ...

    def to(self: _SplitT, device: torch.device | str) -> _SplitT:
        """The split with its stored tensors on ``device`` (itself when nothing is stored)."""
        ...


def _in_memory(dataset: BenchmarkSplit) -> TensorMultiTaskDataset:
    if not isinstance(dataset, TensorMultiTaskDataset):
        raise TypeError(
            f"this benchmark iterates over a TensorMultiTaskDataset; got {type(dataset).__name__}."
            " Pass the split that this benchmark's `load` returned."
        )
    return dataset


# --- losses -------------------------------------------------------------------------------


def _masked_mean(per_sample: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``per_sample`` [B] over the True entries of ``mask``; 0 (with a graph) if none.

    ``torch.where`` rather than a product: a non-finite loss on a masked sample cannot leak
    into the mean, and masked samples get an exact zero gradient.
    """
    if mask is None:
        return per_sample.mean() if per_sample.numel() else per_sample.sum()
    kept = torch.where(mask, per_sample, torch.zeros_like(per_sample))
    return kept.sum() / mask.sum().clamp_min(1).to(per_sample.dtype)


def _safe_target(target: Tensor, mask: Tensor | None) -> Tensor:
    """Replace the targets of masked samples by 0, whatever placeholder they hold."""
    if mask is None:
        return target
    return torch.where(mask, target, torch.zeros_like(target))


def _per_sample_prediction(prediction: Tensor, target: Tensor) -> Tensor:
    """[B, 1] or [B] → [B], the shape of ``target``."""
    if prediction.shape != target.shape and prediction.shape == (*target.shape, 1):
        prediction = prediction.squeeze(-1)
    if prediction.shape != target.shape:
        raise ValueError(
            f"`prediction` must have the shape of `target` {tuple(target.shape)} (or one more "
            f"trailing 1); got {tuple(prediction.shape)}."
        )
    return prediction


def masked_cross_entropy(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy averaged over the labelled samples.

    Args:
        prediction: [B, C] logits.
        target: [B] int64 classes; entries under a False mask may hold anything.
        mask: [B] bool, True where the label is present; None: all present.

    Returns:
        The scalar loss; an exact 0 connected to ``prediction`` (zero gradient, no NaN) when
        no sample of the batch is labelled.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    >>> masked_cross_entropy(logits, torch.tensor([0, -1]), torch.tensor([True, False]))
    tensor(0.1269, grad_fn=<DivBackward0>)
    >>> masked_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([False, False]))
    tensor(0., grad_fn=<DivBackward0>)
    """
    per_sample = functional.cross_entropy(
        prediction, _safe_target(target, mask), reduction="none"
    )  # [B]
    return _masked_mean(per_sample, mask)


def masked_binary_cross_entropy(
    prediction: Tensor, target: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy on logits, averaged over the labelled samples.

    Args:
        prediction: [B] or [B, 1] logits.
        target: [B] floats in {0, 1} (or in [0, 1]).
        mask: [B] bool, True where the label is present; None: all present.

    Returns:
        The scalar loss; an exact 0 with a zero gradient when no sample is labelled.

    >>> masked_binary_cross_entropy(torch.tensor([[0.0], [5.0]]), torch.tensor([1.0, 0.0]),
    ...                             torch.tensor([True, False]))
    tensor(0.6931)
    """
    prediction = _per_sample_prediction(prediction, target)
    per_sample = functional.binary_cross_entropy_with_logits(
        prediction, _safe_target(target, mask).to(prediction.dtype), reduction="none"
    )  # [B]
    return _masked_mean(per_sample, mask)


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the labelled samples (on normalized targets for QM9).

    Args:
        prediction: [B] or [B, 1].
        target: [B].
        mask: [B] bool, True where the label is present; None: all present.

    Returns:
        The scalar loss; an exact 0 with a zero gradient when no sample is labelled.

    >>> masked_mse(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([0.0, 0.0, float("nan")]),
    ...            torch.tensor([True, True, False]))
    tensor(5.)
    """
    prediction = _per_sample_prediction(prediction, target)
    per_sample = (prediction - _safe_target(target, mask).to(prediction.dtype)).square()  # [B]
    return _masked_mean(per_sample, mask)


# --- tasks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One task of a benchmark: its kind, outputs, loss and the metrics reported for it.

    Attributes:
        name: the task's key in the labels and the model's outputs.
        kind: ``"classification"`` (``num_outputs`` classes, int64 labels), ``"binary"`` (one
            logit, float 0/1 labels), ``"regression"`` (one output, float targets) or
            ``"dense"`` (``num_outputs`` channels per pixel; loss and metrics given by the spec
            and computed by its benchmark, see ``taskprio.data.DenseTaskSpec``).
        num_outputs: the size of the model's output for this task.
        loss: ``(prediction, target, mask) -> scalar``: the mean over labelled samples, and a
            finite zero with a zero gradient when none is labelled.
        metrics: ``(name, higher_is_better)`` per reported metric, the first one the main
            metric; :func:`evaluate` knows ``acc``, ``f1`` (binary) and ``mae`` (regression, in
            the target's units).
        is_auxiliary: trained but not counted in Δm.

    >>> classification_task("left", 10)
    TaskSpec(name='left', kind='classification', num_outputs=10, metrics=(('acc', True),))
    """

    name: str
    kind: TaskKind
    num_outputs: int
    loss: LossFunction = field(repr=False)
    metrics: tuple[tuple[str, bool], ...]
    is_auxiliary: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or "." in self.name:
            raise ValueError(f"`name` must be a non-empty string without '.'; got {self.name!r}.")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"`kind` must be one of {list(TASK_KINDS)}, but got {self.kind!r}.")
        if self.kind == "classification" and self.num_outputs < 2:
            raise ValueError(
                f"`num_outputs` of a classification task must be at least 2; got "
                f"{self.num_outputs}. Use kind='binary' for one logit."
            )
        if self.kind == "dense" and self.num_outputs < 1:
            raise ValueError(
                f"`num_outputs` of a dense task must be positive; got {self.num_outputs}."
            )
        if self.kind in ("binary", "regression") and self.num_outputs != 1:
            raise ValueError(
                f"`num_outputs` of a {self.kind} task must be 1; got {self.num_outputs}."
            )
        if not self.metrics:
            raise ValueError(f"`metrics` of task {self.name!r} must name at least one metric.")


def classification_task(name: str, num_classes: int, *, is_auxiliary: bool = False) -> TaskSpec:
    """A classification task: cross-entropy loss, accuracy.

    >>> classification_task("left", 10).kind
    'classification'
    """
    return TaskSpec(
        name,
        "classification",
        num_classes,
        masked_cross_entropy,
        (("acc", True),),
        is_auxiliary,
    )


def binary_task(name: str, *, is_auxiliary: bool = False) -> TaskSpec:
    """A binary task on one logit: BCE-with-logits loss, accuracy and F1 (threshold 0).

    >>> binary_task("class1").metrics
    (('acc', True), ('f1', True))
    """
    return TaskSpec(
        name, "binary", 1, masked_binary_cross_entropy, (("acc", True), ("f1", True)), is_auxiliary
    )


def regression_task(name: str, *, is_auxiliary: bool = False) -> TaskSpec:
    """A scalar regression task: MSE loss (on normalized targets), mean absolute error.

    >>> regression_task("mu").metrics
    (('mae', False),)
    """
    return TaskSpec(name, "regression", 1, masked_mse, (("mae", False),), is_auxiliary)


# --- evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: TensorMultiTaskDataset,
    batch_size: int,
    *,
    tasks: Sequence[TaskSpec],
) -> dict[str, dict[str, float]]:
    """Each task's metrics on a whole split, in eval mode, over the labelled samples only.

    A model with task-specific norms runs one forward per task under
    :func:`~taskprio.nn.active_task`; otherwise one forward gives every output. Regression
    errors are reported in the target's units: a task in ``dataset.target_normalization``
    has its error multiplied by the stored std. The model's train/eval mode is restored.

    Args:
        model: ``forward(x) -> {task: output}`` and ``forward_task(x, task) -> output``.
        dataset: the split, masks honoured.
        batch_size: samples per forward.
        tasks: the tasks to evaluate (each in the dataset and the model's outputs).

    Returns:
        task → metric name → value. A task with no labelled sample gets NaN.

    >>> from taskprio.models import MultiTaskMLP
    >>> data = TensorMultiTaskDataset(torch.zeros(4, 3), {"y": torch.tensor([0.0, 1, 2, 3])})
    >>> model = MultiTaskMLP(3, {"y": 1}, batch_norm=False)
    >>> _ = nn.init.zeros_(model.heads["y"][2].bias)
    >>> _ = nn.init.zeros_(model.heads["y"][2].weight)
    >>> evaluate(model, data, 2, tasks=[regression_task("y")])
    {'y': {'mae': 1.5}}
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, but got {batch_size}.")
    specs = tuple(tasks)
    unknown = sorted({spec.name for spec in specs} - set(dataset.tasks))
    if unknown:
        raise ValueError(f"`tasks` {unknown} have no labels in {dataset!r}.")
    for spec in specs:
        unsupported = [name for name, _ in spec.metrics if name not in KNOWN_METRICS[spec.kind]]
        if unsupported:
            raise ValueError(
                f"evaluate() cannot compute {unsupported} for the {spec.kind} task "
                f"{spec.name!r}; it knows {sorted(KNOWN_METRICS[spec.kind])}."
            )
    was_training = model.training
    model.eval()
    has_task_norms = bool(task_norms(model))
    # Per task: labelled samples, correct, true positives, predicted positives, actual
    # positives, absolute error (normalized units). float64 sums on the data's device.
    sums = {spec.name: torch.zeros(6, dtype=torch.float64) for spec in specs}
    try:
        for x, labels, masks in iterate_masked_batches(
            dataset, batch_size, shuffle=False, generator=None
        ):
            outputs = _outputs(model, x, [spec.name for spec in specs], has_task_norms)
            for spec in specs:
                sums[spec.name] += _batch_sums(
                    spec, outputs[spec.name], labels[spec.name], masks[spec.name]
                ).cpu()
    finally:
        model.train(was_training)
    return {
        spec.name: _metrics(spec, sums[spec.name], dataset.target_normalization.get(spec.name))
        for spec in specs
    }


def _outputs(
    model: nn.Module, x: Tensor, tasks: Sequence[str], has_task_norms: bool
) -> dict[str, Tensor]:
    if has_task_norms:
        outputs = {}
        for task in tasks:
            with active_task(model, task):
                outputs[task] = model.forward_task(x, task)  # type: ignore[operator]
        return outputs
    all_outputs: dict[str, Tensor] = model(x)
    return {task: all_outputs[task] for task in tasks}


def _batch_sums(spec: TaskSpec, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """[6] float64: labelled, correct, true positives, predicted and actual positives, |error|."""
    weight = mask.to(torch.float64)
    sums = torch.zeros(6, dtype=torch.float64, device=output.device)
    sums[0] = weight.sum()
    if spec.kind == "classification":
        correct = (output.argmax(dim=1) == target).to(torch.float64)
        sums[1] = (correct * weight).sum()
    elif spec.kind == "binary":
        predicted = (_per_sample_prediction(output, target) > 0).to(torch.float64)
        actual = (target > 0.5).to(torch.float64)
        sums[1] = ((predicted == actual).to(torch.float64) * weight).sum()
        sums[2] = (predicted * actual * weight).sum()
        sums[3] = (predicted * weight).sum()
        sums[4] = (actual * weight).sum()
    else:
        error = (_per_sample_prediction(output, target) - target).abs().to(torch.float64)
        sums[5] = torch.where(mask, error, torch.zeros_like(error)).sum()
    return sums


def _metrics(
    spec: TaskSpec, sums: Tensor, normalization: tuple[float, float] | None
) -> dict[str, float]:
    labelled, correct, true_pos, predicted_pos, actual_pos, abs_error = sums.tolist()
    if labelled == 0:
        return {name: float("nan") for name, _ in spec.metrics}
    values = {"acc": correct / labelled}
    if spec.kind == "binary":
        # F1 = 2 TP / (2 TP + FP + FN); 1.0 when there is nothing to find and nothing found.
        denominator = predicted_pos + actual_pos
        values["f1"] = 2 * true_pos / denominator if denominator > 0 else 1.0
    if spec.kind == "regression":
        scale = 1.0 if normalization is None else normalization[1]
        values["mae"] = abs_error / labelled * scale
    return {name: values[name] for name, _ in spec.metrics}


# --- benchmarks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: data, tasks, a model factory and default training settings.

    Subclasses (one per registered benchmark) give every field a default and implement
    :meth:`load` and :meth:`build_model`; instances are made with :func:`get_benchmark`.

    Attributes:
        name: the registry key.
        description: one line on what it is.
        tasks: the task specs, in the data set's task order.
        input_shape: the shape of one input sample (a batch is ``[B, *input_shape]``).
        epochs: default number of training epochs.
        batch_size: default mini-batch size B.
        lr: default Adam learning rate.
    """

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    input_shape: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`tasks` must be non-empty with unique names; got {names}.")
        if self.epochs < 1:
            raise ValueError(f"`epochs` must be positive, but got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, but got {self.batch_size}.")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, but got {self.lr}.")

    @property
    def task_names(self) -> tuple[str, ...]:
        """The task names, in order."""
        return tuple(spec.name for spec in self.tasks)

    def task(self, name: str) -> TaskSpec:
        """The spec of task ``name``."""
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise ValueError(f"`name` must be one of {list(self.task_names)}, but got {name!r}.")

    def select(self, tasks: Sequence[str] | None) -> tuple[TaskSpec, ...]:
        """The specs of ``tasks`` (in the given order), all of them for None."""
        if tasks is None:
            return self.tasks
        if isinstance(tasks, str):
            raise ValueError(f"`tasks` must be a sequence of names; got the string {tasks!r}.")
        return tuple(self.task(name) for name in tasks)

    def load(self, split: Split, root: Path | None = None) -> BenchmarkSplit:
        """One split, from its cache or folder under ``root`` (default :func:`data_root`).

        Raises:
            FileNotFoundError: the cache is not built; the message gives the command.
        """
        raise NotImplementedError

    def batches(
        self,
        dataset: BenchmarkSplit,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        skip: int = 0,
    ) -> Iterator[tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]]:
        """The batches of one epoch over ``dataset``, as :func:`iterate_masked_batches` draws them.

        The trainer iterates through this method only, so a benchmark whose data does not fit
        in memory overrides it (and :meth:`load`, :meth:`evaluate`).

        Args:
            dataset: a split from :meth:`load`.
            batch_size: B.
            shuffle: draw this epoch's permutation from ``generator``.
            generator: the CPU Generator of the batch order.
            skip: leave out the first ``skip`` batches (resuming mid-epoch); the permutation
                is drawn as if none were skipped.

        Yields:
            ``(inputs [B, ...], {task: labels}, {task: masks [B] bool})``.

        >>> qm9 = get_benchmark("qm9")
        >>> data = TensorMultiTaskDataset(torch.arange(5.0)[:, None], {"a": torch.arange(5)})
        >>> [x[:, 0].tolist() for x, _, _ in qm9.batches(data, 2, shuffle=False, generator=None,
        ...                                                skip=1)]
        [[2.0, 3.0], [4.0]]
        """
        for index, batch in enumerate(
            iterate_masked_batches(
                _in_memory(dataset), batch_size, shuffle=shuffle, generator=generator
            )
        ):
            if index >= skip:
                yield batch

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        """The benchmark's model with one head per task in ``tasks`` (shared norms)."""
        raise NotImplementedError

    def make_model(
        self, tasks: Sequence[str] | None = None, *, task_norms: bool = False
    ) -> nn.Module:
        """A fresh model for ``tasks`` (all by default; one task for a single-task baseline).

        Args:
            tasks: the task names to give a head, in output order; None: every task.
            task_norms: turn the trunk's norms into task-specific ones
                (:func:`taskprio.nn.make_task_specific`); train it with a closure under
                :func:`taskprio.nn.active_task`.

        Returns:
            A module with ``forward(x) -> {task: output}`` and ``forward_task(x, task)``.
        """
        specs = self.select(tasks)
        model = self.build_model(specs)
        if task_norms:
            model = make_task_specific(model, [spec.name for spec in specs])
        return model

    def losses(
        self,
        outputs: Mapping[str, Tensor],
        labels: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        skip_unlabeled: bool = True,
    ) -> dict[str, Tensor]:
        """Each task's loss for the tasks in ``outputs``, masks honoured.

        Args:
            outputs: task → the model's output for the batch.
            labels: task → the batch's labels.
            masks: task → [B] bool, True where the label is present; None: all present.
            skip_unlabeled: leave out a task with no labelled sample in the batch, so that
                :class:`taskprio.MultiTaskStep` skips it (its loss would be a constant 0, and a
                zero gradient would distort methods such as MGDA). Checking costs one
                device-to-host copy per task. False keeps it, with an exact zero loss.

        Returns:
            task → scalar loss, ready for ``MultiTaskStep``.
        """
        losses = {}
        for task, output in outputs.items():
            mask = None if masks is None else masks[task]
            if skip_unlabeled and mask is not None and not bool(mask.any()):
                continue
            losses[task] = self.task(task).loss(output, labels[task], mask)
        return losses

    def evaluate(
        self,
        model: nn.Module,
        dataset: BenchmarkSplit,
        batch_size: int = 1024,
        *,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, dict[str, float]]:
        """:func:`evaluate` with this benchmark's task specs (``tasks``: a subset)."""
        return evaluate(model, _in_memory(dataset), batch_size, tasks=self.select(tasks))


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def available_benchmarks() -> list[str]:
    """The registry keys of every benchmark.

    >>> "qm9" in available_benchmarks()
    True
    """
    return BENCHMARKS.names()


def get_benchmark(name: str, **options: object) -> Benchmark:
    """The benchmark registered as ``name``, with its defaults overridden by ``options``.

    >>> get_benchmark("yeast", epochs=3).epochs
    3
    """
    return BENCHMARKS.create(name, **options)


def _image_pair_tasks() -> tuple[TaskSpec, ...]:
    return (classification_task("left", 10), classification_task("right", 10))


@dataclass(frozen=True)
class _ImagePairBenchmark(Benchmark):
    """The MultiMNIST family: two 28×28 classification tasks and MultiLeNet."""

    tasks: tuple[TaskSpec, ...] = _image_pair_tasks()
    input_shape: tuple[int, ...] = (1, 28, 28)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        return MultiLeNet(tuple(spec.name for spec in tasks))


@BENCHMARKS.register("multimnist")
@dataclass(frozen=True)
class MultiMNISTBenchmark(_ImagePairBenchmark):
    """MultiMNIST (see :mod:`taskprio.data._multi_mnist`): left and right digit, MultiLeNet."""

    name: str = "multimnist"
    description: str = "Two overlapping MNIST digits; classify the top-left and bottom-right one."

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One MultiMNIST split (a :class:`~taskprio.data.MultiMNIST`)."""
        return load_multi_mnist(split, root)


@BENCHMARKS.register("multifashion")
@dataclass(frozen=True)
class MultiFashionBenchmark(_ImagePairBenchmark):
    """MultiFashion (see :mod:`taskprio.data._fashion`): two Fashion-MNIST items, MultiLeNet."""

    name: str = "multifashion"
    description: str = (
        "Two overlapping Fashion-MNIST items; classify the top-left and bottom-right."
    )

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One MultiFashion split."""
        return load_multi_fashion(split, root)


@BENCHMARKS.register("fashion_mnist")
@dataclass(frozen=True)
class FashionMNISTBenchmark(_ImagePairBenchmark):
    """Fashion+MNIST (see :mod:`taskprio.data._fashion`): a Fashion item left, a digit right."""

    name: str = "fashion_mnist"
    description: str = "A Fashion-MNIST item (top-left) over an MNIST digit (bottom-right)."

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One Fashion+MNIST split."""
        return load_fashion_mnist(split, root)


@BENCHMARKS.register("qm9")
@dataclass(frozen=True)
class QM9Benchmark(Benchmark):
    """QM9 (see :mod:`taskprio.data._qm9`): 11 regression targets, MLP on 34 fixed features.

    Attributes:
        hidden_sizes: widths of the shared layers (each Linear + BatchNorm1d + ReLU).
        head_hidden: width of each head's hidden layer.
    """

    name: str = "qm9"
    description: str = "11 quantum-chemical properties of 130,831 small molecules (MLP)."
    tasks: tuple[TaskSpec, ...] = tuple(regression_task(task) for task in QM9_TASKS)
    input_shape: tuple[int, ...] = (QM9_NUM_FEATURES,)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    head_hidden: int = 64

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One QM9 split: standardized features, normalized targets."""
        return load_qm9(split, root)

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        """A :class:`~taskprio.models.MultiTaskMLP` with BatchNorm after each shared Linear."""
        return MultiTaskMLP(
            QM9_NUM_FEATURES,
            {spec.name: spec.num_outputs for spec in tasks},
            hidden_sizes=self.hidden_sizes,
            head_hidden=self.head_hidden,
        )


@BENCHMARKS.register("yeast")
@dataclass(frozen=True)
class YeastBenchmark(Benchmark):
    """Yeast (see :mod:`taskprio.data._yeast`): 14 binary tasks, MLP on 103 features.

    Attributes:
        hidden_sizes: widths of the shared layers (each Linear + BatchNorm1d + ReLU).
        head_hidden: width of each head's hidden layer.
    """

    name: str = "yeast"
    description: str = "14 gene-function labels of 2,417 yeast genes (MLP, one logit per task)."
    tasks: tuple[TaskSpec, ...] = tuple(binary_task(task) for task in YEAST_TASKS)
    input_shape: tuple[int, ...] = (YEAST_NUM_FEATURES,)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    hidden_sizes: tuple[int, ...] = (128, 128)
    head_hidden: int = 32

    def load(self, split: Split, root: Path | None = None) -> TensorMultiTaskDataset:
        """One Yeast split: standardized features, float 0/1 labels."""
        return load_yeast(split, root)

    def build_model(self, tasks: tuple[TaskSpec, ...]) -> nn.Module:
        """A :class:`~taskprio.models.MultiTaskMLP` with BatchNorm after each shared Linear."""
        return MultiTaskMLP(
            YEAST_NUM_FEATURES,
            {spec.name: spec.num_outputs for spec in tasks},
            hidden_sizes=self.hidden_sizes,
            head_hidden=self.head_hidden,
        )
