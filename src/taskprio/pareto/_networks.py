"""Networks without BatchNorm for Pareto-front learning: :func:`norm_free_model`.

COSMOS feeds α as constant input channels; a BatchNorm right after the layer that reads them
subtracts the batch mean and removes α (see :func:`~taskprio.pareto.widen_input`). A norm's
running statistics are also shared by every θ(α) and fit none of them. These networks are the
benchmarks' own architectures with the norms left out, so every method sees α and no
statistic needs recalibrating:

- the MultiMNIST family (``multimnist``, ``multifashion``, ``fashion_mnist``):
  :class:`NormFreeLeNet`, the LeNet of Sener & Koltun as PaMaL trains it, 27,450 parameters;
- ``qm9`` and ``yeast``: their :class:`~taskprio.models.MultiTaskMLP` with
  ``batch_norm=False`` (same widths, the benchmark's ``hidden_sizes`` and ``head_hidden``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from taskprio.data import Benchmark, get_benchmark
from taskprio.data._benchmark import QM9Benchmark, YeastBenchmark
from taskprio.models import MultiLeNet, MultiTaskMLP


class NormFreeLeNet(MultiLeNet):
    """The MultiMNIST LeNet without norms (``MultiLeNet(batch_norm=False)``).

    The network of Sener & Koltun (2018) as PaMaL trains it on MultiMNIST: the trunk's layers
    keep their biases (no norm follows them). For 28×28 inputs and two 10-class tasks: 21,330
    trunk parameters and 3,060 per head, 27,450 in all.

    Args:
        tasks: the task names, one head each, in output order.
        num_classes: classes per task.

    >>> import torch
    >>> model = NormFreeLeNet(("left", "right"))
    >>> {task: tuple(y.shape) for task, y in model(torch.zeros(2, 1, 28, 28)).items()}
    {'left': (2, 10), 'right': (2, 10)}
    >>> sum(p.numel() for p in model.parameters())
    27450
    """

    def __init__(self, tasks: Sequence[str] = ("left", "right"), *, num_classes: int = 10) -> None:
        super().__init__(tasks, num_classes=num_classes, batch_norm=False)


def _lenet(benchmark: Benchmark, tasks: tuple[str, ...]) -> nn.Module:
    classes = {benchmark.task(task).num_outputs for task in tasks}
    if len(classes) != 1:
        raise ValueError(
            f"NormFreeLeNet gives every task the same number of classes; {benchmark.name}'s "
            f"tasks {list(tasks)} have {sorted(classes)}."
        )
    return NormFreeLeNet(tasks, num_classes=classes.pop())


def _mlp(benchmark: Benchmark, tasks: tuple[str, ...]) -> nn.Module:
    # The benchmark's own widths (its fields, overridable through get_benchmark's options).
    if not isinstance(benchmark, (QM9Benchmark, YeastBenchmark)):
        raise TypeError(f"no norm-free MLP for a {type(benchmark).__name__}.")
    return MultiTaskMLP(
        benchmark.input_shape[0],
        {task: benchmark.task(task).num_outputs for task in tasks},
        hidden_sizes=benchmark.hidden_sizes,
        head_hidden=benchmark.head_hidden,
        batch_norm=False,
    )


NORM_FREE_MODELS: dict[str, Callable[[Benchmark, tuple[str, ...]], nn.Module]] = {
    "multimnist": _lenet,
    "multifashion": _lenet,
    "fashion_mnist": _lenet,
    "qm9": _mlp,
    "yeast": _mlp,
}
"""Benchmark name → ``(benchmark, tasks) -> network`` without BatchNorm."""


def norm_free_model(
    benchmark: Benchmark | str,
) -> Callable[[Sequence[str]], nn.Module] | None:
    """A factory of the benchmark's network without BatchNorm, or None when there is none.

    The factory fits :func:`~taskprio.pareto.train_pareto`'s ``model_factory``: it takes the
    task names and returns a fresh network with ``forward(x) -> {task: output}``.

    Args:
        benchmark: a benchmark or its registry name (a :class:`~taskprio.data.Benchmark`
            carries its options, such as the MLP widths).

    Returns:
        ``tasks -> nn.Module``, or None for a benchmark without a norm-free network
        (:data:`NORM_FREE_MODELS` lists those that have one).

    >>> import torch
    >>> make = norm_free_model("yeast")
    >>> model = make(["class1", "class2"])
    >>> tuple(model(torch.zeros(3, 103))["class1"].shape)
    (3, 1)
    >>> any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    False
    >>> norm_free_model("celeba") is None
    True
    """
    spec = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    build = NORM_FREE_MODELS.get(spec.name)
    if build is None:
        return None

    def make(tasks: Sequence[str]) -> nn.Module:
        return build(spec, tuple(tasks))

    return make
