"""Mean: the average of the (loss-weighted) task gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod


@METHODS.register("mean")
class Mean(WeightedMethod):
    """The average of the task gradients: (1/K) Σ_t g_t, i.e. weights 1/K.

    Mean, not sum: the update is K times smaller than :class:`~taskprio.methods.Sum`'s, as
    ``torchjd.aggregation.Mean``. It goes through the per-task gradients (K backwards), not the
    one-backward shortcut of ``Sum``; for the same direction with one backward use ``"sum"``
    with a learning rate divided by K.

    >>> import torch
    >>> Mean()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([1., 1., 1.])
    """

    name: ClassVar[str] = "mean"
    summary: ClassVar[str] = "Mean of the loss-weighted task gradients (Sum divided by K)."

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] all 1/K."""
        num_tasks = per_task_grads.shape[0]
        return per_task_grads.new_full((num_tasks,), 1.0 / num_tasks)
