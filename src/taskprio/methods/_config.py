"""ConFIG: conflict-free inverse gradients (Liu, Chu & Thuerey, arXiv 2408.11104)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod
from taskprio.methods._upgrad import check_pref_vector, preference_weights


@METHODS.register("config")
class ConFIG(WeightedMethod):
    """ConFIG: the direction with equal cosine to every task gradient, scaled by their projections.

    With uᵢ = gᵢ/‖gᵢ‖, the direction is û = normalize(U⁺ p) (U⁺ the pseudo-inverse of the
    matrix of unit rows, p the preference, ones by default), so that uᵢᵀû ∝ pᵢ; the update
    is (Σᵢ gᵢᵀû) û (Equation 2 of Liu, Chu & Thuerey, arXiv 2408.11104). The same result as
    torchjd's ``ConFIG`` (tested), computed from the K×K Gramian G alone: U Uᵀ = D⁻¹GD⁻¹ with
    D = diag(‖gᵢ‖), so the update is a weighted sum of the rows (the weights are recorded as
    for the other weighted methods); zero rows have no direction and count as zero rows of U.

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

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] w with ConFIG's update = wᵀJ."""
        gramian = self.gramian(per_task_grads)
        # The K×K algebra in float64 on the CPU; the rounding of G is that of its own dtype.
        gram64 = gramian.detach().to(device="cpu", dtype=torch.float64)
        preference = preference_weights(self.pref_vector, gram64, 1.0)
        norms = gram64.diagonal().clamp_min(0.0).sqrt()
        inverse_norms = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), 0.0)
        unit_gramian = gram64 * inverse_norms[:, None] * inverse_norms[None, :]  # U Uᵀ
        # U⁺ p = Uᵀ (U Uᵀ)⁺ p: a K×K pseudo-inverse instead of torchjd's SVD of the K×n
        # matrix, which dominates the step for wide layers. pinv(U) drops singular values
        # below max(K, n)·eps·σ_max, i.e. eigenvalues of U Uᵀ below (max(K, n)·eps)²·λ_max; but
        # forming U Uᵀ leaves its null eigenvalues at rounding level (≈ √n·eps·λ_max), so the
        # cutoff is the larger of the two.
        eps = torch.finfo(gramian.dtype).eps
        size = per_task_grads.shape[1]
        cutoff = max((max(per_task_grads.shape) * eps) ** 2, math.sqrt(size) * eps)
        coefficients = torch.linalg.pinv(unit_gramian, rtol=cutoff, hermitian=True) @ preference
        row_weights = coefficients * inverse_norms  # U⁺p = Jᵀ row_weights
        # normalize(U⁺p) as torch.nn.functional.normalize (norm floored at 1e-12).
        direction_norm = math.sqrt(max(float(row_weights @ gram64 @ row_weights), 0.0))
        unit_weights = row_weights / max(direction_norm, 1e-12)  # û = Jᵀ unit_weights
        length = (gram64 @ unit_weights).sum()  # Σᵢ gᵢᵀû
        weights: Tensor = length * unit_weights
        return weights.to(device=per_task_grads.device, dtype=gramian.dtype)

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}"
