"""UPGrad: exact dual-cone projections (our active-set solver) in torchjd's composition."""

from __future__ import annotations

import pytest
import torch
from _asserts import (
    OurProjector,
    assert_finite_on_edge_cases,
    assert_kkt,
    assert_permutation_invariant,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_zero_on_zero,
    normalized,
    reference_projection,
)
from _inputs import J_BASE, normal, random_matrices
from torch import Tensor
from torch.testing import assert_close
from torchjd.aggregation import DualProj as TorchJDDualProj
from torchjd.aggregation import UPGrad as TorchJDUPGrad

from taskprio.methods import DualProj, UPGrad
from taskprio.methods._upgrad import (
    _primal_dual_active_set,
    _solve_box_qp,
    _tolerances,
    project_weights,
    solve_box_qps,
)


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd_composition(matrix):
    expected = TorchJDUPGrad(projector=OurProjector())(matrix)
    assert_close(UPGrad()(matrix), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 6])
def test_projections_match_exhaustive_reference(num_tasks):
    for seed in range(3):
        matrix = normal(num_tasks, [3, 8, 30][seed], 800 + 10 * num_tasks + seed)
        gramian = matrix @ matrix.T
        for i in range(num_tasks):
            lower = torch.zeros(num_tasks, dtype=torch.float64)
            lower[i] = 1.0 / num_tasks
            expected = reference_projection(lower, normalized(gramian))
            assert_close(project_weights(lower, gramian), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_projections_satisfy_kkt(matrix):
    num_tasks = matrix.shape[0]
    gramian = matrix @ matrix.T
    lowers = torch.eye(num_tasks, dtype=torch.float64) / num_tasks
    for lower, weights in zip(lowers, project_weights(lowers, gramian), strict=True):
        assert_kkt(weights, lower, normalized(gramian))
    # Unregularized too (the solver falls back to least squares on singular blocks).
    for lower, weights in zip(lowers, project_weights(lowers, gramian, reg_eps=0.0), strict=True):
        assert_kkt(weights, lower, normalized(gramian, reg_eps=0.0))


def test_result_conflicts_with_no_task():
    for matrix in random_matrices():
        direction = UPGrad(reg_eps=0.0)(matrix)
        assert float((matrix @ direction).min()) >= -1e-12 * float(matrix.norm()) ** 2


def test_matches_torchjd_when_quadprog_is_installed():
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    for matrix in random_matrices():
        assert_close(UPGrad()(matrix), TorchJDUPGrad()(matrix), rtol=1e-8, atol=1e-10)


def test_pinned_value():
    method = UPGrad()
    assert_close(method(J_BASE), J_BASE.new_tensor([0.2929, 1.9004, 1.9004]), atol=1e-4, rtol=0)
    weights = torch.tensor(method.diagnostics()["task_weights"], dtype=torch.float64)
    assert_close(weights, torch.tensor([1.1109, 0.7894], dtype=torch.float64), atol=1e-4, rtol=0)


def test_properties():
    assert_finite_on_edge_cases(UPGrad)
    assert_runs_in_step(UPGrad)
    assert_zero_on_zero(UPGrad)
    assert_single_task(UPGrad)
    assert_permutation_invariant(UPGrad, rtol=1e-11)
    # torchjd's norm_eps is absolute: at 1e-15 the Gramian counts as zero (the mean).
    assert_scale_equivariant(UPGrad, scales=(1e15,))
    assert_scale_equivariant(lambda: UPGrad(norm_eps=0.0), scales=(1e-15, 1e15))


def test_no_conflict_gives_the_mean():
    for num_tasks, seed in ((2, 41), (4, 42), (7, 43)):
        matrix = normal(num_tasks, 9, seed).abs()
        assert_close(UPGrad()(matrix), matrix.mean(dim=0), rtol=1e-12, atol=1e-12)


def test_tiny_gradients_give_the_mean():
    # The convention inherited from torchjd: ‖J‖²_F < norm_eps → no projection.
    matrix = J_BASE * 1e-3
    assert_close(UPGrad()(matrix), matrix.mean(dim=0))
    assert not torch.allclose(UPGrad(norm_eps=0.0)(matrix), matrix.mean(dim=0))


def test_options_are_validated():
    with pytest.raises(ValueError, match="`reg_eps` must be a non-negative number"):
        UPGrad(reg_eps=-1.0)
    with pytest.raises(ValueError, match="`pref_vector` must be a non-empty sequence"):
        UPGrad(pref_vector=[])
    assert repr(UPGrad()) == "UPGrad(pref_vector=None, norm_eps=0.0001, reg_eps=0.0001)"


# -- The solvers: batched primal-dual active set, sequential fallback -------------------------


def box_problem(seed: int, num_tasks: int) -> tuple[Tensor, Tensor]:
    """A regularized, trace-normalized G̃ [K, K] and K random bounds u [K, K] (any signs)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(num_tasks, 6, generator=generator, dtype=torch.float64)
    lower = torch.randn(num_tasks, num_tasks, generator=generator, dtype=torch.float64)
    return normalized(matrix @ matrix.T), lower


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 6])
def test_batched_solver_matches_exhaustive_reference(num_tasks):
    for seed in range(4):
        gramian, lowers = box_problem(seed, num_tasks)
        _, is_settled = _primal_dual_active_set(
            gramian.numpy(), lowers.numpy(), _tolerances(lowers.numpy())
        )
        assert bool(is_settled.all())  # these settle: the batched path is what is checked
        solved = torch.from_numpy(solve_box_qps(gramian.numpy(), lowers.numpy(), is_definite=True))
        for lower, weights in zip(lowers, solved, strict=True):
            assert_close(weights, reference_projection(lower, gramian), rtol=1e-12, atol=1e-13)
            assert_kkt(weights, lower, gramian)


def test_unsettled_problem_falls_back_to_the_sequential_solver():
    # Seed 125, K = 4: the primal-dual iterations cycle on one of the four bounds.
    gramian, lowers = box_problem(125, 4)
    _, is_settled = _primal_dual_active_set(
        gramian.numpy(), lowers.numpy(), _tolerances(lowers.numpy())
    )
    assert int((~is_settled).sum()) == 1
    solved = torch.from_numpy(solve_box_qps(gramian.numpy(), lowers.numpy(), is_definite=True))
    for lower, weights in zip(lowers, solved, strict=True):
        assert_close(weights, reference_projection(lower, gramian), rtol=1e-12, atol=1e-13)
        sequential = _solve_box_qp(gramian.numpy(), lower.numpy(), is_definite=True)
        assert_close(weights, torch.from_numpy(sequential), rtol=1e-12, atol=1e-13)


def training_like(num_tasks: int, seed: int) -> Tensor:
    """[K, 2000] rows of unequal norms sharing a common component, as gradients of related
    tasks: some pairs conflict, others agree (about half of the pairs for K = 10)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(2000, generator=generator, dtype=torch.float64)
    rows = torch.randn(num_tasks, 2000, generator=generator, dtype=torch.float64)
    scales = torch.rand(num_tasks, 1, generator=generator, dtype=torch.float64) * 3
    return rows * scales + 0.1 * common


@pytest.mark.parametrize("num_tasks", range(2, 11))
def test_matches_torchjd_quadprog_on_training_like_jacobians(num_tasks):
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    for seed in range(3):
        matrix = training_like(num_tasks, 40 * num_tasks + seed)
        # quadprog is exact too: 5e-16 relative observed.
        assert_close(UPGrad()(matrix), TorchJDUPGrad()(matrix), rtol=1e-8, atol=1e-10)
        assert_close(DualProj()(matrix), TorchJDDualProj()(matrix), rtol=1e-8, atol=1e-10)
