"""Nash-MTL: torchjd, the bargaining condition, pinned values, state, properties."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

import taskprio
from taskprio.methods._nash_mtl import (
    NashMTL,
    _is_unbounded,
    nash_mtl_weights,
    nash_point,
    solve_subproblem,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matrices: thread start-up on a shared machine costs more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _matrix(num_tasks: int, n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, n, generator=generator, dtype=dtype)


def _torchjd(num_tasks: int, **options):
    pytest.importorskip("cvxpy")
    from torchjd.aggregation import NashMTL as TorchJDNashMTL

    return TorchJDNashMTL(n_tasks=num_tasks, **options)


# -- equivalence with torchjd (needs cvxpy) ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*not DPP")
@pytest.mark.parametrize("num_tasks", range(2, 11))
def test_matches_torchjd_on_random_jacobians(num_tasks):
    theirs = _torchjd(num_tasks)
    ours = NashMTL()
    matrix = _matrix(num_tasks, 30, seed=num_tasks)
    for call in range(3):  # the warm start carries over between calls
        matrix = matrix + 0.3 * call * _matrix(num_tasks, 30, seed=100 + call)
        expected_weights = theirs.weighting(matrix)
        torch.testing.assert_close(ours.weights(matrix), expected_weights, rtol=0, atol=2e-6)
        torch.testing.assert_close(ours(matrix), theirs(matrix), rtol=0, atol=2e-6)


@pytest.mark.filterwarnings("ignore:.*not DPP")
@pytest.mark.parametrize("seed", [1, 10, 14, 25])
def test_matches_torchjd_when_the_first_linearization_is_outside_the_domain(seed):
    # Ĝ1 has a negative entry: the first subproblem (around α = 1) may be unbounded (seeds 14
    # and 25, where both keep α = 1) or need the barrier method.
    matrix = _matrix(4, 6, seed=seed)
    gramian = matrix @ matrix.T
    assert bool((gramian.sum(dim=0) < 0).any())
    theirs = _torchjd(4, max_norm=0.0)
    ours = NashMTL(max_norm=0.0)
    torch.testing.assert_close(ours.weights(matrix), theirs.weighting(matrix), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*not DPP")
@pytest.mark.parametrize(
    "options", [{"update_weights_every": 2}, {"optim_niter": 1}, {"max_norm": 0.5}]
)
def test_matches_torchjd_options(options):
    theirs = _torchjd(5, **options)
    ours = NashMTL(**options)
    for call in range(4):
        matrix = _matrix(5, 20, seed=call)
        torch.testing.assert_close(ours(matrix), theirs(matrix), rtol=0, atol=2e-6)


@pytest.mark.filterwarnings("ignore:.*not DPP")
def test_barrier_subproblem_matches_cvxpy():
    cvxpy = pytest.importorskip("cvxpy")
    gramian, objective = _barrier_case()
    beta = cvxpy.Variable(2, nonneg=True)
    g_beta = gramian @ beta
    constraints = [cvxpy.log(beta[i]) + cvxpy.log(g_beta[i]) >= 0 for i in range(2)]
    problem = cvxpy.Problem(cvxpy.Minimize(objective @ beta), constraints)
    problem.solve(solver=cvxpy.ECOS)
    ours = solve_subproblem(gramian, objective, nash_point(gramian))
    assert ours is not None
    np.testing.assert_allclose(ours, beta.value, rtol=0, atol=1e-6)


# -- the bargaining condition and pinned values (no cvxpy) ------------------------------------


@pytest.mark.parametrize("num_tasks", range(2, 11))
@pytest.mark.parametrize("scale", [1e-5, 1.0, 1e5])
def test_weights_satisfy_the_nash_bargaining_condition(num_tasks, scale):
    # Well-conditioned rows (n ≫ K): every constraint is active, so α_i (J Jᵀ α)_i = 1 on the
    # *unnormalized* Gramian (the official constraint multiplies α by ‖G‖_F). torchjd's ECOS
    # misses this at scales far from 1; the solver here works in scale-free units.
    matrix = _matrix(num_tasks, 50, seed=num_tasks) * scale
    alpha = NashMTL(max_norm=0.0).weights(matrix)
    gramian = matrix @ matrix.T
    assert bool((alpha > 0).all())
    product = alpha * (gramian @ alpha)
    torch.testing.assert_close(product, torch.ones_like(product), rtol=0, atol=1e-9)


def test_torchjd_pinned_value():
    # torchjd's documented value for NashMTL(n_tasks=2) on its matrix J_base.
    matrix = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    result = NashMTL()(matrix)
    torch.testing.assert_close(result, torch.tensor([0.0542, 0.7061, 0.7061]), rtol=0, atol=1e-4)


def test_orthogonal_gradients_are_normalized_and_summed():
    """g1 = (2, 0), g2 = (0, 1): G = diag(4, 1), so α_i² ‖g_i‖² = 1 gives α = (1/2, 1).

    The unclipped update is g1/2 + g2 = (1, 1), of squared norm K = 2; max_norm=1 scales it to
    (1/√2, 1/√2).
    """
    matrix = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    unclipped = NashMTL(max_norm=0.0)
    torch.testing.assert_close(unclipped.weights(matrix), torch.tensor([0.5, 1.0]).double())
    torch.testing.assert_close(unclipped(matrix), torch.tensor([1.0, 1.0]).double())
    clipped = NashMTL()(matrix)
    torch.testing.assert_close(clipped, torch.full((2,), 1 / math.sqrt(2)).double())


def test_nash_point_of_a_diagonal_gramian():
    np.testing.assert_allclose(nash_point(np.diag([4.0, 1.0, 0.25])), [0.5, 1.0, 2.0])


def test_nash_point_missing_when_zero_is_in_the_convex_hull():
    g = np.array([1.0, -2.0, 0.5])
    opposite = np.stack([g, -3 * g])
    assert nash_point(opposite @ opposite.T) is None
    with_zero = np.stack([g, np.zeros(3)])
    assert nash_point(with_zero @ with_zero.T) is None


def test_unboundedness_test_on_hand_cases():
    # Recession cone {d ≥ 0 : Gd ≥ 0}. G = I: d = e_2 gives aᵀd = -1 for a = (1, -1).
    assert _is_unbounded(np.eye(2), np.array([1.0, -1.0]))
    assert not _is_unbounded(np.eye(2), np.array([1.0, 1.0]))
    # G = [[1, -½], [-½, 1]]: the cone is ½d1 ≤ d2 ≤ 2d1, where d1 - 0.1 d2 ≥ 0.8 d1 > 0.
    gramian = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert not _is_unbounded(gramian, np.array([1.0, -0.1]))
    assert _is_unbounded(gramian, np.array([1.0, -0.6]))


def _barrier_case() -> tuple[np.ndarray, np.ndarray]:
    """G = [[1, .9], [.9, 1]] and a = Mᵀ(1, -0.2) with M the constraint Jacobian at the Nash point.

    A negative multiplier there means the optimum leaves the second constraint inactive.
    """
    gramian = np.array([[1.0, 0.9], [0.9, 1.0]])
    nash = nash_point(gramian)
    assert nash is not None
    jacobian = np.diag(gramian @ nash) + nash[:, None] * gramian
    objective = jacobian.T @ np.array([1.0, -0.2])
    assert (objective > 0).all()
    return gramian, objective


def test_barrier_subproblem_satisfies_kkt():
    gramian, objective = _barrier_case()
    beta = solve_subproblem(gramian, objective, nash_point(gramian))
    assert beta is not None
    products = beta * (gramian @ beta)
    assert products.min() >= 1 - 1e-9
    active = products < 1 + 1e-6
    assert active.tolist() == [True, False]
    # a = Σ_active λ_i ∇(β_i (Gβ)_i) with λ ≥ 0.
    gradients = (np.diag(gramian @ beta) + beta[:, None] * gramian)[active]
    multipliers, *_ = np.linalg.lstsq(gradients.T, objective, rcond=None)
    assert multipliers.min() > 0
    np.testing.assert_allclose(gradients.T @ multipliers, objective, rtol=0, atol=1e-7)


def test_pure_function_keeps_previous_weights_without_a_solution():
    g = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    opposite = torch.stack([g, -g])
    previous = torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(nash_mtl_weights(opposite @ opposite.T, previous), previous)
    zeros = torch.zeros(2, 2, dtype=torch.float64)
    torch.testing.assert_close(nash_mtl_weights(zeros, previous), previous)


# -- state ------------------------------------------------------------------------------------


def test_update_weights_every_reuses_weights():
    method = NashMTL(max_norm=0.0, update_weights_every=3)
    first = method.weights(_matrix(3, 20, seed=0))
    for seed in (1, 2):
        torch.testing.assert_close(method.weights(_matrix(3, 20, seed=seed)), first)
    assert not torch.allclose(method.weights(_matrix(3, 20, seed=3)), first)


def test_reset_and_state_round_trip():
    matrices = [_matrix(4, 20, seed=s) for s in range(6)]
    method = NashMTL(update_weights_every=2)
    for matrix in matrices[:3]:
        method(matrix)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    resumed = NashMTL(update_weights_every=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for matrix in matrices[3:]:
        torch.testing.assert_close(resumed(matrix), method(matrix), rtol=0, atol=0)
    method.reset()
    fresh = NashMTL(update_weights_every=2)
    torch.testing.assert_close(method(matrices[0]), fresh(matrices[0]), rtol=0, atol=0)


def test_warm_start_follows_tasks_by_name():
    method = NashMTL(max_norm=0.0, update_weights_every=10)
    full = _matrix(3, 30, seed=4)
    method.weights(full, ["a", "b", "c"])
    # A task missing from a step forces a solve for the tasks present, despite the schedule.
    alpha = method.weights(full[[0, 2]], ["a", "c"])
    expected = NashMTL(max_norm=0.0).weights(full[[0, 2]])
    torch.testing.assert_close(alpha, expected)


def test_a_different_number_of_rows_forces_a_solve():
    method = NashMTL(max_norm=0.0, update_weights_every=10)
    method.weights(_matrix(3, 30, seed=5))
    alpha = method.weights(_matrix(2, 30, seed=6))
    torch.testing.assert_close(alpha, NashMTL(max_norm=0.0).weights(_matrix(2, 30, seed=6)))


# -- properties -------------------------------------------------------------------------------


def _special_matrices() -> dict[str, torch.Tensor]:
    g = _matrix(1, 5, seed=7)[0]
    return {
        "zero": torch.zeros(3, 5, dtype=torch.float64),
        "parallel": torch.stack([g, 3 * g]),
        "anti-parallel": torch.stack([g, -2 * g]),
        "zero row": torch.stack([g, torch.zeros_like(g)]),
        "tiny": _matrix(4, 6, seed=8) * 1e-15,
        "huge": _matrix(4, 6, seed=9) * 1e15,
        "one task": g[None],
        "more tasks than entries": _matrix(8, 3, seed=10),
    }


@pytest.mark.parametrize("name", list(_special_matrices()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_and_clipped(name, dtype):
    matrix = _special_matrices()[name].to(dtype)
    method = NashMTL()
    for _ in range(2):
        result = method(matrix)
        assert result.dtype == dtype and result.shape == (matrix.shape[1],)
        assert bool(torch.isfinite(result).all())
        assert float(result.norm()) <= 1.0 + 1e-5


def test_no_solution_keeps_previous_weights_like_the_official_code():
    # 0 in the convex hull (opposite gradients): the first call keeps α = 1, i.e. the sum.
    g = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)
    matrix = torch.stack([g, -2 * g])
    torch.testing.assert_close(NashMTL(max_norm=0.0)(matrix), -g)


def test_one_task_gives_its_gradient_clipped():
    # Ĝ = [[1]]: the official stopping rule ‖Ĝα − 1/α‖ < 1e-3 holds at the start α = 1.
    g = torch.tensor([[3.0, 0.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(NashMTL(max_norm=0.0)(g), g[0])
    torch.testing.assert_close(NashMTL()(g), g[0] / 5)


def test_task_permutation():
    matrix = _matrix(5, 40, seed=11)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    weights = NashMTL(max_norm=0.0).weights(matrix)
    permuted = NashMTL(max_norm=0.0).weights(matrix[permutation])
    torch.testing.assert_close(permuted, weights[permutation], rtol=1e-10, atol=0)


def test_float32_close_to_float64():
    matrix = _matrix(6, 1000, seed=12)
    expected = NashMTL()(matrix)
    result = NashMTL()(matrix.float())
    torch.testing.assert_close(result, expected.float(), rtol=0, atol=1e-5)


def test_registry_diagnostics_and_repr():
    method = taskprio.methods.create("nash_mtl", max_norm=2.0)
    assert isinstance(method, NashMTL)
    assert repr(method) == "NashMTL(max_norm=2.0, update_weights_every=1, optim_niter=20)"
    method(_matrix(3, 10, seed=0))
    assert len(method.diagnostics()["task_weights"]) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_norm": -1.0}, "`max_norm` must be finite and non-negative"),
        ({"max_norm": math.inf}, "`max_norm` must be finite and non-negative"),
        ({"update_weights_every": 0}, "`update_weights_every` must be a positive integer"),
        ({"optim_niter": 1.5}, "`optim_niter` must be a positive integer"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        NashMTL(**options)


def test_needs_no_warning_filter():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NashMTL()(_matrix(3, 10, seed=1))
