"""CAGrad: our dual solver against exact and certified float64 references."""

from __future__ import annotations

import math

import pytest
import torch
from _asserts import (
    assert_finite_on_edge_cases,
    assert_permutation_invariant,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_zero_on_zero,
)
from _inputs import J_BASE, normal, random_matrices
from torch import Tensor
from torch.testing import assert_close

from taskprio.methods import CAGrad
from taskprio.methods._cagrad import project_on_simplex


def cagrad_two_tasks(matrix: Tensor, c: float) -> Tensor:
    """Exact unrescaled CAGrad for two rows: the dual is 1-D and convex, so bisect on F′(t).

    F(t) = g_tᵀg₀ + ρ‖g_t‖ with g_t = t g₁ + (1 − t) g₂; d = g₀ + ρ g_t / ‖g_t‖.
    """
    first, second = matrix
    mean = matrix.mean(dim=0)
    radius = c * float(mean.norm())

    def slope(t: float) -> float:
        combined = t * first + (1 - t) * second
        return float((first - second) @ mean) + radius * float(combined @ (first - second)) / float(
            combined.norm()
        )

    if slope(0.0) >= 0:
        t = 0.0
    elif slope(1.0) <= 0:
        t = 1.0
    else:
        low, high = 0.0, 1.0
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if slope(middle) < 0 else (low, middle)
        t = (low + high) / 2
    combined = t * first + (1 - t) * second
    return mean + radius / float(combined.norm()) * combined


def duality_gap(matrix: Tensor, weights: Tensor, c: float) -> tuple[float, float]:
    """(gap, ball violation) of the unrescaled CAGrad solution given by ``weights``.

    d = weightsᵀJ must lie in the ball ‖d − g₀‖ ≤ c‖g₀‖; w ∝ weights − 1/K is the dual point.
    Weak duality: minᵢ gᵢᵀd ≤ F(w) = g_wᵀg₀ + c‖g₀‖‖g_w‖, so a zero gap proves both optimal.
    """
    num_tasks = matrix.shape[0]
    mean = matrix.mean(dim=0)
    radius = c * float(mean.norm())
    direction = weights @ matrix
    dual = weights - 1.0 / num_tasks
    dual = dual / dual.sum()
    assert bool((dual >= -1e-15).all())
    combined = dual @ matrix
    dual_value = float(combined @ mean) + radius * float(combined.norm())
    primal_value = float((matrix @ direction).min())
    violation = float((direction - mean).norm()) - radius
    return dual_value - primal_value, violation


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
@pytest.mark.parametrize("c", [0.4, 0.9])
def test_certified_optimal(matrix, c):
    weights = CAGrad(c=c, rescale=0).weights(matrix)
    gap, violation = duality_gap(matrix, weights, c)
    scale = float(matrix.norm()) ** 2
    # Observed: |gap| ≤ 2.2e-16·‖J‖²_F, violation ≤ 5.2e-16·‖J‖_F.
    assert -1e-14 * scale <= gap <= 1e-14 * scale
    assert violation <= 1e-14 * math.sqrt(scale)


@pytest.mark.parametrize("seed", range(12))
def test_two_tasks_match_exact_reference(seed):
    matrix = normal(2, 2 + seed, 500 + seed)
    expected = cagrad_two_tasks(matrix, 0.4)  # observed error ≤ 2e-16 relative
    assert_close(CAGrad(c=0.4, rescale=0)(matrix), expected, rtol=1e-14, atol=1e-14)


def test_three_tasks_no_better_point_on_a_grid():
    # Brute force: the dual objective on a grid of the 2-simplex is never below ours.
    matrix = normal(3, 5, 520)
    mean = matrix.mean(dim=0)
    radius = 0.4 * float(mean.norm())
    steps = torch.linspace(0, 1, 301, dtype=torch.float64)
    grid = torch.cartesian_prod(steps, steps)
    grid = grid[grid.sum(dim=1) <= 1]
    points = torch.cat([grid, 1 - grid.sum(dim=1, keepdim=True)], dim=1)  # [P, 3]
    combined = points @ matrix
    grid_values = combined @ mean + radius * combined.norm(dim=1)
    weights = CAGrad(c=0.4, rescale=0).weights(matrix)
    dual = (weights - 1 / 3) / (weights - 1 / 3).sum()
    ours = float((dual @ matrix) @ mean) + radius * float((dual @ matrix).norm())
    assert ours <= float(grid_values.min()) + 1e-15


def test_hand_worked_two_tasks():
    # g₁ = (2, 0), g₂ = (0, 1), c = 0.4: g₀ = (1, 1/2), ρ = 0.4·√1.25 = 1/√5, a = Gg₀·… = (2, 1/2).
    # F(t) = 1/2 + 3t/2 + ρ√(4t² + (1 − t)²) has F′(0) = 3/2 − ρ > 0: the dual point is g₂ alone,
    # d = g₀ + ρ g₂ = (1, 1/2 + 1/√5); minᵢ gᵢᵀd = 1/2 + 1/√5 = F(0). Rescale 1: ÷ 1.16.
    matrix = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    method = CAGrad(c=0.4)
    expected = torch.tensor([1.0, 0.5 + 5**-0.5], dtype=torch.float64) / 1.16
    assert_close(method(matrix), expected, rtol=1e-14, atol=1e-14)
    weights = torch.tensor(method.diagnostics()["task_weights"], dtype=torch.float64)
    assert_close(weights, torch.tensor([0.5, 0.5 + 5**-0.5], dtype=torch.float64) / 1.16)


def test_pinned_value_of_torchjd():
    # torchjd's CAGrad(c=0.5) does not rescale.
    assert_close(
        CAGrad(c=0.5, rescale=0)(J_BASE),
        J_BASE.new_tensor([0.1835, 1.2041, 1.2041]),
        atol=1e-4,
        rtol=0,
    )


def test_rescale_conventions():
    matrix = normal(4, 9, 530)
    plain = CAGrad(c=0.4, rescale=0)(matrix)
    assert_close(CAGrad(c=0.4)(matrix), plain / 1.16)  # default: ÷ (1 + c²), the official code
    assert_close(CAGrad(c=0.4, rescale=2)(matrix), plain / 1.4)
    assert_close(CAGrad(c=0.0)(matrix), matrix.mean(dim=0))  # mean scale, not sum


def test_matches_torchjd_when_cvxpy_is_installed():
    pytest.importorskip("cvxpy")
    from torchjd.aggregation import CAGrad as TorchJDCAGrad

    for matrix in random_matrices()[::3]:
        ours = CAGrad(c=0.5, rescale=0)(matrix)
        theirs = TorchJDCAGrad(c=0.5, norm_eps=0.0)(matrix)
        # CLARABEL stops at ~1e-8 on the objective: the direction agrees to ~1e-4 only, and
        # ours is never the worse primal point.
        assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * float(theirs.abs().max()))
        scale = float(matrix.norm()) ** 2
        assert float((matrix @ ours).min()) >= float((matrix @ theirs).min()) - 1e-12 * scale


def test_properties():
    assert_finite_on_edge_cases(CAGrad)
    assert_runs_in_step(CAGrad)
    assert_zero_on_zero(CAGrad)
    assert_single_task(CAGrad, factor=1.4 / 1.16)  # d = (1 + c) g, then ÷ (1 + c²)
    assert_permutation_invariant(CAGrad, rtol=1e-10)
    assert_scale_equivariant(CAGrad)


def test_parallel_and_opposite_rows():
    row = normal(1, 5, 540)[0]
    # Parallel g, 2g: the dual point is g (the shorter), d = g₀ + c‖g₀‖ ĝ = 1.5 (1 + c) g.
    assert_close(CAGrad(c=0.4, rescale=0)(torch.stack([row, 2 * row])), 1.5 * 1.4 * row)
    # Opposite g, −g: g₀ = 0, nothing to correct.
    assert_close(CAGrad()(torch.stack([row, -row])), torch.zeros_like(row))


def test_project_on_simplex():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = torch.randn(6, generator=generator, dtype=torch.float64) * 3
        projected = project_on_simplex(y)
        assert float(projected.sum()) == pytest.approx(1.0) and bool((projected >= 0).all())
        # Optimality: y − p is constant on the support and not larger elsewhere.
        residual = y - projected
        support = projected > 0
        assert float(residual[support].max() - residual[support].min()) < 1e-12
        if bool((~support).any()):
            assert float(residual[~support].max()) <= float(residual[support].min()) + 1e-12


def test_options_are_validated():
    with pytest.raises(ValueError, match="`c` must be a non-negative number"):
        CAGrad(c=-0.1)
    with pytest.raises(ValueError, match="`rescale` must be 0"):
        CAGrad(rescale=3)  # type: ignore[arg-type]
    assert repr(CAGrad()) == "CAGrad(c=0.4, rescale=1, max_iters=1000)"
