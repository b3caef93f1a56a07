"""Per-task metrics accumulated over a split, and Δm against single-task baselines.

Each task metric is a ``torchmetrics.Metric`` with ``update(prediction, target, mask=None)``
and ``compute() -> dict[str, float]``; ``directions`` says, per output, whether higher is
better. Rates are in percent, as in the paper tables. :func:`delta_m` works on plain dicts.

>>> import torch
>>> from taskprio.metrics import DepthMetrics, SegmentationMetrics, delta_m
>>> semseg = SegmentationMetrics(num_classes=3)
>>> semseg.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 2, 1]]))
>>> depth = DepthMetrics()
>>> depth.update(torch.tensor([[1.5, 2.0]]), torch.tensor([[1.0, 2.0]]))
>>> method = {"semseg/mIoU": semseg.compute()["mIoU"], "depth/rmse": depth.compute()["rmse"]}
>>> baseline = {"semseg/mIoU": 50.0, "depth/rmse": 0.5}
>>> round(delta_m(method, baseline, {"depth/rmse"}), 2)
31.31
"""

from typing import TYPE_CHECKING, Any

from taskprio.metrics._delta_m import MeanStd, delta_m, mean_std

if TYPE_CHECKING:
    from taskprio.metrics._classification import (
        BinaryClassificationMetrics,
        ClassificationMetrics,
    )
    from taskprio.metrics._common import TaskMetric
    from taskprio.metrics._depth import DepthMetrics
    from taskprio.metrics._edge import EdgeMetrics
    from taskprio.metrics._normals import NormalMetrics, angular_error_deg
    from taskprio.metrics._regression import RegressionMetrics
    from taskprio.metrics._saliency import SaliencyMetrics
    from taskprio.metrics._segmentation import SegmentationMetrics

# The metric classes load torchmetrics (about 1.5 s, and matplotlib with it): imported on first
# use, so that Δm and the trainer do not pay for it.
_LAZY = {
    "BinaryClassificationMetrics": "_classification",
    "ClassificationMetrics": "_classification",
    "TaskMetric": "_common",
    "DepthMetrics": "_depth",
    "EdgeMetrics": "_edge",
    "NormalMetrics": "_normals",
    "angular_error_deg": "_normals",
    "RegressionMetrics": "_regression",
    "SaliencyMetrics": "_saliency",
    "SegmentationMetrics": "_segmentation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskprio.metrics' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"taskprio.metrics.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BinaryClassificationMetrics",
    "ClassificationMetrics",
    "DepthMetrics",
    "EdgeMetrics",
    "MeanStd",
    "NormalMetrics",
    "RegressionMetrics",
    "SaliencyMetrics",
    "SegmentationMetrics",
    "TaskMetric",
    "angular_error_deg",
    "delta_m",
    "mean_std",
]
