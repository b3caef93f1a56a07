"""Scalar or dense regression: mean absolute and mean squared error over labelled entries."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from taskprio.metrics._common import ComposedMetric, check_same_shape, expand_mask


class RegressionMetrics(ComposedMetric):
    """Mean absolute and mean squared error over a split; lower is better.

    ``mae`` = Σ |ŷ − y| / N and ``mse`` = Σ (ŷ − y)² / N over the N labelled entries of the
    **whole split** (torchmetrics' ``MeanAbsoluteError`` and ``MeanSquaredError``). An entry
    counts where the target is finite and, if given, ``mask`` is True.

    Args:
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` and ``target`` of one shape,
    batch first, and ``mask`` of that shape or [B].

    >>> metric = RegressionMetrics()
    >>> metric.update(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([2.0, 4.0, float("nan")]))
    >>> metric.compute()
    {'mae': 1.5, 'mse': 2.5}
    """

    directions: ClassVar[dict[str, bool]] = {"mae": False, "mse": False}
    primary: ClassVar[str] = "mae"
    higher_is_better = False
    _sources: ClassVar[dict[str, tuple[str, float]]] = {
        "mae": ("mean_absolute_error", 1.0),
        "mse": ("mean_squared_error", 1.0),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hold(
            {
                "mean_absolute_error": MeanAbsoluteError(**kwargs),
                "mean_squared_error": MeanSquaredError(**kwargs),
            }
        )

    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_same_shape(prediction, target)
        valid = torch.isfinite(target)
        if mask is not None:
            valid &= expand_mask(mask, target.shape)
        return prediction[valid], target[valid], valid.sum()
