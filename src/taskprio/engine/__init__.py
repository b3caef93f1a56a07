"""Per-task gradients of shared parameters.

>>> import torch, taskprio
>>> w = torch.tensor([1.0, -1.0], requires_grad=True)
>>> taskprio.engine.per_task_grads({"a": w.sum(), "b": (2 * w).sum()}, [w]).grads[0]
tensor([[1., 1.],
        [2., 2.]])
"""

from taskprio.engine._per_task_grads import (
    STRATEGIES,
    LossesOrClosure,
    PerTaskGrads,
    Strategy,
    flat_grad_matrix,
    per_task_grads,
    unflatten_like,
)

__all__ = [
    "STRATEGIES",
    "LossesOrClosure",
    "PerTaskGrads",
    "Strategy",
    "flat_grad_matrix",
    "per_task_grads",
    "unflatten_like",
]
