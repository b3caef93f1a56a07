"""Uncertainty weighting: a learned homoscedastic log-variance per task (Kendall et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS
from taskprio.weighting._per_task import LearnableWeighting, OptimizerName


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LearnableWeighting):
    r"""Uncertainty weighting (UW): Kendall, Gal and Cipolla, CVPR 2018, arXiv 1705.07115.

    Each task has a learned log-variance s_t = log σ_t². The objective is the paper's, in
    TorchJD's parametrization (``torchjd.scalarization.UW``)::

        Σ_t ½ e^{−s_t} L_t + ½ s_t        so the loss weight is   w_t = ½ e^{−s_t}.

    s_t starts at 0 (w_t = ½: the weights do not sum to a fixed value; at the start they sum
    to K/2). After each optimizer step, :meth:`update` takes one step of the weighting's own
    optimizer on s over the present tasks, with the gradient ∂/∂s_t = ½ (1 − e^{−s_t} L_t) at
    the step's losses: the same gradient s would get if it were trained jointly with the model,
    as in the paper. Its minimum, for fixed losses, is s_t = log L_t (w_t = 1 / (2 L_t)).

    Conventions that differ elsewhere: LibMTL writes the same objective L/(2e^s) + s/2 but
    starts s at −0.5 (w = ½e^{0.5} ≈ 0.82) and trains s with the model's optimizer and learning
    rate; Nash-MTL's code trains s in a separate parameter group at lr 0.025, our default.
    For classification losses the paper uses e^{−s} L + s/2 instead; we use the ½ form for
    every task, as TorchJD and LibMTL do.

    Args:
        lr: learning rate of the optimizer over s (0.025, as Nash-MTL's ``method-params-lr``).
        optimizer: ``"adam"`` (default, as Nash-MTL) or ``"sgd"``.

    >>> uw = Uncertainty()
    >>> losses = torch.tensor([0.5, 2.0])
    >>> uw(losses, ["depth", "seg"])
    tensor([0.5000, 0.5000])
    >>> uw.update(losses, ["depth", "seg"])  # s moves towards log L: up for seg, down for depth
    >>> uw(losses, ["depth", "seg"])
    tensor([0.5127, 0.4877])
    """

    name: ClassVar[str] = "uncertainty"
    summary: ClassVar[str] = (
        "Learned log-variance per task, weight ½e^{-s} (Kendall et al., CVPR 2018)."
    )
    initial_value: ClassVar[float] = 0.0

    def __init__(self, *, lr: float = 0.025, optimizer: OptimizerName = "adam") -> None:
        super().__init__(optimizer=optimizer, lr=lr)

    @property
    def log_variances(self) -> dict[str, float]:
        """Task → its learned log-variance s_t."""
        return self.task_values()

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] weights ½ e^{−s_t}."""
        return 0.5 * torch.exp(-self.parameter_values(tasks, losses))

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """One optimizer step on the present tasks' s down Σ ½ e^{−s_t} L_t + ½ s_t."""
        rows = self.register_tasks(tasks, losses)
        values = losses.detach()

        def objective(log_variances: Tensor) -> Tensor:
            scaled = 0.5 * torch.exp(-log_variances) * values.to(log_variances)
            return (scaled + 0.5 * log_variances).sum()

        self.descend(rows, objective)
