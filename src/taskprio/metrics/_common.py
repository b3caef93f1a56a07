"""What every task metric shares: the interface, mask handling and the composed base class."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import SumMetric
from torchmetrics.wrappers.abstract import WrapperMetric

# Rates (IoU, accuracies, F-measures, % of pixels within an angle) are reported in percent,
# as in the paper tables; errors (rmse, abs_rel, degrees, mae …) keep their own unit.
PERCENT = 100.0


@runtime_checkable
class TaskMetric(Protocol):
    """The interface shared by every metric in :mod:`taskprio.metrics`.

    Each is a ``torchmetrics.Metric``: it accumulates summable statistics over a whole split,
    synchronises them across processes in :meth:`compute`, and starts over on :meth:`reset`.

    Class attributes:
        directions: each output name → True when higher is better.
        primary: the output MTI-Net's Δm counts for this task; ``higher_is_better`` (the
            torchmetrics attribute, a single bool) is its direction.
    """

    directions: ClassVar[dict[str, bool]]
    primary: ClassVar[str]

    def update(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch; ``mask`` (True = labelled) leaves the other entries out."""

    def compute(self) -> dict[str, float]:
        """The metrics over everything added since the last reset, one float per output."""

    def reset(self) -> None:
        """Forget everything added."""


def nan_outputs(directions: dict[str, bool]) -> dict[str, float]:
    """Every output NaN: what a metric reports when no labelled entry was added."""
    return dict.fromkeys(directions, math.nan)


def expand_mask(mask: Tensor, shape: torch.Size, *, name: str = "mask") -> Tensor:
    """Broadcast a per-entry or per-sample mask to ``shape``.

    Args:
        mask: boolean, either ``shape`` itself or [B] (one flag per sample).
        shape: the shape of the labels, batch first.
        name: the argument's name in error messages.

    Returns:
        A boolean tensor of ``shape``, True where the entry counts.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"`{name}` must be a boolean tensor; got dtype {mask.dtype}.")
    if mask.shape == shape:
        return mask
    if mask.ndim == 1 and len(shape) >= 1 and mask.shape[0] == shape[0]:
        return mask.view(-1, *([1] * (len(shape) - 1))).expand(shape)
    raise ValueError(
        f"`{name}` must have the labels' shape {tuple(shape)} or one flag per sample "
        f"({shape[0] if len(shape) else '?'},); got shape {tuple(mask.shape)}."
    )


def check_same_shape(prediction: Tensor, target: Tensor) -> None:
    """Raise a ValueError naming both shapes when they differ."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"`prediction` and `target` must have the same shape; got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}."
        )


class ComposedMetric(WrapperMetric):
    """A task metric whose outputs come from torchmetrics metrics it holds.

    This is the pattern of ``torchmetrics.wrappers.MultitaskWrapper``: each held metric keeps
    and synchronises its own state, so this class has none of its own. A subclass sets the
    held metrics with :meth:`_hold` and maps outputs to them in ``_sources``; its
    :meth:`_prepare` turns (prediction, target, mask) into the (preds, target) pair all parts
    take, masked entries already removed or set to an ignore index. A ``SumMetric`` counts the
    labelled entries, so a split without any gives NaN on every process alike.
    """

    directions: ClassVar[dict[str, bool]]
    primary: ClassVar[str]
    is_differentiable = False
    full_state_update = False
    # output → (part, factor applied to the part's value).
    _sources: ClassVar[dict[str, tuple[str, float]]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_labelled = SumMetric(nan_strategy="error", **kwargs)
        self.parts = nn.ModuleDict()

    def _hold(self, parts: dict[str, Metric]) -> None:
        self.parts.update(parts)

    def _held(self) -> dict[str, Metric]:
        return {name: cast(Metric, part) for name, part in self.parts.items()}

    @abstractmethod
    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(preds, target) for every part, and the number of labelled entries (a 0-d tensor)."""

    def update(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch; entries where ``mask`` is False (or the target is ignored) do not count."""
        preds, labels, num_labelled = self._prepare(prediction, target, mask)
        for part in self._held().values():
            part.update(preds, labels)
        self.num_labelled.update(num_labelled)

    def compute(self) -> dict[str, float]:
        """The metrics over everything added since the last reset (NaN if nothing labelled)."""
        # Every part computes on every process, even when nothing is labelled here: computing
        # synchronises, and a process that skipped it would leave the others waiting.
        values = {name: float(part.compute()) for name, part in self._held().items()}
        if float(self.num_labelled.compute()) == 0:
            return nan_outputs(self.directions)
        return self._outputs(values)

    def forward(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None = None
    ) -> dict[str, float]:
        """Add a batch and return the metrics of that batch alone."""
        preds, labels, num_labelled = self._prepare(prediction, target, mask)
        values = {name: float(part(preds, labels)) for name, part in self._held().items()}
        if float(self.num_labelled(num_labelled)) == 0:
            return nan_outputs(self.directions)
        return self._outputs(values)

    def reset(self) -> None:
        """Forget everything added."""
        for part in self._held().values():
            part.reset()
        self.num_labelled.reset()
        super().reset()

    def _outputs(self, values: dict[str, float]) -> dict[str, float]:
        return {out: values[part] * factor for out, (part, factor) in self._sources.items()}
