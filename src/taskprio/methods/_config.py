"""ConFIG: conflict-free inverse gradients (Liu, Chu & Thuerey, arXiv 2408.11104)."""

from __future__ import annotations

import math
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
    is (Σᵢ gᵢᵀû) û (Equation 2 of Liu, Chu & Thuerey, arXiv 2408.11104). The same result as
    torchjd's ``ConFIG`` (tested), computed through the K×K Gramian of the unit rows; zero
    rows have no direction and count as zero rows of U.

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
        # torch.linalg has no half-precision kernels: at least float32.
        matrix = per_task_grads.to(torch.promote_types(per_task_grads.dtype, torch.float32))
        preference = preference_weights(self.pref_vector, matrix, 1.0)
        units = torch.nan_to_num(matrix / matrix.norm(dim=1, keepdim=True), 0.0)  # [K, n]
        # U⁺ p = Uᵀ (U Uᵀ)⁺ p: a K×K pseudo-inverse instead of torchjd's SVD of the K×n
        # matrix, which dominates the step for wide layers. pinv(U) drops singular values
        # below max(K, n)·eps·σ_max, i.e. eigenvalues of U Uᵀ below (max(K, n)·eps)²·λ_max; but
        # forming U Uᵀ leaves its null eigenvalues at rounding level (≈ √n·eps·λ_max), so the
        # cutoff is the larger of the two.
        gramian = units @ units.T  # [K, K]
        eps = torch.finfo(matrix.dtype).eps
        cutoff = max((max(matrix.shape) * eps) ** 2, math.sqrt(matrix.shape[1]) * eps)
        coefficients = torch.linalg.pinv(gramian, rtol=cutoff, hermitian=True) @ preference
        best_direction = coefficients @ units
        unit_target = torch.nn.functional.normalize(best_direction, dim=0)
        length = torch.sum(matrix @ unit_target)
        return (length * unit_target).to(per_task_grads.dtype)

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}"
