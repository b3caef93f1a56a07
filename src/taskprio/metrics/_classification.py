"""Classification: accuracy of a multi-class task, accuracy and F1 of binary (multi-label) ones."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, MulticlassAccuracy

from taskprio.metrics._common import PERCENT, ComposedMetric, check_same_shape, expand_mask


class ClassificationMetrics(ComposedMetric):
    """Accuracy of a multi-class task over a split, **in percent**; higher is better.

    ``acc`` is torchmetrics' ``MulticlassAccuracy(average="micro")``: correct samples over
    labelled samples. Samples whose ``mask`` is False, or whose target is ``ignore_index``,
    do not count.

    Args:
        num_classes: C.
        ignore_index: the target value of an unlabelled sample.
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` [B, C] scores (argmax over
    C) or [B] labels, ``target`` [B] labels and ``mask`` [B] booleans.

    >>> import torch
    >>> metric = ClassificationMetrics(num_classes=3)
    >>> scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    >>> metric.update(scores, torch.tensor([0, 2, 2]), mask=torch.tensor([True, True, False]))
    >>> metric.compute()
    {'acc': 50.0}
    """

    directions: ClassVar[dict[str, bool]] = {"acc": True}
    primary: ClassVar[str] = "acc"
    higher_is_better = True
    _sources: ClassVar[dict[str, tuple[str, float]]] = {"acc": ("accuracy", PERCENT)}

    def __init__(self, num_classes: int, *, ignore_index: int = -1, **kwargs: Any) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer ≥ 2; got {num_classes!r}.")
        super().__init__(**kwargs)
        self._num_classes = num_classes
        self._ignore_index = ignore_index
        self._hold(
            {
                "accuracy": MulticlassAccuracy(
                    num_classes, average="micro", ignore_index=ignore_index, **kwargs
                )
            }
        )

    def extra_repr(self) -> str:
        return f"num_classes={self._num_classes}, ignore_index={self._ignore_index}"

    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if target.ndim != 1 or prediction.shape[:1] != target.shape or prediction.ndim > 2:
            raise ValueError(
                "`prediction` must be [B, C] scores or [B] labels and `target` [B] labels; got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}."
            )
        labels = target.long()
        if mask is not None:
            labels = labels.masked_fill(~expand_mask(mask, labels.shape), self._ignore_index)
        return prediction, labels, (labels != self._ignore_index).sum()


class BinaryClassificationMetrics(ComposedMetric):
    """Accuracy and F1 of binary decisions over a split, **in percent**; higher is better.

    For one binary task or a multi-label one (one decision per label): ``acc`` and ``f1`` are
    torchmetrics' ``BinaryAccuracy`` and ``BinaryF1Score`` of ``prediction > threshold``,
    pooled over every labelled (sample, label) entry. Entries whose ``mask`` is False, or whose
    target is ``ignore_index``, do not count.

    Args:
        threshold: the probability above which the decision is positive.
        ignore_index: the target value of an unlabelled entry.
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` probabilities in [0, 1]
    (torchmetrics applies a sigmoid to a batch with values outside [0, 1], so pass
    probabilities) and ``target`` in {0, 1} of one shape ([B] or [B, L]), and ``mask`` of that
    shape or [B].

    >>> import torch
    >>> metric = BinaryClassificationMetrics()
    >>> metric.update(torch.tensor([[0.9, 0.2], [0.6, 0.4]]), torch.tensor([[1, 0], [0, 1]]))
    >>> metric.compute()
    {'acc': 50.0, 'f1': 50.0}
    """

    directions: ClassVar[dict[str, bool]] = {"acc": True, "f1": True}
    primary: ClassVar[str] = "acc"
    higher_is_better = True
    _sources: ClassVar[dict[str, tuple[str, float]]] = {
        "acc": ("accuracy", PERCENT),
        "f1": ("f1", PERCENT),
    }

    def __init__(self, *, threshold: float = 0.5, ignore_index: int = -1, **kwargs: Any) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"`threshold` must be in (0, 1); got {threshold}.")
        super().__init__(**kwargs)
        self._threshold = float(threshold)
        self._ignore_index = ignore_index
        options = {"threshold": threshold, "ignore_index": ignore_index, **kwargs}
        self._hold({"accuracy": BinaryAccuracy(**options), "f1": BinaryF1Score(**options)})

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
