"""Edge detection: an F-measure at one fixed threshold (not the MATLAB odsF)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torchmetrics.classification import BinaryF1Score

from taskprio.metrics._common import PERCENT, ComposedMetric, check_same_shape, expand_mask


class EdgeMetrics(ComposedMetric):
    """Edge F-measure over every labelled pixel of a split, **in percent**; higher is better.

    ``F`` = 2 P R / (P + R) with precision P and recall R of ``prediction > threshold``
    against the edge map, counted pixel by pixel over the split (torchmetrics'
    ``BinaryF1Score``). This is a cheap proxy for monitoring, **not** the odsF of the
    published tables: that one (MATLAB ``seism``) matches predicted and true edge pixels
    within a distance tolerance after thinning, and takes the best threshold over the
    dataset. Edge is an auxiliary task in the CSO experiments and is not counted in Δm.

    Args:
        threshold: the probability above which a pixel is an edge.
        ignore_index: the target value of unlabelled pixels.
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` probabilities in [0, 1]
    (torchmetrics applies a sigmoid to a batch with values outside [0, 1]) and ``target`` in
    {0, 1} (or ``ignore_index``) of one shape, batch first, and ``mask`` of that shape or [B].

    >>> import torch
    >>> metric = EdgeMetrics()
    >>> metric.update(torch.tensor([[0.9, 0.8, 0.1, 0.7]]), torch.tensor([[1, 0, 1, 255]]))
    >>> metric.compute()
    {'F': 50.0}
    """

    directions: ClassVar[dict[str, bool]] = {"F": True}
    primary: ClassVar[str] = "F"
    higher_is_better = True
    _sources: ClassVar[dict[str, tuple[str, float]]] = {"F": ("f1", PERCENT)}

    def __init__(self, *, threshold: float = 0.5, ignore_index: int = 255, **kwargs: Any) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"`threshold` must be in (0, 1); got {threshold}.")
        super().__init__(**kwargs)
        self._threshold = float(threshold)
        self._ignore_index = ignore_index
        self._hold({"f1": BinaryF1Score(threshold=threshold, ignore_index=ignore_index, **kwargs)})

    def extra_repr(self) -> str:
        return f"threshold={self._threshold:g}, ignore_index={self._ignore_index}"

    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_same_shape(prediction, target)
        labels = target.long()
        if mask is not None:
            labels = labels.masked_fill(~expand_mask(mask, labels.shape), self._ignore_index)
        return prediction, labels, (labels != self._ignore_index).sum()
