"""ConFIG: conflict-free inverse gradients (Liu, Chu & Thuerey, arXiv 2408.11104)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.methods._base import METHODS, Method
from taskprio.methods._upgrad import check_pref_vector, preference_weights


@METHODS.register("config")
class ConFIG(Method):
    """ConFIG: the direction with equal cosine to every task gradient, scaled by their projections.

    With uᵢ = gᵢ/‖gᵢ‖, the direction is û = normalize(U⁺ p) (U⁺ the pseudo-inverse of the
    matrix of unit rows, p the preference, ones by default), so that uᵢᵀû ∝ pᵢ; the update
    is (Σᵢ gᵢᵀû) û (Equation 2 of Liu, Chu & Thuerey, arXiv 2408.11104). torchjd's
    ``ConFIG``, called as is; zero rows have no direction and are left out of U.

    Conventions: the length is the *sum* of the projections (the official code and torchjd),
    so for parallel rows ConFIG is the sum.

    Args:
        pref_vector: p, one weight per task; None (default) for ones.

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values):

    >>> ConFIG()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.1588, 2.0706, 2.0706])
    """

    name: ClassVar[str] = "config"
    summary: ClassVar[str] = (
        "ConFIG: the direction at equal angles to every task gradient (Liu et al. 2024)."
    )

    def __init__(self, *, pref_vector: Sequence[float] | None = None) -> None:
        super().__init__()
        self.pref_vector = check_pref_vector(pref_vector)

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [n] ConFIG's direction."""
        # Imported here: torchjd imports its optional solvers (cvxpy, scipy) when installed.
        from torchjd.aggregation import ConFIG as TorchJDConFIG

        # torch.linalg has no half-precision kernels: at least float32.
        matrix = per_task_grads.to(torch.promote_types(per_task_grads.dtype, torch.float32))
        preference = preference_weights(self.pref_vector, matrix, 1.0)
        result: Tensor = TorchJDConFIG(pref_vector=preference)(matrix)
        return result.to(per_task_grads.dtype)

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}"
