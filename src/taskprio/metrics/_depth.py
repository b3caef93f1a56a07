"""Depth (or disparity) estimation: rmse, absolute and relative errors over valid pixels."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.regression import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
)

from taskprio.metrics._common import ComposedMetric, check_same_shape, expand_mask


class DepthMetrics(ComposedMetric):
    """Depth errors over every valid pixel of a split; all lower is better.

    With d̂ the prediction, d the target and V the valid pixels of the **whole split**
    (N = |V|):

    - ``rmse`` = sqrt(Σ_V (d̂ − d)² / N), torchmetrics' ``MeanSquaredError(squared=False)``;
    - ``abs_err`` = Σ_V |d̂ − d| / N, ``MeanAbsoluteError``;
    - ``abs_rel`` = Σ_V |d̂ − d| / d / N, ``MeanAbsolutePercentageError`` (a fraction, not
      percent, despite the name; it divides by max(d, 1.17e-6));
    - ``rel_err`` = ``abs_rel``: the same formula under the name the Cityscapes tables use.

    Convention: every statistic is pooled over the pixels of the split, not averaged per image
    or per batch. MTI-Net's ``DepthMeter`` (Tables 1–2 of the CSO paper) pools rmse this way.
    The CAGrad/MTAN Cityscapes code (Table 3) averages per-batch means of abs and rel error
    instead, which equals this only when every batch has as many valid pixels. MTI-Net also
    clamps predictions to ≥ 1e-9 first; here predictions are used as they are.

    A pixel is valid where the target is finite and > 0 (MTI-Net and CAGrad mark missing depth
    with 0) and, if given, ``mask`` is True. Data that marks missing depth otherwise (MTI-Net's
    loaders write 255) must pass a mask.

    Args:
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` and ``target`` of one shape,
    batch first ([B, H, W] or [B, 1, H, W]), and ``mask`` of that shape or [B].

    >>> metric = DepthMetrics()
    >>> metric.update(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[2.0, 3.0, 0.0]]))
    >>> metric.compute()
    {'rmse': 0.7071067690849304, 'abs_rel': 0.25, 'abs_err': 0.5, 'rel_err': 0.25}
    """

    directions: ClassVar[dict[str, bool]] = {
        "rmse": False,
        "abs_rel": False,
        "abs_err": False,
        "rel_err": False,
    }
    primary: ClassVar[str] = "rmse"
    higher_is_better = False
    _sources: ClassVar[dict[str, tuple[str, float]]] = {
        "rmse": ("root_mean_squared_error", 1.0),
        "abs_rel": ("mean_relative_error", 1.0),
        "abs_err": ("mean_absolute_error", 1.0),
        "rel_err": ("mean_relative_error", 1.0),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hold(
            {
                "root_mean_squared_error": MeanSquaredError(squared=False, **kwargs),
                "mean_absolute_error": MeanAbsoluteError(**kwargs),
                "mean_relative_error": MeanAbsolutePercentageError(**kwargs),
            }
        )

    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_same_shape(prediction, target)
        valid = torch.isfinite(target) & (target > 0)
        if mask is not None:
            valid &= expand_mask(mask, target.shape)
        return prediction[valid], target[valid], valid.sum()
