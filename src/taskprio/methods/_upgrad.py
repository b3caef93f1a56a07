"""UPGrad (Quinton & Rey, arXiv 2406.16232) and the dual-cone projection it shares with DualProj."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod

# Cap on the steps of the active-set solver, per task: each step frees one bound (and may fix
# others), so about K steps suffice; the cap only guards against cycling on round-off.
_MAX_ACTIVE_SET_STEPS_PER_TASK = 8

Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def project_weights(
    preference: Tensor, gramian: Tensor, *, norm_eps: float = 1e-4, reg_eps: float = 1e-4
) -> Tensor:
    """Weights of the projection of Jᵀu onto the dual cone {x : Jx ≥ 0} of the rows of J.

    For each u, solves min_v vᵀG̃v subject to v ≥ u (Proposition 1 of the UPGrad paper): then
    Jᵀv is the projection of Jᵀu. As torchjd's ``QuadprogProjector``, G̃ = G / tr(G) + reg_eps·I,
    and G̃ = reg_eps·I when tr(G) < norm_eps; the problem is solved here exactly, in float64 on
    the CPU with numpy (no quadprog): all the u at once by a primal-dual active-set method
    (one batched K×K solve per iteration), and by a primal active-set method for any u where
    that does not settle (or when G̃ may be singular, ``reg_eps = 0``).

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
    gram64 = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    trace = float(np.trace(gram64))
    if trace < norm_eps or trace <= 0.0:
        gram64 = np.zeros((num_tasks, num_tasks))
    else:
        gram64 = (gram64 + gram64.T) / (2.0 * trace)
    gram64 = gram64 + reg_eps * np.eye(num_tasks)
    rows = preference.detach().to(device="cpu", dtype=torch.float64).reshape(-1, num_tasks)
    projected = solve_box_qps(gram64, rows.numpy(), is_definite=reg_eps > 0.0)
    return (
        torch.from_numpy(projected)
        .reshape(preference.shape)
        .to(device=gramian.device, dtype=gramian.dtype)
    )


def solve_box_qps(gramian: Array, lower: Array, *, is_definite: bool) -> Array:
    """argmin_v vᵀGv subject to v ≥ u, for each row u of ``lower``.

    Rows whose bound is already optimal (Gu ≥ 0) are done at once; the others go through
    :func:`_primal_dual_active_set` together, and any row it leaves unsettled through
    :func:`_solve_box_qp`.

    Args:
        gramian: [K, K] float64 G, symmetric positive semi-definite.
        lower: [P, K] float64 bounds u, one problem per row.
        is_definite: G is positive definite.

    Returns:
        [P, K] float64 v. The KKT conditions, checked by the tests: v ≥ u, Gv ≥ 0,
        (Gv)ᵢ(vᵢ − uᵢ) = 0.

    >>> solve_box_qps(np.array([[1.0, -1.0], [-1.0, 2.0]]), np.eye(2), is_definite=True)
    array([[1. , 0.5],
           [1. , 1. ]])
    """
    result: Array = lower.copy()
    tol = _tolerances(lower)
    pending = np.flatnonzero(((lower @ gramian) < -tol[:, None]).any(axis=1))
    if pending.size and is_definite:
        solved, is_settled = _primal_dual_active_set(gramian, lower[pending], tol[pending])
        result[pending[is_settled]] = solved[is_settled]
        pending = pending[~is_settled]
    for row in pending.tolist():
        result[row] = _solve_box_qp(gramian, lower[row], is_definite=is_definite)
    return result


def _tolerances(lower: Array) -> Array:
    """[P] the tolerance of each problem: 1e-13 of its largest bound."""
    tolerances: Array = 1e-13 * np.maximum(np.abs(lower).max(axis=1), 1e-300)
    return tolerances


def _primal_dual_active_set(gramian: Array, lower: Array, tol: Array) -> tuple[Array, BoolArray]:
    """Primal-dual active-set iterations (Hintermüller, Ito & Kunisch 2002) on P problems at once.

    With A the bounds held (vᵢ = uᵢ) and F the others ((Gv)ᵢ = 0), each iteration solves the P
    systems as one batch of K×K systems (G on F×F, the identity elsewhere), then releases the
    held bounds whose multiplier (Gv)ᵢ is negative and holds the free entries that fell below
    their bound. A problem whose set repeats satisfies the KKT conditions; one that cycles
    (possible when G is not an M-matrix) is reported unsettled.

    Args:
        gramian: [K, K] float64 G, positive definite.
        lower: [P, K] float64 bounds u.
        tol: [P] tolerances on the multipliers and the bounds.

    Returns:
        ``(v [P, K], settled [P] bool)``.
    """
    num_tasks = gramian.shape[1]
    identity = np.eye(num_tasks)
    tol = tol[:, None]
    is_held: BoolArray = (lower @ gramian) >= -tol  # [P, K] start from v = u
    v: Array = lower.copy()
    is_settled: BoolArray = np.zeros(lower.shape[0], dtype=bool)
    for _ in range(2 * num_tasks + 2):
        is_free = ~is_held
        system = np.where(is_free[:, :, None] & is_free[:, None, :], gramian, identity)
        held = np.where(is_held, lower, 0.0)
        rhs = np.where(is_free, -(held @ gramian), lower)  # G symmetric: row p is −G u_A
        try:
            v = np.linalg.solve(system, rhs[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            return v, np.zeros(lower.shape[0], dtype=bool)
        v = np.where(is_held, lower, v)
        multipliers = v @ gramian
        next_held: BoolArray = np.where(is_held, multipliers >= -tol, v - lower <= tol)
        is_settled = (next_held == is_held).all(axis=1)
        if is_settled.all():
            break
        is_held = next_held
    return v, is_settled & np.isfinite(v).all(axis=1)


def _solve_box_qp(gramian: Array, lower: Array, *, is_definite: bool) -> Array:
    """argmin_v vᵀGv subject to v ≥ u for one u, by a primal active-set method (Lawson–Hanson).

    Args:
        gramian: [K, K] float64 G, symmetric positive semi-definite.
        lower: [K] float64 bound u.
        is_definite: G is positive definite (solve the free blocks by LU, else least squares).

    Returns:
        [K] v.
    """
    num_tasks = lower.shape[0]
    tol = float(_tolerances(lower[None])[0])
    v: Array = lower.copy()
    is_free: BoolArray = np.zeros(num_tasks, dtype=bool)
    for _ in range(_MAX_ACTIVE_SET_STEPS_PER_TASK * num_tasks + 8):
        multipliers = gramian @ v  # ∝ the Lagrange multipliers of the bounds
        is_violated = ~is_free & (multipliers < -tol)
        if not is_violated.any():
            return v
        is_free[int(np.argmin(np.where(is_violated, multipliers, np.inf)))] = True
        for _ in range(num_tasks + 1):
            candidate = _minimize_on_free_set(gramian, lower, is_free, is_definite=is_definite)
            is_blocked = is_free & (candidate <= lower)
            if not is_blocked.any():
                v = candidate
                break
            # Move towards the candidate until the first free entry reaches its bound.
            room = (v - lower)[is_blocked]
            drop = (v - candidate)[is_blocked]
            ratios = np.where(drop > 0, room / np.maximum(drop, 1e-300), 0.0)
            v = v + min(max(float(ratios.min()), 0.0), 1.0) * (candidate - v)
            is_free &= v - lower > tol
            v = np.where(is_free, v, lower)
        else:
            return v
    return v


def _minimize_on_free_set(
    gramian: Array, lower: Array, is_free: BoolArray, *, is_definite: bool
) -> Array:
    """Argmin vᵀGv over v with v = lower off the free set: G_FF v_F = −G_FA u_A."""
    free = np.flatnonzero(is_free)
    fixed = np.flatnonzero(~is_free)
    rhs = -(gramian[np.ix_(free, fixed)] @ lower[fixed])
    block = gramian[np.ix_(free, free)]
    solution: npt.NDArray[np.floating[Any]] | None = None
    if is_definite:
        try:
            solution = np.linalg.solve(block, rhs)
        except np.linalg.LinAlgError:
            solution = None
    if solution is None:
        # With reg_eps = 0 the block may be singular (parallel rows): least squares then.
        solution = np.linalg.lstsq(block, rhs, rcond=None)[0]
    result: Array = lower.copy()
    result[free] = solution
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
    quadratic programs exactly with active-set methods in float64 on the CPU (numpy), so the
    results agree to rounding and no optional dependency is needed. Note that torchjd's ``norm_eps``
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
        projected = project_weights(
            torch.diag(preference),
            self.gramian(per_task_grads),
            norm_eps=self.norm_eps,
            reg_eps=self.reg_eps,
        )
        return projected.sum(dim=0)

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}, norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
