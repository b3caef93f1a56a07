"""Backbones and heads for the multi-task benchmarks.

>>> import torch, taskprio.models
>>> model = taskprio.models.MultiLeNet(("left", "right"))
>>> sorted(model(torch.zeros(2, 1, 28, 28)))
['left', 'right']
"""

from taskprio.models._lenet import MultiLeNet

__all__ = ["MultiLeNet"]
