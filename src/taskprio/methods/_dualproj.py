"""DualProj: the mean gradient projected onto the dual cone of the task gradients (GEM, Eq. 11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod
from taskprio.methods._upgrad import (
    check_eps,
    check_pref_vector,
    preference_weights,
    project_weights,
)


@METHODS.register("dualproj")
class DualProj(WeightedMethod):
    """DualProj: combine the rows, then project the result onto their dual cone.

    d = π(Σᵢ uᵢgᵢ), the projection onto {x : gⱼᵀx ≥ 0 for all j}: the closest direction to the
    (mean) gradient that conflicts with no task. It is Equation 11 of Gradient Episodic Memory
    (Lopez-Paz & Ranzato, arXiv 1706.08840), named and analysed in Jacobian descent (Quinton &
    Rey, arXiv 2406.16232).

    Conventions: torchjd's ``DualProj`` (mean preference by default, the Gramian normalized by
    its trace when that is at least ``norm_eps`` and regularized by ``reg_eps``). The projection
    is solved exactly by :func:`taskprio.methods._upgrad.project_weights` instead of quadprog.

    Args:
        pref_vector: the weights u, one per task; None (default) for 1/K each.
        norm_eps: the trace of G below which it counts as zero (default 1e-4, as torchjd).
        reg_eps: ridge added to the normalized Gramian (default 1e-4, as torchjd).

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values):

    >>> import torch
    >>> DualProj()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.5563, 1.1109, 1.1109])
    """

    name: ClassVar[str] = "dualproj"
    summary: ClassVar[str] = (
        "DualProj: the mean gradient projected onto the dual cone of the task gradients (GEM)."
    )

    def __init__(
        self,
        *,
        pref_vector: Sequence[float] | None = None,
        norm_eps: float = 1e-4,
        reg_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.pref_vector = check_pref_vector(pref_vector)
        self.norm_eps = check_eps("norm_eps", norm_eps)
        self.reg_eps = check_eps("reg_eps", reg_eps)

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] the projection weights of u."""
        preference = preference_weights(
            self.pref_vector, per_task_grads, 1.0 / per_task_grads.shape[0]
        )
        return project_weights(
            preference,
            self.gramian(per_task_grads),
            norm_eps=self.norm_eps,
            reg_eps=self.reg_eps,
        )

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}, norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
