"""taskprio: multi-task optimization for PyTorch, built around task priority.

The one object most users need is :class:`MultiTaskStep`; task-specific normalization lives in
:mod:`taskprio.nn`, per-task gradients in :mod:`taskprio.engine`, and the aggregation methods and
loss weightings in :mod:`taskprio.methods` and :mod:`taskprio.weighting`.

>>> import taskprio
>>> "pcgrad" in taskprio.methods.available()
True
"""

from taskprio import data, engine, methods, models, nn, priority, weighting
from taskprio.optim import MultiTaskStep, StepRecord

__version__ = "0.1.0.dev0"

__all__ = [
    "MultiTaskStep",
    "StepRecord",
    "__version__",
    "data",
    "engine",
    "methods",
    "models",
    "nn",
    "priority",
    "weighting",
]
