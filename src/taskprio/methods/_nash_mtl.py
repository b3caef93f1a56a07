"""Nash-MTL, Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, arXiv 2202.01017.

The weights solve the same sequence of convex subproblems as the official implementation
(github.com/AvivNavon/nash-mtl) and torchjd's ``NashMTL``, but with a small dedicated solver in
numpy instead of a cvxpy problem solved by ECOS: a damped Newton method for the Nash bargaining
point and, where that point is not the subproblem's optimum, a primal-dual interior-point method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod

Array = npt.NDArray[np.float64]

# Stopping rules of the official loop (and torchjd's), in the units of the weights α.
_NASH_RESIDUAL_TOL = 1e-3
_STEP_TOL = 1e-6


def nash_point(gramian: Array, start: Array | None = None) -> Array | None:
    """The Nash bargaining point of a Gramian: β > 0 with β_i (G β)_i = 1 for every i.

    It is the minimizer of the strictly convex ψ(β) = ½ βᵀGβ − Σ_i log β_i over β > 0
    (∇ψ = Gβ − 1/β), found by damped Newton steps. ψ has a minimizer exactly when no nonzero
    β ≥ 0 has Gβ = 0, i.e. when 0 is not in the convex hull of the gradients (otherwise ψ is
    unbounded below): this is also when Nash-MTL's subproblems are feasible.

    Args:
        gramian: [K, K] a positive semi-definite Gramian G = J Jᵀ (any scale).
        start: [K] a positive starting point (the previous solution), or None for ones.

    Returns:
        [K] β, or None when no bargaining point exists (0 in the convex hull, to the solver's
        precision) or G is not finite.

    >>> nash_point(np.diag([4.0, 1.0]))
    array([0.5, 1. ])
    """
    num_tasks = gramian.shape[0]
    if not np.isfinite(gramian).all():
        return None
    beta = np.ones(num_tasks) if start is None else np.array(start, dtype=np.float64)
    if not (np.isfinite(beta).all() and (beta > 0).all()):
        beta = np.ones(num_tasks)
    curvature = float(beta @ gramian @ beta)
    if curvature > 0:
        beta *= math.sqrt(num_tasks / curvature)  # the minimizer of ψ along the ray through β
    initial_norm = float(np.abs(beta).max())
    psi = _psi(gramian, beta)
    for _ in range(200):
        g_beta = gramian @ beta
        residual = beta * g_beta - 1.0
        if float(np.abs(residual).max()) < 1e-13:
            return beta
        gradient = g_beta - 1.0 / beta
        hessian = gramian + np.diag(1.0 / beta**2)
        try:
            direction = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        decrement = -float(gradient @ direction)  # λ², dimensionless (ψ is self-concordant)
        if decrement < 1e-24:
            # λ < 1e-12: as close as float64 gets.
            return beta if float(np.abs(residual).max()) < 1e-8 else None
        step = 1.0
        if decrement > 1e-2:
            # Damped phase. Close to the minimum (λ < 0.1) the full step stays inside β > 0 and
            # converges quadratically; there a line search on ψ would only measure rounding.
            negative = direction < 0
            if negative.any():
                step = min(1.0, 0.99 * float(np.min(-beta[negative] / direction[negative])))
            while True:
                candidate = beta + step * direction
                candidate_psi = _psi(gramian, candidate)
                if candidate_psi <= psi - 0.25 * step * decrement or step < 1e-12:
                    break
                step *= 0.5
        else:
            candidate = beta + direction
            candidate_psi = _psi(gramian, candidate)
            if not math.isfinite(candidate_psi):
                return None
        beta, psi = candidate, candidate_psi
        if not np.isfinite(beta).all() or float(beta.max()) > 1e12 * max(1.0, initial_norm):
            return None  # ψ is unbounded below: 0 is in the convex hull of the gradients.
    return beta if float(np.abs(beta * (gramian @ beta) - 1.0).max()) < 1e-8 else None


def _psi(gramian: Array, beta: Array) -> float:
    if not (beta > 0).all():
        return math.inf
    return 0.5 * float(beta @ gramian @ beta) - float(np.log(beta).sum())


def solve_subproblem(
    gramian: Array, objective: Array, nash: Array | None, *, may_be_unbounded: bool = True
) -> Array | None:
    """Solve min aᵀβ subject to β_i (Gβ)_i ≥ 1, β_i > 0, (Gβ)_i > 0 for every i.

    This is one convex subproblem of Nash-MTL's sequence, in units where its constraints
    log β_i + log (Gβ)_i ≥ 0 read as above. When the Nash point (every constraint active)
    satisfies the KKT conditions (a = Σ_i λ_i ∇(β_i (Gβ)_i) with λ ≥ 0), it is the optimum.
    Otherwise a barrier method runs from it, scaled inside the set, on the self-concordant
    barrier −Σ_i log(β_i (Gβ)_i − 1) (each constraint is a rotated second-order cone).

    Args:
        gramian: [K, K] G.
        objective: [K] a.
        nash: [K] the Nash point of G (:func:`nash_point`), or None if the set is empty.
        may_be_unbounded: False skips the test for unboundedness (when a linearization point
            β_p > 0 with Gβ_p > 0 makes a > 0 on the recession cone).

    Returns:
        [K] the optimal β, or None when the problem is infeasible or unbounded (where cvxpy
        reports no value).
    """
    if nash is None:
        return None
    # The set's recession cone is {d ≥ 0 : Gd ≥ 0}; a > 0 makes aᵀd > 0 on it.
    if may_be_unbounded and (objective <= 0).any() and _is_unbounded(gramian, objective):
        return None
    g_nash = gramian @ nash
    constraint_jacobian = np.diag(g_nash) + nash[:, None] * gramian  # rows ∇(β_i (Gβ)_i)
    try:
        multipliers = np.linalg.solve(constraint_jacobian.T, objective)
    except np.linalg.LinAlgError:
        multipliers = None
    if (
        multipliers is not None
        and bool(np.isfinite(multipliers).all())
        and float(multipliers.min()) >= -1e-12 * max(1.0, float(np.abs(multipliers).max()))
    ):
        return nash
    return _barrier_solve(gramian, objective, nash * math.exp(0.5))


def _is_unbounded(gramian: Array, objective: Array) -> bool:
    """Whether aᵀd < 0 for some d ≥ 0 with Gd ≥ 0: min aᵀd over that cone cut by 1ᵀd ≤ 1.

    A dense simplex method with Bland's rule from the slack basis (the origin is a vertex).
    """
    num_tasks = gramian.shape[0]
    rows = num_tasks + 1
    # Tableau [A | I | b] for -G d ≤ 0 and 1ᵀd ≤ 1, cost row [a | 0 | 0] underneath.
    tableau = np.zeros((rows + 1, num_tasks + rows + 1))
    tableau[:num_tasks, :num_tasks] = -gramian
    tableau[num_tasks, :num_tasks] = 1.0
    tableau[:rows, num_tasks : num_tasks + rows] = np.eye(rows)
    tableau[num_tasks, -1] = 1.0
    tableau[rows, :num_tasks] = objective
    basis = list(range(num_tasks, num_tasks + rows))
    tolerance = 1e-12 * max(1.0, float(np.abs(objective).max()))
    for _ in range(50 * rows):
        entering = np.flatnonzero(tableau[rows, :-1] < -tolerance)
        if entering.size == 0:
            break
        column = int(entering[0])
        pivots = np.flatnonzero(tableau[:rows, column] > 1e-14)
        ratios = tableau[pivots, -1] / tableau[pivots, column]
        best = ratios.min()
        ties = pivots[ratios <= best + 1e-15]
        row = int(min(ties, key=lambda r: basis[r]))
        tableau[row] /= tableau[row, column]
        others = np.arange(rows + 1) != row
        tableau[others] -= tableau[others, column][:, None] * tableau[row]
        basis[row] = column
    return bool(-tableau[rows, -1] < -tolerance)


def _barrier_solve(gramian: Array, objective: Array, start: Array) -> Array | None:
    """Barrier method (Boyd & Vandenberghe §11.3) for :func:`solve_subproblem`.

    Minimizes t·aᵀβ − Σ_i log(β_i (Gβ)_i − 1) by damped Newton steps for t growing 20× at a
    time, until the duality gap 2K/t is below 1e-11 of the objective's scale.
    """
    num_tasks = gramian.shape[0]
    beta = start

    def barrier(point: Array) -> float:
        g_point = gramian @ point
        slack = point * g_point - 1.0
        if not ((point > 0).all() and (g_point > 0).all() and (slack > 0).all()):
            return math.inf
        return -float(np.log(slack).sum())

    def derivatives(point: Array) -> tuple[Array, Array]:
        g_point = gramian @ point
        slack = point * g_point - 1.0
        gradient = -g_point / slack - gramian @ (point / slack)
        inverse_sq = 1.0 / slack**2
        cross = inverse_sq[:, None] * gramian
        hessian = (
            np.diag(g_point**2 * inverse_sq)
            + cross
            + cross.T
            + (gramian * (point**2 * inverse_sq)) @ gramian
        )
        return gradient, hessian

    gradient, hessian = derivatives(beta)
    try:
        solved = np.linalg.solve(hessian, np.stack([objective, gradient], axis=1))
    except np.linalg.LinAlgError:
        return None
    # The t that puts the start closest to the central path, in the Hessian's norm.
    t = max(-float(objective @ solved[:, 1]) / float(objective @ solved[:, 0]), 1e-3)
    scale = 1e-11 * max(1.0, abs(float(objective @ beta)))
    start_norm = float(np.abs(start).max())
    current = barrier(beta)
    for _ in range(500):
        gradient, hessian = derivatives(beta)
        gradient = t * objective + gradient
        try:
            direction = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        decrement = -float(gradient @ direction)  # λ², dimensionless
        step = 1.0
        while step > 1e-10:
            candidate = beta + step * direction
            candidate_barrier = barrier(candidate)
            # The change, not the two values: t·aᵀβ is large and would drown it in rounding.
            change = t * step * float(objective @ direction) + candidate_barrier - current
            if change <= -0.25 * step * decrement:
                break
            if decrement < 1e-4:
                # Newton's full step is always accepted this close to the centre (λ < 0.01) of
                # a self-concordant function; a rejection is rounding: the point is centred.
                step = 0.0
                break
            step *= 0.5
        if step > 1e-10:
            beta, current = candidate, candidate_barrier
            if float(np.abs(beta).max()) > 1e12 * max(1.0, start_norm):
                return None
        if decrement < 1e-8 or step <= 1e-10:
            if 2.0 * num_tasks / t < scale:
                return beta
            t *= 20.0
    return beta


def nash_mtl_weights(gramian: Tensor, previous_weights: Tensor, *, optim_niter: int = 20) -> Tensor:
    """Nash-MTL's weights α for one Gramian: the sequence of convex subproblems of Algorithm 1.

    With Ĝ = G/‖G‖_F and the normalization factor ν = ‖G‖_F, each subproblem (built around the
    previous iterate α_p) is that of the official code::

        min_α  1ᵀĜα + φ_p(α)/ν   s.t.  −log(α_i ν) − log((Ĝα)_i) ≤ 0,  α ≥ 0,
        φ_p(α) = (1/α_p + Ĝ (1/(Ĝα_p)))ᵀ (α − α_p)

    so the constraints read α_i (Gα)_i ≥ 1 on the *unnormalized* Gramian, and where they are
    all active the result is the Nash bargaining solution G α = 1/α. The loop stops, as the
    official one does, when ‖Ĝα_t − 1/(α_t + 1e-10)‖ < 1e-3, when an iterate moves less than
    1e-6, or after ``optim_niter`` subproblems; it returns the iterate *before* the stopping one,
    and the previous weights when the first subproblem has no solution (0 in the convex hull of
    the gradients, a zero or non-finite Gramian).

    Args:
        gramian: [K, K] G = J Jᵀ of the per-task gradients J [K, n].
        previous_weights: [K] the warm start (ones at the first call).
        optim_niter: the largest number of subproblems.

    Returns:
        [K] α in float64 on the CPU (not clipped to ``max_norm``).

    >>> nash_mtl_weights(torch.diag(torch.tensor([4.0, 1.0])), torch.ones(2))
    tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    raw = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    alpha = previous_weights.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    norm = float(np.linalg.norm(raw))
    if not (math.isfinite(norm) and norm > 0):
        return torch.from_numpy(alpha)
    normalized = raw / norm
    root = math.sqrt(norm)  # β = α √ν turns the constraints into β_i (Ĝβ)_i ≥ 1
    nash: Array | None = None
    have_nash = False
    for _ in range(optim_niter):
        beta_previous = alpha * root
        g_previous = normalized @ beta_previous
        if (beta_previous == 0).any() or (g_previous == 0).any():
            break  # the linearization divides by zero; cvxpy fails and the official code stops
        if not have_nash:
            nash, have_nash = nash_point(normalized, beta_previous), True
        linearization = 1.0 / beta_previous + normalized @ (1.0 / g_previous)
        objective = normalized.sum(axis=0) + linearization / root
        # Around a point inside the domain the subproblem is bounded (see solve_subproblem).
        is_inside = bool((beta_previous > 0).all() and (g_previous > 0).all())
        beta = solve_subproblem(normalized, objective, nash, may_be_unbounded=not is_inside)
        if beta is None:
            break
        candidate = beta / root
        is_nash = np.linalg.norm(normalized @ alpha - 1.0 / (alpha + 1e-10)) < _NASH_RESIDUAL_TOL
        if is_nash or np.linalg.norm(candidate - alpha) < _STEP_TOL:
            break
        alpha = candidate
    return torch.from_numpy(alpha)


@METHODS.register("nash_mtl")
class NashMTL(WeightedMethod):
    """Nash-MTL: the update is the Nash bargaining solution among the task gradients.

    The weights α solve G α = 1/α on the Gramian G = J Jᵀ of the task gradients, found as the
    official implementation does: a sequence of convex subproblems around the previous weights
    (see :func:`nash_mtl_weights`), then the update Σ_i α_i g_i is scaled down to norm
    ``max_norm`` if longer. The weights are not normalized: α_i scales as 1/‖g_i‖ and the
    unclipped update has squared norm K (α_i (Gα)_i = 1 for each i).

    Args:
        max_norm: the largest norm of the update (0 disables the clipping); clipping happens
            inside the method, as in the official code.
        update_weights_every: solve every this many calls; the calls between reuse the last
            weights (clipped again to the current gradients).
        optim_niter: the largest number of convex subproblems per solve.

    Solver: the subproblems are solved to about 1e-12 by a damped Newton method for the Nash
    point, certified optimal by its KKT multipliers, and a barrier method on the rotated-cone
    form of the constraints where it is not (no cvxpy needed). For gradient norms between about
    1e-2 and 1e2 the result matches torchjd's ``NashMTL`` (same problem, same stopping rules) to
    about 1e-6, the accuracy of ECOS. Outside that range ECOS can stop at its iteration limit on
    the official formulation (ν multiplies α inside a log) and torchjd's weights drift from the
    subproblems' optima: measured 1e-4 relative at norms near 1e4, wrong weights near 3e-3, and
    a failed solve (α = 1 kept) near 1e-4. The solver here works in scale-free units and stays
    exact.

    Departures from the official code and torchjd: no ``n_tasks`` (the warm start follows the
    tasks by name, a task missing last time starts from 1, and a change of tasks forces a
    solve); the norm for clipping comes from the Gramian; exact subproblem solutions make the
    loop stop earlier; an all-zero input gives a zero update instead of a solver error. Kept as
    they are: a step whose gradients have 0 in their convex hull (two opposite gradients, a
    zero gradient) or whose first subproblem is unbounded keeps the previous weights (ones at
    first); with one task the stopping rule holds at α = 1, so the update is g, clipped.

    Non-differentiable: the weights come from an iterative solver on detached values.

    >>> method = NashMTL()
    >>> method(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.0542, 0.7061, 0.7061])
    """

    name: ClassVar[str] = "nash_mtl"
    summary: ClassVar[str] = (
        "Nash-MTL: Nash bargaining solution among the task gradients (Navon et al., ICML 2022)."
    )

    def __init__(
        self, *, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20
    ) -> None:
        super().__init__()
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
            raise TypeError(f"`max_norm` must be a number; got {max_norm!r}.")
        if not math.isfinite(max_norm) or max_norm < 0:
            raise ValueError(
                f"`max_norm` must be finite and non-negative (0 disables clipping); got {max_norm}."
            )
        for option, value in (
            ("update_weights_every", update_weights_every),
            ("optim_niter", optim_niter),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{option}` must be a positive integer; got {value!r}.")
        self.max_norm = float(max_norm)
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self.reset()

    def reset(self) -> None:
        """Forget the previous weights and the call counter."""
        self._step = 0
        self._previous: Tensor | None = None  # [K] float64, α of the last solve
        self._previous_tasks: tuple[str, ...] | None = None

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] per-task gradients → [K] α (clipped to ``max_norm``), in their dtype."""
        num_tasks = per_task_grads.shape[0]
        # [K, K]; formed from a rescaled copy where the float32 product overflows (entries
        # around 1e19).
        gramian = self.gramian(per_task_grads).detach().to(device="cpu", dtype=torch.float64)
        names = tuple(tasks) if tasks is not None else None
        previous = self._warm_start(num_tasks, names)
        is_same_tasks = (
            self._previous is not None
            and self._previous.shape[0] == num_tasks
            and self._previous_tasks == names
        )
        if self._step % self.update_weights_every == 0 or not is_same_tasks:
            alpha = nash_mtl_weights(gramian, previous, optim_niter=self.optim_niter)
            self._previous, self._previous_tasks = alpha, names
        else:
            alpha = previous
        self._step += 1
        if self.max_norm > 0:
            norm = math.sqrt(max(float(alpha @ gramian @ alpha), 0.0))
            if norm > self.max_norm:
                alpha = alpha / norm * self.max_norm
        return alpha.to(device=per_task_grads.device, dtype=per_task_grads.dtype)

    def _warm_start(self, num_tasks: int, names: tuple[str, ...] | None) -> Tensor:
        """The previous α, matched by task name where known; 1 for a task not seen last time."""
        previous, previous_names = self._previous, self._previous_tasks
        if previous is None:
            return torch.ones(num_tasks, dtype=torch.float64)
        if names is not None and previous_names is not None:
            by_name = dict(zip(previous_names, previous.tolist(), strict=True))
            return torch.tensor([by_name.get(name, 1.0) for name in names], dtype=torch.float64)
        if previous.shape[0] == num_tasks:
            return previous.clone()
        return torch.ones(num_tasks, dtype=torch.float64)

    def get_extra_state(self) -> dict[str, Any]:
        """The call counter and the last weights with their tasks, so a resumed run continues."""
        return {
            "step": self._step,
            "previous_weights": self._previous,
            "previous_tasks": None if self._previous_tasks is None else list(self._previous_tasks),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self._step = int(state["step"])
        previous = state["previous_weights"]
        self._previous = None if previous is None else previous.to(torch.float64).clone()
        tasks = state["previous_tasks"]
        self._previous_tasks = None if tasks is None else tuple(tasks)

    def extra_repr(self) -> str:
        """The options."""
        return (
            f"max_norm={self.max_norm}, update_weights_every={self.update_weights_every}, "
            f"optim_niter={self.optim_niter}"
        )
