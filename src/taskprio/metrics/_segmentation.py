"""Semantic segmentation (and human parts): mIoU, pixel accuracy and mean accuracy."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from taskprio.metrics._common import PERCENT, ComposedMetric, expand_mask


class SegmentationMetrics(ComposedMetric):
    """mIoU, pixel accuracy and mean accuracy over a split, **in percent**.

    All three come from torchmetrics, accumulated over every labelled pixel of the split (one
    confusion matrix, not a mean over images):

    - ``mIoU``: ``MulticlassJaccardIndex(average="macro")``, the mean over classes of
      TP / (TP + FP + FN).
    - ``pixel_acc``: ``MulticlassAccuracy(average="micro")``, correct pixels / labelled pixels.
    - ``mean_acc``: ``MulticlassAccuracy(average="macro")``, the mean over classes of the
      class's recall TP / (TP + FN).

    Pixels whose target is ``ignore_index`` or whose ``mask`` is False do not count. A class
    that is neither in the targets nor in the predictions of the split is left out of both
    means (torchmetrics' rule); MTI-Net's ``SemsegMeter`` counts it as IoU 0 instead, which
    only matters for splits missing a class. For mean accuracy torchmetrics also counts a class
    predicted but never labelled, with recall 0.

    Args:
        num_classes: C, the number of classes (without the ignore label).
        ignore_index: the target value of unlabelled pixels (MTI-Net's 255).
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` [B, C, H, W] scores (argmax
    over C) or [B, H, W] labels, ``target`` [B, H, W] labels (floats are cast to integers) and
    ``mask`` [B, H, W] or [B] booleans, True where labelled.

    >>> import torch
    >>> metric = SegmentationMetrics(num_classes=2)
    >>> metric.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 0, 255]]))
    >>> {name: round(value, 2) for name, value in metric.compute().items()}
    {'mIoU': 50.0, 'pixel_acc': 66.67, 'mean_acc': 75.0}
    """

    directions: ClassVar[dict[str, bool]] = {"mIoU": True, "pixel_acc": True, "mean_acc": True}
    primary: ClassVar[str] = "mIoU"
    higher_is_better = True
    _sources: ClassVar[dict[str, tuple[str, float]]] = {
        "mIoU": ("jaccard", PERCENT),
        "pixel_acc": ("micro_accuracy", PERCENT),
        "mean_acc": ("macro_accuracy", PERCENT),
    }

    def __init__(self, num_classes: int, *, ignore_index: int = 255, **kwargs: Any) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer ≥ 2; got {num_classes!r}.")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"`ignore_index` must be an integer; got {ignore_index!r}.")
        super().__init__(**kwargs)
        self._num_classes = num_classes
        self._ignore_index = ignore_index
        options = {"num_classes": num_classes, "ignore_index": ignore_index, **kwargs}
        self._hold(
            {
                "jaccard": MulticlassJaccardIndex(average="macro", **options),
                "micro_accuracy": MulticlassAccuracy(average="micro", **options),
                "macro_accuracy": MulticlassAccuracy(average="macro", **options),
            }
        )

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return self._num_classes

    @property
    def ignore_index(self) -> int:
        """The target value of unlabelled pixels."""
        return self._ignore_index

    def extra_repr(self) -> str:
        return f"num_classes={self._num_classes}, ignore_index={self._ignore_index}"

    def _prepare(
        self, prediction: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if prediction.ndim == target.ndim + 1:
            if prediction.shape[1] != self._num_classes:
                raise ValueError(
                    f"`prediction` scores must have C = {self._num_classes} channels in dim 1; "
                    f"got shape {tuple(prediction.shape)}."
                )
            expected = prediction.shape[:1] + prediction.shape[2:]
        else:
            expected = prediction.shape
        if target.shape != expected:
            raise ValueError(
                f"`target` must be [B, H, W] labels matching `prediction` {tuple(prediction.shape)}"
                f" ([B, C, H, W] scores or [B, H, W] labels); got shape {tuple(target.shape)}."
            )
        labels = target.long()
        if mask is not None:
            labels = labels.masked_fill(~expand_mask(mask, labels.shape), self._ignore_index)
        return prediction, labels, (labels != self._ignore_index).sum()
