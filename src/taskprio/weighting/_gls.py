"""Geometric loss strategy: minimize the geometric mean of the task losses (Chennupati et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS, Weighting


def gls_weights(losses: Tensor) -> Tensor:
    """The loss weights whose weighted gradient is the gradient of the geometric mean.

    With G = (Π_s L_s)^{1/K}, ∂G/∂L_t = G / (K L_t), so Σ_t w_t ∇L_t = ∇G for::

        w_t = G / (K L_t) = exp(mean_s log L_s − log L_t) / K,

    computed in the log domain (no overflow of the product). Also Σ_t w_t L_t = G.

    Args:
        losses: [K] positive loss values.

    Returns:
        [K] the weights (they sum to a value that depends on the losses, not to 1 or K).

    >>> gls_weights(torch.tensor([1.0, 4.0]))
    tensor([1.0000, 0.2500])
    """
    logs = torch.log(losses)
    return torch.exp(logs.mean() - logs) / losses.shape[0]


@WEIGHTINGS.register("gls")
class GLS(Weighting):
    """Geometric loss strategy: Chennupati et al., CVPRW 2019 (MultiNet++), arXiv 1904.08492.

    GLS minimizes the geometric mean of the K present losses, (Π_t L_t)^{1/K}. As loss weights
    (so that it composes with any gradient method), that is w_t = (Π_s L_s)^{1/K} / (K L_t):
    the weighted gradient Σ_t w_t ∇L_t equals ∇(Π_t L_t)^{1/K} exactly, and the weighted loss
    Σ_t w_t L_t equals the geometric mean. The weights have no fixed sum; a task with a small
    loss gets a large weight (the objective is invariant to rescaling any one loss). LibMTL's
    ``GLS`` and ``torchjd.scalarization.GeometricMean`` minimize the same geometric mean;
    Nash-MTL's ``scaleinvls`` (Σ_t log L_t, weights 1/L_t = K w_t / G) has the same direction,
    scaled by K/G. Losses must be positive.

    >>> GLS()(torch.tensor([1.0, 4.0]), ["seg", "depth"])
    tensor([1.0000, 0.2500])
    """

    name: ClassVar[str] = "gls"
    summary: ClassVar[str] = (
        "Geometric mean of the losses (Chennupati et al., CVPRW 2019), as loss weights."
    )

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] positive losses → [K] weights (Π L)^{1/K} / (K L_t)."""
        for task, value in zip(tasks, losses.tolist(), strict=True):
            if not value > 0:
                raise ValueError(
                    f"GLS takes the geometric mean of the losses, defined for positive losses; "
                    f"task {task!r} has loss {value}. Use a positive loss (e.g. add a small "
                    "constant) or another weighting."
                )
        return gls_weights(losses)
