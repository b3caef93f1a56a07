"""IMTL-L: learned loss scales, the loss-balancing half of Impartial MTL (Liu et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS
from taskprio.weighting._per_task import LearnableWeighting, OptimizerName


@WEIGHTINGS.register("imtl_l")
class IMTLL(LearnableWeighting):
    r"""IMTL-L: Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

    The paper has no arXiv version (OpenReview ``IMPnRXEWpvr``). Each task has a learned scale
    s_t; the objective and the loss weight are::

        Σ_t e^{s_t} L_t − s_t        w_t = e^{s_t}.

    s_t starts at 0 (w_t = 1, the plain sum; the weights have no fixed sum). After each
    optimizer step, :meth:`update` takes one step of the weighting's own optimizer on s over the
    present tasks, with ∂/∂s_t = e^{s_t} L_t − 1 at the step's losses (the gradient joint
    training would give). For fixed losses the optimum is e^{s_t} L_t = 1: every scaled loss
    is driven to 1. This equals 2 × UW at s_UW = −s (see :class:`Uncertainty`), and
    ``torchjd.scalarization.IMTLL`` is the same objective. LibMTL's ``IMTL`` pairs these scales
    with IMTL-G's gradient combination; here that is a method's job, composable with any
    weighting.

    Args:
        lr: learning rate of the optimizer over s (0.025, as :class:`Uncertainty`).
        optimizer: ``"adam"`` (default) or ``"sgd"``.

    >>> imtl = IMTLL()
    >>> losses = torch.tensor([0.5, 2.0])
    >>> imtl(losses, ["depth", "seg"])
    tensor([1., 1.])
    >>> imtl.update(losses, ["depth", "seg"])  # scales move towards 1 / L
    >>> imtl(losses, ["depth", "seg"])
    tensor([1.0253, 0.9753])
    """

    name: ClassVar[str] = "imtl_l"
    summary: ClassVar[str] = (
        "Learned loss scale per task, weight e^{s} (IMTL-L, Liu et al., ICLR 2021)."
    )
    initial_value: ClassVar[float] = 0.0

    def __init__(self, *, lr: float = 0.025, optimizer: OptimizerName = "adam") -> None:
        super().__init__(optimizer=optimizer, lr=lr)

    @property
    def scales(self) -> dict[str, float]:
        """Task → its learned log-scale s_t (the weight is e^{s_t})."""
        return self.task_values()

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] weights e^{s_t}."""
        return torch.exp(self.parameter_values(tasks, losses))

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """One optimizer step on the present tasks' s down Σ e^{s_t} L_t − s_t."""
        rows = self.register_tasks(tasks, losses)
        values = losses.detach()

        def objective(scales: Tensor) -> Tensor:
            return (torch.exp(scales) * values.to(scales) - scales).sum()

        self.descend(rows, objective)
