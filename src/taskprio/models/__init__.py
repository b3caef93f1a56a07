"""Backbones and heads for the multi-task benchmarks.

>>> import torch, taskprio.models
>>> model = taskprio.models.MultiLeNet(("left", "right"))
>>> sorted(model(torch.zeros(2, 1, 28, 28)))
['left', 'right']
"""

from taskprio.models._heads import BACKBONES, DenseHead, DenseMultiTaskModel
from taskprio.models._lenet import MultiLeNet
from taskprio.models._mlp import MultiTaskMLP
from taskprio.models._mpnn import MPNN
from taskprio.models._resnet import ResNet18Dilated
from taskprio.models._segnet import SegNet

__all__ = [
    "BACKBONES",
    "MPNN",
    "DenseHead",
    "DenseMultiTaskModel",
    "MultiLeNet",
    "MultiTaskMLP",
    "ResNet18Dilated",
    "SegNet",
]
