"""UPGrad (Quinton & Rey, arXiv 2406.16232) and the dual-cone projection it shares with DualProj."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod

# Cap on the steps of the active-set solver, per task: each step frees one bound (and may fix
# others), so about K steps suffice; the cap only guards against cycling on round-off.
_MAX_ACTIVE_SET_STEPS_PER_TASK = 8


def project_weights(
    preference: Tensor, gramian: Tensor, *, norm_eps: float = 1e-4, reg_eps: float = 1e-4
) -> Tensor:
    """Weights of the projection of Jᵀu onto the dual cone {x : Jx ≥ 0} of the rows of J.

    For each u, solves min_v vᵀG̃v subject to v ≥ u (Proposition 1 of the UPGrad paper): then
    Jᵀv is the projection of Jᵀu. As torchjd's ``QuadprogProjector``, G̃ = G / tr(G) + reg_eps·I,
    and G̃ = reg_eps·I when tr(G) < norm_eps; the problem is solved here by an exact primal
    active-set method in float64 on the CPU (no quadprog).

    Args:
        preference: [..., K] one weight vector u per projection.
        gramian: [K, K] G = J Jᵀ, symmetric positive semi-definite.
        norm_eps: below this trace, G counts as zero (torchjd's default, an absolute threshold
            on ‖J‖²_F).
        reg_eps: added to the diagonal of the normalized G; makes the problem strictly convex.

    Returns:
        [..., K] the weights v, on ``gramian``'s device and dtype.

    >>> gramian = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])
    >>> project_weights(torch.tensor([1.0, 0.0]), gramian, reg_eps=0.0)
    tensor([1.0000, 0.5000])
    """
    num_tasks = gramian.shape[0]
    gram64 = gramian.detach().to(device="cpu", dtype=torch.float64)
    trace = float(gram64.diagonal().sum())
    if trace < norm_eps or trace <= 0.0:
        gram64 = torch.zeros_like(gram64)
    else:
        gram64 = (gram64 + gram64.T) / (2.0 * trace)
    gram64 = gram64 + reg_eps * torch.eye(num_tasks, dtype=torch.float64)
    rows = preference.detach().to(device="cpu", dtype=torch.float64).reshape(-1, num_tasks)
    is_definite = reg_eps > 0.0
    projected = torch.stack([_solve_box_qp(gram64, row, is_definite=is_definite) for row in rows])
    return projected.reshape(preference.shape).to(device=gramian.device, dtype=gramian.dtype)


def _solve_box_qp(gramian: Tensor, lower: Tensor, *, is_definite: bool) -> Tensor:
    """argmin_v vᵀGv subject to v ≥ lower, by a primal active-set method (Lawson–Hanson).

    Args:
        gramian: [K, K] float64 G, symmetric positive semi-definite.
        lower: [K] float64 bound u.
        is_definite: G is positive definite (solve the free blocks by LU, else least squares).

    Returns:
        [K] v. The KKT conditions, checked by the tests: v ≥ u, Gv ≥ 0, (Gv)ᵢ(vᵢ − uᵢ) = 0.
    """
    num_tasks = lower.shape[0]
    scale = max(float(lower.abs().max()), 1e-300)
    tol = 1e-13 * scale
    v = lower.clone()
    is_free = torch.zeros(num_tasks, dtype=torch.bool)
    for _ in range(_MAX_ACTIVE_SET_STEPS_PER_TASK * num_tasks + 8):
        multipliers = gramian @ v  # ∝ the Lagrange multipliers of the bounds
        is_violated = ~is_free & (multipliers < -tol)
        if not bool(is_violated.any()):
            return v
        is_free[torch.where(is_violated, multipliers, math.inf).argmin()] = True
        for _ in range(num_tasks + 1):
            candidate = _minimize_on_free_set(gramian, lower, is_free, is_definite=is_definite)
            is_blocked = is_free & (candidate <= lower)
            if not bool(is_blocked.any()):
                v = candidate
                break
            # Move towards the candidate until the first free entry reaches its bound.
            room = (v - lower)[is_blocked]
            drop = (v - candidate)[is_blocked]
            ratios = torch.where(drop > 0, room / drop.clamp_min(1e-300), 0.0)
            v = v + ratios.min().clamp(0.0, 1.0) * (candidate - v)
            is_free &= v - lower > tol
            v = torch.where(is_free, v, lower)
        else:
            return v
    return v


def _minimize_on_free_set(
    gramian: Tensor, lower: Tensor, is_free: Tensor, *, is_definite: bool
) -> Tensor:
    """Argmin vᵀGv over v with v = lower off the free set: G_FF v_F = −G_FA u_A."""
    free = is_free.nonzero().squeeze(1)
    fixed = (~is_free).nonzero().squeeze(1)
    rhs = -(gramian[free][:, fixed] @ lower[fixed]).unsqueeze(1)
    block = gramian[free][:, free]
    solution: Tensor | None = None
    if is_definite:
        solved, info = torch.linalg.solve_ex(block, rhs)
        solution = solved if int(info) == 0 else None
    if solution is None:
        # With reg_eps = 0 the block may be singular (parallel rows): least squares then.
        solution = torch.linalg.lstsq(block, rhs, driver="gelsd").solution
    result = lower.clone()
    result[free] = solution.squeeze(1)
    return result


def check_pref_vector(pref_vector: Sequence[float] | None) -> tuple[float, ...] | None:
    """Validate the ``pref_vector`` option of UPGrad, DualProj, Aligned-MTL and ConFIG."""
    if pref_vector is None:
        return None
    values = tuple(float(x) for x in pref_vector)
    if not values or not all(math.isfinite(x) for x in values):
        raise ValueError(
            f"`pref_vector` must be a non-empty sequence of finite numbers, one per task; got "
            f"{pref_vector!r}. Leave it None for equal weights."
        )
    return values


def preference_weights(
    pref_vector: tuple[float, ...] | None, like: Tensor, default: float
) -> Tensor:
    """The [K] preference weights on ``like``'s device and dtype (``default`` for every task)."""
    num_tasks = like.shape[0]
    if pref_vector is None:
        return like.new_full((num_tasks,), default)
    if len(pref_vector) != num_tasks:
        raise ValueError(
            f"`pref_vector` has {len(pref_vector)} entries but the gradient matrix has "
            f"{num_tasks} rows; give one weight per task."
        )
    return torch.tensor(pref_vector, dtype=like.dtype, device=like.device)


def check_eps(option: str, value: float) -> float:
    """Validate a non-negative tolerance option."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"`{option}` must be a non-negative number; got {value!r}.")
    return float(value)


@METHODS.register("upgrad")
class UPGrad(WeightedMethod):
    """UPGrad: project each task gradient onto the dual cone of all of them, then combine.

    Each row gᵢ is projected onto the cone {x : gⱼᵀx ≥ 0 for all j} (so the result conflicts
    with no task), and the projections are combined with the preference weights (the mean by
    default): d = Σᵢ uᵢ π(gᵢ). Jacobian descent, Quinton & Rey, arXiv 2406.16232.

    Conventions: torchjd's ``UPGrad``, the same normalization and regularization of the Gramian
    (``norm_eps``, ``reg_eps``), mean preference by default (rows that conflict with no other
    give the mean, not the sum). torchjd solves the projections with quadprog; we solve the same
    quadratic programs exactly with an active-set method in torch (float64, CPU), so the results
    agree to rounding and no optional dependency is needed. Note that torchjd's ``norm_eps``
    is absolute: when ‖J‖²_F < 1e-4 no projection happens and the result is the mean.

    Args:
        pref_vector: the weights u, one per task; None (default) for 1/K each.
        norm_eps: the trace of G below which it counts as zero (default 1e-4, as torchjd).
        reg_eps: ridge added to the normalized Gramian (default 1e-4, as torchjd).

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values):

    >>> J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> method = UPGrad()
    >>> method(J)
    tensor([0.2929, 1.9004, 1.9004])
    >>> method.diagnostics()["task_weights"]  # doctest: +ELLIPSIS
    [1.1109..., 0.7894...]
    """

    name: ClassVar[str] = "upgrad"
    summary: ClassVar[str] = (
        "UPGrad: mean of the task gradients each projected onto the dual cone of all of them "
        "(Quinton & Rey 2024)."
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
        """[K, n] → [K] Σᵢ vᵢ where vᵢ are the projection weights of uᵢeᵢ."""
        preference = preference_weights(
            self.pref_vector, per_task_grads, 1.0 / per_task_grads.shape[0]
        )
        gramian = per_task_grads @ per_task_grads.T
        projected = project_weights(
            torch.diag(preference), gramian, norm_eps=self.norm_eps, reg_eps=self.reg_eps
        )
        return projected.sum(dim=0)

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}, norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
