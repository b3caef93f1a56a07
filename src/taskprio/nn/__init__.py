"""Task-specific normalization: one norm module per task, chosen by :func:`active_task`.

>>> import torch
>>> from torch import nn
>>> from taskprio.nn import active_task, make_task_specific
>>> model = make_task_specific(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), ("a", "b"))
>>> with active_task(model, "a"):
...     model(torch.randn(8, 4)).shape
torch.Size([8, 4])
"""

from ._convert import make_task_specific
from ._routing import active_task, task_norms
from ._task_norm import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskBatchNorm3d,
    TaskGroupNorm,
    TaskLayerNorm,
    TaskNorm,
)

__all__ = [
    "TaskBatchNorm1d",
    "TaskBatchNorm2d",
    "TaskBatchNorm3d",
    "TaskGroupNorm",
    "TaskLayerNorm",
    "TaskNorm",
    "active_task",
    "make_task_specific",
    "task_norms",
]
