"""Linear scalarization: the plain sum of the (loss-weighted) task gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from taskprio.methods._base import METHODS, Method


@METHODS.register("sum")
class Sum(Method):
    """Linear scalarization: the update is Σ_t w_t ∇L_t, the gradient of Σ_t w_t L_t.

    Sum, not mean: with equal weights this is the gradient of the summed losses, as in
    ``loss = sum(losses); loss.backward()``. Because the result is linear in the rows, the step
    API computes it with one backward of the weighted loss sum (``is_linear``).

    >>> import torch
    >>> Sum()(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    tensor([4., 2.])
    """

    name: ClassVar[str] = "sum"
    summary: ClassVar[str] = "Linear scalarization: sum of the loss-weighted task gradients."
    is_linear: ClassVar[bool] = True

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [n], the column sums."""
        return per_task_grads.sum(dim=0)
