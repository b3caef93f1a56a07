"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021, arXiv 2110.14048)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod

Rescale = Literal[0, 1, 2]
Array = npt.NDArray[np.float64]

# ‖g_w‖ below this fraction of ‖J‖_F counts as zero: 0 is then, to rounding, in the convex hull
# of the rows (a Pareto-stationary point) and the correction term has no direction.
_STATIONARY_NORM = 1e-8
# Duality gap (in units of the trace-normalized Gramian) at which the dual solution is final.
_GAP_TOL = 1e-13


def cagrad_weights(
    gramian: Tensor, *, c: float = 0.4, rescale: Rescale = 1, max_iters: int = 1000
) -> Tensor:
    """CAGrad's task weights from the Gramian of the task gradients.

    With g₀ the mean gradient and ρ = c‖g₀‖, CAGrad maximizes minᵢ gᵢᵀd over the ball
    ‖d − g₀‖ ≤ ρ. Its dual is min over the simplex of F(w) = g_wᵀg₀ + ρ‖g_w‖ with g_w = Jᵀw,
    and d = g₀ + (ρ / ‖g_w‖) g_w, divided by 1 (``rescale=0``), 1 + c² (1) or 1 + c (2).

    The dual is solved on the trace-normalized Gramian in float64: accelerated projected
    gradient (FISTA with backtracking and restarts) on the simplex, and at every iteration
    the exact stationary point on the current support (closed form, below) is tried and
    accepted when its duality gap maxᵢ(wᵀ∇F − ∇Fᵢ) ≤ 1e-13. On a support S with G_SS
    invertible, stationarity (∇F = a + ρGw/‖g_w‖ constant on S, with aᵢ = gᵢᵀg₀) and Σw = 1
    give w_S = G_SS⁻¹(μ1 − a_S) / √Δ with α = 1ᵀG_SS⁻¹1, β = 1ᵀG_SS⁻¹a_S,
    γ = a_SᵀG_SS⁻¹a_S, Δ = β² − αγ + αρ² and μ = (β + √Δ)/α.

    Args:
        gramian: [K, K] G = J Jᵀ.
        c: the radius factor.
        rescale: 0, 1 or 2, as above.
        max_iters: cap on the iterations of the dual solver.

    Returns:
        [K] weights ω with d = ωᵀJ, on ``gramian``'s device and dtype.

    >>> cagrad_weights(torch.eye(2), c=0.4, rescale=0)  # orthogonal unit rows: d = (1 + c) g₀
    tensor([0.7000, 0.7000])
    """
    num_tasks = gramian.shape[0]
    # float64 numpy on the CPU: the solver's many K-vector steps cost ~10 µs each in torch.
    gram64 = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    mean = np.full(num_tasks, 1.0 / num_tasks)
    weights = mean
    trace = float(np.trace(gram64))
    if trace > 0.0 and math.isfinite(trace) and c > 0:
        gram64 = (gram64 + gram64.T) / (2.0 * trace)
        mean_products = gram64 @ mean  # [K] gᵢᵀg₀
        radius = c * math.sqrt(max(float(mean @ mean_products), 0.0))
        if radius > 0.0:
            dual = solve_cagrad_dual(gram64, mean_products, radius, max_iters=max_iters)
            combined_norm = math.sqrt(max(float(dual @ gram64 @ dual), 0.0))
            if combined_norm > _STATIONARY_NORM:
                weights = mean + (radius / combined_norm) * dual
    weights = weights / (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)


def solve_cagrad_dual(
    gramian: Array, mean_products: Array, radius: float, *, max_iters: int = 1000
) -> Array:
    """Argmin over the simplex of F(w) = aᵀw + ρ√(wᵀGw) (see :func:`cagrad_weights`).

    Args:
        gramian: [K, K] float64 G, symmetric positive semi-definite.
        mean_products: [K] float64 a = G·1/K.
        radius: ρ > 0.
        max_iters: cap on the iterations.

    Returns:
        [K] float64 w on the simplex.
    """
    num_tasks = gramian.shape[0]
    x = np.full(num_tasks, 1.0 / num_tasks)
    if num_tasks == 1:
        return x
    objective = _DualObjective(gramian, mean_products, radius)
    f_x, grad_x = objective(x)
    best, best_gap = x, objective.gap(x, grad_x)
    y, f_y, grad_y = x, f_x, grad_x
    momentum = 1.0
    # A Lipschitz estimate of ∇F near x: ρ λ_max(G) / ‖g_w‖; backtracking corrects it.
    lipschitz = radius * float(gramian.diagonal().max()) / max(objective.norm(x), 1e-300)
    for _ in range(max_iters):
        if best_gap <= _GAP_TOL:
            break
        for _ in range(60):
            x_new = _project_on_simplex(y - grad_y / lipschitz)
            f_new, grad_new = objective(x_new)
            step = x_new - y
            bound = f_y + float(grad_y @ step) + 0.5 * lipschitz * float(step @ step)
            if f_new <= bound + 1e-15 * abs(f_y):
                break
            lipschitz *= 2.0
        if f_new > f_x and momentum > 1.0:
            # Function-value restart of the momentum (O'Donoghue & Candès).
            y, f_y, grad_y, momentum = x, f_x, grad_x, 1.0
            continue
        next_momentum = (1.0 + math.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
        y = x_new + ((momentum - 1.0) / next_momentum) * (x_new - x)
        x, f_x, grad_x, momentum = x_new, f_new, grad_new, next_momentum
        if objective.norm(y) > 0.0:
            f_y, grad_y = objective(y)
        else:
            y, f_y, grad_y, momentum = x, f_x, grad_x, 1.0
        lipschitz *= 0.9
        gap = objective.gap(x, grad_x)
        if gap < best_gap:
            best, best_gap = x, gap
        # The closed form on the current support, tried at every iteration: it is a K×K solve,
        # and it ends the loop as soon as the support is right (2 iterations instead of 10 on
        # the MLP benchmark's gradients).
        polished = _stationary_point_on_support(gramian, mean_products, radius, x > 0)
        if polished is not None:
            polished_gap = objective.gap(polished, objective(polished)[1])
            if polished_gap < best_gap:
                best, best_gap = polished, polished_gap
    return best


class _DualObjective:
    """F(w) = aᵀw + ρ‖g_w‖ and its gradient a + ρ G w / ‖g_w‖, from the Gramian."""

    def __init__(self, gramian: Array, mean_products: Array, radius: float) -> None:
        self.gramian = gramian
        self.mean_products = mean_products
        self.radius = radius

    def norm(self, w: Array) -> float:
        """‖g_w‖ = √(wᵀGw)."""
        return math.sqrt(max(float(w @ self.gramian @ w), 0.0))

    def __call__(self, w: Array) -> tuple[float, Array]:
        products = self.gramian @ w
        norm = math.sqrt(max(float(w @ products), 0.0))
        value = float(self.mean_products @ w) + self.radius * norm
        # At g_w = 0 the norm is not differentiable; a (the subgradient for 0) is used.
        scale = self.radius / norm if norm > 0.0 else 0.0
        return value, self.mean_products + scale * products

    @staticmethod
    def gap(w: Array, grad: Array) -> float:
        """Frank–Wolfe gap wᵀ∇F − minᵢ ∇Fᵢ ≥ F(w) − F*.

        Here it is exactly the duality gap: wᵀ∇F = F(w), and minᵢ ∇Fᵢ = minᵢ gᵢᵀd is the
        primal value of d(w).
        """
        return float(w @ grad - grad.min())


def _stationary_point_on_support(
    gramian: Array, mean_products: Array, radius: float, support: npt.NDArray[np.bool_]
) -> Array | None:
    """The closed-form stationary point of F on the face of the simplex given by ``support``.

    None when it does not exist or leaves the simplex (see :func:`cagrad_weights`).
    """
    index = np.flatnonzero(support)
    block = gramian[np.ix_(index, index)]
    rhs = np.stack([np.ones(index.size), mean_products[index]], axis=1)
    try:
        solution = np.linalg.solve(block, rhs)
    except np.linalg.LinAlgError:
        return None
    inv_ones, inv_products = solution[:, 0], solution[:, 1]
    alpha = float(inv_ones.sum())
    beta = float(inv_products.sum())
    gamma = float(mean_products[index] @ inv_products)
    discriminant = beta * beta - alpha * gamma + alpha * radius * radius
    if not (alpha > 0.0 and discriminant > 0.0 and math.isfinite(discriminant)):
        return None
    root = math.sqrt(discriminant)
    on_support = ((beta + root) / alpha * inv_ones - inv_products) / root
    if not bool((on_support >= 0.0).all()):
        return None
    w = np.zeros_like(mean_products)
    w[index] = on_support
    return w


def project_on_simplex(y: Tensor) -> Tensor:
    """Euclidean projection onto {w : w ≥ 0, Σw = 1} (sort-based, Held et al.).

    Args:
        y: [K] any vector.

    Returns:
        [K] the closest point of the simplex.

    >>> project_on_simplex(torch.tensor([0.5, 2.0, -1.0]))
    tensor([0., 1., 0.])
    """
    ordered = y.sort(descending=True).values
    shifted_sums = ordered.cumsum(0) - 1.0
    counts = torch.arange(1, y.shape[0] + 1, dtype=y.dtype, device=y.device)
    last = int((ordered - shifted_sums / counts > 0).nonzero().max())
    threshold = shifted_sums[last] / (last + 1)
    return (y - threshold).clamp_min(0.0)


def _project_on_simplex(y: Array) -> Array:
    """:func:`project_on_simplex` for a float64 numpy vector."""
    ordered = np.sort(y)[::-1]
    shifted_sums = np.cumsum(ordered) - 1.0
    last = int(np.flatnonzero(ordered - shifted_sums / np.arange(1, y.shape[0] + 1) > 0).max())
    projected: Array = np.maximum(y - shifted_sums[last] / (last + 1), 0.0)
    return projected


@METHODS.register("cagrad")
class CAGrad(WeightedMethod):
    """CAGrad: the direction within c‖g₀‖ of the mean gradient g₀ that most helps the worst task.

    d maximizes minᵢ gᵢᵀd subject to ‖d − g₀‖ ≤ c‖g₀‖ (Algorithm 1 of Liu et al., NeurIPS
    2021, arXiv 2110.14048); see :func:`cagrad_weights` for the dual and our solver.

    Conventions:
        - Mean scale: for c = 0 the update is the mean gradient, as the official ``cagrad()``
          function and LibMTL. The official training scripts (CAGrad's and Nash-MTL's) write
          K times this into ``.grad`` "to match the sum loss".
        - ``c`` defaults to 0.4, as Nash-MTL and the CAGrad README's runs; LibMTL's ``calpha``
          defaults to 0.5.
        - ``rescale`` defaults to 1 (divide by 1 + c²) as the official code and LibMTL;
          torchjd's ``CAGrad`` does not rescale (it equals ``rescale=0``).
        - Our own solver (no cvxpy or scipy; the official code calls
          ``scipy.optimize.minimize``, torchjd cvxpy), on the trace-normalized Gramian, so
          the result does not depend on the scale of the gradients. When 0 is, to rounding,
          in the convex hull of the rows, the correction is dropped and d = g₀ (rescaled);
          torchjd returns 0 there.

    Args:
        c: the radius factor, ≥ 0 (0 gives the mean).
        rescale: 0, 1 or 2: divide by 1, 1 + c² or 1 + c.
        max_iters: cap on the iterations of the dual solver (it usually stops within 50).

    Values on J = [[-4, 1, 1], [6, 1, 1]] with c = 0.5, unrescaled (torchjd's pinned value):

    >>> J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> CAGrad(c=0.5, rescale=0)(J)
    tensor([0.1835, 1.2041, 1.2041])
    """

    name: ClassVar[str] = "cagrad"
    summary: ClassVar[str] = (
        "CAGrad: the direction near the mean gradient that maximizes the worst task's "
        "improvement (Liu et al. 2021)."
    )

    def __init__(self, *, c: float = 0.4, rescale: Rescale = 1, max_iters: int = 1000) -> None:
        super().__init__()
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ValueError(
                f"`c` must be a non-negative number; got {c!r}. The paper uses 0.4 or 0.5 "
                "(0 gives the mean gradient)."
            )
        if rescale not in (0, 1, 2) or isinstance(rescale, bool):
            raise ValueError(
                f"`rescale` must be 0 (none), 1 (divide by 1 + c², the default) or 2 (divide "
                f"by 1 + c); got {rescale!r}."
            )
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"`max_iters` must be a positive integer; got {max_iters!r}.")
        self.c = float(c)
        self.rescale: Rescale = rescale
        self.max_iters = max_iters

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] the weights of d (see :func:`cagrad_weights`)."""
        return cagrad_weights(
            self.gramian(per_task_grads), c=self.c, rescale=self.rescale, max_iters=self.max_iters
        )

    def extra_repr(self) -> str:
        """The options."""
        return f"c={self.c}, rescale={self.rescale}, max_iters={self.max_iters}"
