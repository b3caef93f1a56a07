"""Surface normals: angular error statistics in degrees, the median from a fine histogram."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from taskprio.metrics._common import PERCENT, expand_mask, nan_outputs

# 0.01° bins over [0°, 180°]: the median is reported to within half a bin (0.005°), well
# below the two decimals of the tables, for 144 kB of state to synchronise.
BIN_WIDTH_DEG = 0.01
NUM_BINS = 18_000
WITHIN_DEG = (11.25, 22.5, 30.0)


def angular_error_deg(prediction: Tensor, target: Tensor) -> Tensor:
    """The angle between predicted and target normals, in degrees.

    Computed as atan2(‖n̂ × n‖, n̂ · n), which keeps full precision for small angles where
    arccos of the normalised dot product loses it; neither vector needs to be unit length.
    A zero prediction has no direction and is given 90°, as MTI-Net's normalised-to-zero
    vector gets.

    Args:
        prediction: [B, 3, *] predicted normals along dim 1 (any length), e.g. [B, 3, H, W].
        target: [B, 3, *] target normals (any non-zero length).

    Returns:
        [B, *] angles in [0°, 180°], in the dtype of the inputs.

    >>> angular_error_deg(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    tensor([45.])
    """
    cross = torch.linalg.vector_norm(torch.linalg.cross(prediction, target, dim=1), dim=1)
    dot = (prediction * target).sum(dim=1)
    angles = torch.rad2deg(torch.atan2(cross, dot))
    is_zero = torch.linalg.vector_norm(prediction, dim=1) == 0
    return angles.masked_fill(is_zero, 90.0)


def histogram_median(histogram: Tensor, bin_width: float) -> float:
    """The median of the values counted in a histogram, each taken at its bin's centre.

    As ``numpy.median``: for an even count, the mean of the two middle values.

    Args:
        histogram: [num_bins] counts; bin i holds values in [i · w, (i + 1) · w).
        bin_width: w.

    Returns:
        The median, or NaN for an empty histogram.

    >>> histogram_median(torch.tensor([1, 0, 2, 1]), bin_width=1.0)
    2.5
    """
    count = int(histogram.sum())
    if count == 0:
        return math.nan
    cumulative = torch.cumsum(histogram, dim=0)
    # The 0-based ranks of the middle value(s): one for an odd count, two for an even one.
    ranks = torch.tensor([(count - 1) // 2, count // 2], device=histogram.device)
    bins = torch.searchsorted(cumulative, ranks, right=True)
    return float((bins.double() + 0.5).mean()) * bin_width


class NormalMetrics(Metric):
    """Angular error of surface normals over every valid pixel of a split.

    With θ the angle between predicted and target normal at each valid pixel of the **whole
    split** (see :func:`angular_error_deg`):

    - ``mean``: the mean of θ in degrees (lower is better; counted in Δm);
    - ``median``: the median of θ in degrees, read from a histogram of 0.01° bins, so within
      0.005° of the exact median (lower is better);
    - ``within_11.25``, ``within_22.5``, ``within_30``: the percentage of pixels with
      θ < 11.25°, 22.5°, 30° (strictly, as MTI-Net; higher is better).

    All statistics are sums (angle sum, counts, histogram), so they merge across batches and
    processes exactly. A pixel is valid where the target normal is finite and non-zero and,
    if given, ``mask`` is True.

    Args:
        kwargs: ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute`` …).

    ``update(prediction, target, mask=None)`` takes ``prediction`` and ``target`` [B, 3, H, W]
    (normals along dim 1) and ``mask`` [B, H, W] or [B].

    >>> metric = NormalMetrics()
    >>> up = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    >>> tilted = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]).view(1, 3, 1, 2)
    >>> {name: round(value, 4) for name, value in metric(tilted, up).items()}
    {'mean': 22.5, 'median': 22.505, 'within_11.25': 50.0, 'within_22.5': 50.0, 'within_30': 50.0}
    """

    directions: ClassVar[dict[str, bool]] = {
        "mean": False,
        "median": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    }
    primary: ClassVar[str] = "mean"
    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    angle_sum: Tensor
    count: Tensor
    within: Tensor
    histogram: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # float64 sum: a split has ~10⁸ pixels, too many to add in float32.
        self.add_state("angle_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(
            "within", torch.zeros(len(WITHIN_DEG), dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state("histogram", torch.zeros(NUM_BINS, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch; pixels with a zero or non-finite target, or mask False, do not count."""
        if prediction.shape != target.shape or target.ndim < 2 or target.shape[1] != 3:
            raise ValueError(
                "`prediction` and `target` must both be [B, 3, H, W] normals; got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}."
            )
        valid = torch.isfinite(target).all(dim=1) & (target != 0).any(dim=1)
        if mask is not None:
            valid &= expand_mask(mask, valid.shape)
        # [N, 3] normals of the N valid pixels, in float64 so the angles are exact to ~1e-12°.
        angles = angular_error_deg(
            prediction.movedim(1, -1)[valid].double(), target.movedim(1, -1)[valid].double()
        )
        self.angle_sum += angles.sum()
        self.count += angles.numel()
        thresholds = angles.new_tensor(WITHIN_DEG)
        self.within += (angles.unsqueeze(1) < thresholds).sum(dim=0)
        bins = (angles / BIN_WIDTH_DEG).long().clamp_(0, NUM_BINS - 1)
        self.histogram += torch.bincount(bins, minlength=NUM_BINS)

    def compute(self) -> dict[str, float]:
        """The angular error statistics; NaN when no valid pixel was added."""
        count = int(self.count)
        if count == 0:
            return nan_outputs(self.directions)
        within = (self.within.double() / count * PERCENT).tolist()
        return {
            "mean": float(self.angle_sum) / count,
            "median": histogram_median(self.histogram, BIN_WIDTH_DEG),
            **{
                f"within_{threshold:g}": value
                for threshold, value in zip(WITHIN_DEG, within, strict=True)
            },
        }
