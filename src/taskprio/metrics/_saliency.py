"""Saliency: the best IoU and the best F-β over a fixed grid of thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from taskprio.metrics._common import PERCENT, check_same_shape, expand_mask, nan_outputs

# MTI-Net's grid, numpy.linspace(0.2, 0.9, 15): 0.20, 0.25, …, 0.90.
MTI_NET_THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(15))


def _safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Divide elementwise, giving 0 where the denominator is 0."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), 0.0)


class SaliencyMetrics(Metric):
    """Saliency mIoU and maxF over a split, **in percent**, both higher is better.

    The prediction is binarised at each threshold τ of a fixed grid (``prediction > τ``,
    strictly, as MTI-Net); each output is the best over the grid:

    - ``mIoU``, as MTI-Net's ``SaliencyMeter``: at each τ, the IoU of each **image**
      (TP / (TP + FP + FN) over its labelled pixels; 1 when the image has neither a salient
      nor a predicted pixel), averaged over the images; then the maximum over τ. This is the
      saliency metric Δm counts on PASCAL-Context.
    - ``maxF``: at each τ, precision P = TP / (TP + FP) and recall R = TP / (TP + FN) from
      TP, FP, FN counted over every labelled pixel of the split, and
      F_β = (1 + β²) P R / (β² P + R) with β² = 0.3 (the salient-object-detection convention);
      then the maximum over τ. A 0/0 is 0. This differs from MTI-Net's ``maxF``, which takes
      β = 1 on precision and recall averaged per image.

    State is per-threshold sums (IoU sum, image count, TP, FP, FN), so it merges across
    batches and processes exactly. An image without any labelled pixel does not count.

    Args:
        thresholds: the grid of τ (MTI-Net's ``linspace(0.2, 0.9, 15)`` by default).
        beta_squared: β² of the F-measure.
        ignore_index: the target value of unlabelled pixels.
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` probabilities in [0, 1]
    and ``target`` labels in {0, 1} (or ``ignore_index``) of one shape, [B, H, W] or
    [B, 1, H, W] with one image per leading index, and ``mask`` of that shape or [B].

    >>> metric = SaliencyMetrics(thresholds=[0.3, 0.6])
    >>> metric.update(torch.tensor([[0.1, 0.4, 0.7, 0.8]]), torch.tensor([[0, 1, 1, 0]]))
    >>> {name: round(value, 2) for name, value in metric.compute().items()}
    {'mIoU': 66.67, 'maxF': 72.22}
    """

    directions: ClassVar[dict[str, bool]] = {"mIoU": True, "maxF": True}
    primary: ClassVar[str] = "mIoU"
    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    iou_sum: Tensor
    num_images: Tensor
    true_positives: Tensor
    false_positives: Tensor
    false_negatives: Tensor

    def __init__(
        self,
        *,
        thresholds: Sequence[float] = MTI_NET_THRESHOLDS,
        beta_squared: float = 0.3,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        thresholds = tuple(float(threshold) for threshold in thresholds)
        if not thresholds or not all(math.isfinite(threshold) for threshold in thresholds):
            raise ValueError(
                f"`thresholds` must be a non-empty list of finite numbers; got {thresholds}."
            )
        if not beta_squared > 0:
            raise ValueError(f"`beta_squared` must be positive; got {beta_squared}.")
        super().__init__(**kwargs)
        self._thresholds = thresholds
        self._beta_squared = float(beta_squared)
        self._ignore_index = ignore_index
        num_thresholds = len(thresholds)
        self.add_state(
            "iou_sum", torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("num_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        for name in ("true_positives", "false_positives", "false_negatives"):
            self.add_state(
                name, torch.zeros(num_thresholds, dtype=torch.int64), dist_reduce_fx="sum"
            )

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The grid of τ."""
        return self._thresholds

    @property
    def beta_squared(self) -> float:
        """β² of the F-measure."""
        return self._beta_squared

    def extra_repr(self) -> str:
        return (
            f"thresholds={len(self._thresholds)} in [{min(self._thresholds):g}, "
            f"{max(self._thresholds):g}], beta_squared={self._beta_squared:g}, "
            f"ignore_index={self._ignore_index}"
        )

    def update(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch of images; unlabelled pixels (ignored or mask False) do not count."""
        check_same_shape(prediction, target)
        if target.ndim < 2:
            raise ValueError(f"`target` must be [B, H, W] images; got shape {tuple(target.shape)}.")
        labelled = target != self._ignore_index
        if mask is not None:
            labelled &= expand_mask(mask, target.shape)
        if bool(((target != 0) & (target != 1) & labelled).any()):
            raise ValueError(
                f"`target` must hold 0, 1 or `ignore_index` ({self._ignore_index}); got "
                f"{torch.unique(target[labelled]).tolist()[:8]}. Binarise the saliency map first."
            )
        batch_size = target.shape[0]
        # [1, B, P] against [T, 1, 1] → [T, B, P]: the prediction at every threshold.
        scores = prediction.reshape(1, batch_size, -1)
        salient = (target == 1).reshape(1, batch_size, -1)
        labelled = labelled.reshape(1, batch_size, -1)
        taus = prediction.new_tensor(self._thresholds).view(-1, 1, 1)
        predicted = scores > taus
        true_positives = (predicted & salient & labelled).sum(dim=-1)  # [T, B]
        false_positives = (predicted & ~salient & labelled).sum(dim=-1)
        false_negatives = (~predicted & salient & labelled).sum(dim=-1)
        union = true_positives + false_positives + false_negatives
        # MTI-Net's convention: an image with nothing salient, predicted or labelled, has IoU 1.
        iou = torch.where(union > 0, true_positives.double() / union.clamp(min=1), 1.0)
        has_labels = labelled.any(dim=-1)  # [1, B]
        self.iou_sum += (iou * has_labels).sum(dim=-1)
        self.num_images += has_labels.sum()
        self.true_positives += true_positives.sum(dim=-1)
        self.false_positives += false_positives.sum(dim=-1)
        self.false_negatives += false_negatives.sum(dim=-1)

    def compute(self) -> dict[str, float]:
        """The saliency mIoU and maxF in percent; NaN when no labelled pixel was added."""
        if int(self.num_images) == 0:
            return nan_outputs(self.directions)
        true_positives = self.true_positives.double()
        precision = _safe_ratio(true_positives, true_positives + self.false_positives)
        recall = _safe_ratio(true_positives, true_positives + self.false_negatives)
        beta_squared = self._beta_squared
        f_beta = _safe_ratio(
            (1 + beta_squared) * precision * recall, beta_squared * precision + recall
        )
        return {
            "mIoU": float((self.iou_sum / int(self.num_images)).max()) * PERCENT,
            "maxF": float(f_beta.max()) * PERCENT,
        }
