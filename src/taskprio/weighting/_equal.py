"""Equal weighting: every loss weight is 1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("equal")
class Equal(Weighting):
    """Every task's loss weight is 1 (weights sum to K, so ``sum`` gives Σ_t ∇L_t).

    >>> import torch
    >>> Equal()(torch.tensor([0.5, 2.0]), ["a", "b"])
    tensor([1., 1.])
    """

    name: ClassVar[str] = "equal"
    summary: ClassVar[str] = "Every loss weight is 1."

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] → [K] ones."""
        return losses.new_ones(losses.shape)
