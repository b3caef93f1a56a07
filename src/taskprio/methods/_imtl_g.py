"""IMTL-G: impartial multi-task learning, gradient part (Liu et al., ICLR 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """IMTL-G's weights: w ∝ G⁺ d with dᵢ = ‖gᵢ‖, normalized to sum to 1.

    The combined direction then has equal projections on every unit task gradient (torchjd's
    generalization through the pseudo-inverse, which also handles linearly dependent rows).
    We compute torchjd's ``IMTLGWeighting`` (in float64) on G / tr(G): the weights do not
    change, but its ``|Σw| < 1e-12`` cutoff becomes relative (on G itself torchjd returns 0
    for gradients scaled by 1e15).

    Args:
        gramian: [K, K] G = J Jᵀ.

    Returns:
        [K] weights summing to 1 (all 0 when they cannot be normalized, e.g. G = 0), on
        ``gramian``'s device and dtype.

    >>> imtl_g_weights(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.5923, 0.4077])
    """
    # torchjd's computation on G / tr(G), in float64 numpy on the CPU; the pseudo-inverse
    # drops singular values below K·eps·σ_max of the Gramian's own dtype, as torch.linalg.pinv.
    num_tasks = gramian.shape[0]
    eps = torch.finfo(torch.promote_types(gramian.dtype, torch.float32)).eps
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    trace = float(np.trace(gram))
    if not trace > 0:
        return gramian.new_zeros(num_tasks)
    gram = gram / trace
    norms = np.sqrt(np.clip(np.diagonal(gram), 0.0, None))
    weights = np.linalg.pinv(gram, rcond=num_tasks * eps) @ norms
    total = float(weights.sum())
    weights = np.zeros_like(weights) if abs(total) < 1e-12 else weights / total
    return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)


@METHODS.register("imtl_g")
class IMTLG(WeightedMethod):
    """IMTL-G: the combination of the task gradients that projects equally on each of them.

    d = Σᵢ wᵢgᵢ with Σᵢ wᵢ = 1 and dᵀgᵢ/‖gᵢ‖ the same for every task (the gradient part of
    IMTL, Liu et al., ICLR 2021, openreview IMPnRXEWpvr), through torchjd's pseudo-inverse
    formulation (Jacobian descent, arXiv 2406.16232), which accepts linearly dependent rows.

    Conventions: weights sum to 1 (the paper, torchjd, Nash-MTL, LibMTL); the Gramian is
    trace-normalized first so that the result scales with the gradients (see
    :func:`imtl_g_weights`).

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values):

    >>> import torch
    >>> IMTLG()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.0767, 1.0000, 1.0000])
    """

    name: ClassVar[str] = "imtl_g"
    summary: ClassVar[str] = (
        "IMTL-G: the combination with equal projections on every task gradient (Liu et al. 2021)."
    )

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] IMTL-G's weights (summing to 1)."""
        return imtl_g_weights(self.gramian(per_task_grads))
