"""The two regularizers of LORPMAN: PaMaL's multi-forward ordering term and orthogonality.

Both are pure functions over tensors. :func:`multi_forward_regularizer` (R_p) looks at the
losses of several forwards of one batch, each at its own preference, and penalizes a task whose
loss is *larger* where its weight is larger. :func:`low_rank_cosines` and
:func:`orthogonality_penalty` (R_o) push the low-rank products B_i A_i of different tasks apart.
"""

from __future__ import annotations

import torch
from torch import Tensor


def multi_forward_regularizer(preferences: Tensor, losses: Tensor, *, tau: float = 1.0) -> Tensor:
    """R_p = Σ_t log(mean_k exp(τ·pen_k)): ordering violations between forwards of one batch.

    For each task t, the W forwards are sorted by α_t, highest first; each consecutive pair
    (hi, lo) with α_t(hi) > α_t(lo) is an edge with penalty ``pen = [ℓ_t(hi) − ℓ_t(lo)]_+``:
    a larger weight should not give a larger loss. Ties in α_t give no edge; a task without
    an edge adds 0. This is the stated intent of PaMaL's regularizer; read literally, its
    consecutive-difference line penalizes the opposite sign.

    Args:
        preferences: [W, m] one α per forward.
        losses: [W, m] the per-task losses of those forwards.
        tau: τ > 0, the sharpness of the soft maximum over edges.

    Returns:
        The scalar R_p ≥ 0, on ``losses``' device and dtype (differentiable in ``losses``).

    Hand-worked: α_t = 0.8 with loss 0.5 and α_t = 0.2 with loss 0.1 give pen = 0.4, so
    R_t = log(exp(0.4)) = 0.4; swapping the losses gives 0.

    >>> alphas = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    >>> multi_forward_regularizer(alphas, torch.tensor([[0.5, 0.0], [0.1, 0.0]]))
    tensor(0.4000)
    >>> multi_forward_regularizer(alphas, torch.tensor([[0.1, 0.0], [0.5, 0.0]]))
    tensor(0.)
    """
    if preferences.ndim != 2 or preferences.shape != losses.shape:
        raise ValueError(
            f"`preferences` and `losses` must both be [W, m] of the same shape; got "
            f"{tuple(preferences.shape)} and {tuple(losses.shape)}."
        )
    if not tau > 0:
        raise ValueError(f"`tau` must be positive, but got {tau}.")
    if len(losses) < 2:
        return losses.new_zeros(())  # one forward: nothing to order
    alphas = preferences.to(device=losses.device, dtype=losses.dtype)
    order = torch.argsort(alphas, dim=0, descending=True, stable=True)  # [W, m]
    sorted_alphas = alphas.gather(0, order)  # [W, m]
    sorted_losses = losses.gather(0, order)  # [W, m]
    is_edge = sorted_alphas[:-1] > sorted_alphas[1:]  # [W-1, m]
    scaled = tau * torch.relu(sorted_losses[:-1] - sorted_losses[1:])  # [W-1, m]
    num_edges = is_edge.sum(dim=0)  # [m]
    # Shift by the largest penalty before exp (a log-mean-exp), so large losses cannot
    # overflow; the shift is a constant for autograd.
    shift = torch.where(is_edge, scaled, torch.zeros_like(scaled)).amax(dim=0).detach()  # [m]
    terms = torch.where(is_edge, torch.exp(scaled - shift), torch.zeros_like(scaled))
    has_edge = num_edges > 0
    # A task without edges takes mean 1 (log 0 would poison the gradient through `where`).
    mean = torch.where(
        has_edge, terms.sum(dim=0) / num_edges.clamp_min(1), torch.ones_like(shift)
    )  # [m]
    per_task = torch.where(has_edge, shift + torch.log(mean), torch.zeros_like(shift))  # [m]
    return per_task.sum()


def low_rank_cosines(lora_a: Tensor, lora_b: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Cosines ⟨B_iA_i, B_jA_j⟩_F / (‖B_iA_i‖_F ‖B_jA_j‖_F + eps) between tasks, in r × r.

    The dense products are never formed: ⟨B_iA_i, B_jA_j⟩_F = Σ_ab (B_iᵀB_j)_ab (A_iA_jᵀ)_ab
    (= tr((B_iᵀB_j)(A_jA_iᵀ))), and ‖B_iA_i‖² is the same form with j = i. A zero product
    has cosine 0 with everything (through ``eps``), with a finite gradient.

    Args:
        lora_a: [k, r, d_in] the A_i of k tasks.
        lora_b: [k, d_out, r] their B_i.
        eps: added to the product of norms.

    Returns:
        [k, k] symmetric; the diagonal is 1 for non-zero products.

    >>> b = torch.tensor([[[1.0], [0.0]], [[1.0], [0.0]]])  # B_1 = B_2 = [1, 0]ᵀ
    >>> a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # A_1 = [1, 0], A_2 = [0, 1]
    >>> low_rank_cosines(a, b)
    tensor([[1., 0.],
            [0., 1.]])
    """
    if (
        lora_a.ndim != 3
        or lora_b.ndim != 3
        or lora_a.shape[:2]
        != (
            lora_b.shape[0],
            lora_b.shape[2],
        )
    ):
        raise ValueError(
            "`lora_a` must be [k, r, d_in] and `lora_b` [k, d_out, r] with the same k and r; "
            f"got {tuple(lora_a.shape)} and {tuple(lora_b.shape)}."
        )
    gram_b = torch.einsum("kor,jos->kjrs", lora_b, lora_b)  # [k, k, r, r] B_iᵀB_j
    gram_a = torch.einsum("krn,jsn->kjrs", lora_a, lora_a)  # [k, k, r, r] A_iA_jᵀ
    inner = (gram_b * gram_a).sum(dim=(-2, -1))  # [k, k]
    squared_norms = inner.diagonal()  # [k]
    is_positive = squared_norms > 0
    # sqrt has an infinite slope at 0: take it only where the norm is positive.
    norms = torch.where(
        is_positive,
        torch.sqrt(torch.where(is_positive, squared_norms, torch.ones_like(squared_norms))),
        torch.zeros_like(squared_norms),
    )  # [k]
    return inner / (norms[:, None] * norms[None, :] + eps)


def orthogonality_penalty(cosines: Tensor) -> Tensor:
    """Σ_{i<j} c_ij²: the squared off-diagonal cosines of one layer (zero when orthogonal).

    Args:
        cosines: [k, k] from :func:`low_rank_cosines`.

    Returns:
        A scalar ≥ 0; 0 for k ≤ 1.

    >>> orthogonality_penalty(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    tensor(1.)
    """
    if cosines.ndim != 2 or cosines.shape[0] != cosines.shape[1]:
        raise ValueError(f"`cosines` must be square [k, k]; got {tuple(cosines.shape)}.")
    return torch.triu(cosines, diagonal=1).square().sum()
