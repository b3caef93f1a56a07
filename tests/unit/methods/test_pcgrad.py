"""PCGrad: sum of projected rows, torchjd's draws from the method's own generator."""

from __future__ import annotations

import pytest
import torch
from _asserts import (
    assert_finite_on_edge_cases,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_state_round_trip,
    assert_sum_without_conflict,
    assert_zero_on_zero,
)
from _inputs import J_BASE, normal, random_matrices
from torch import Tensor
from torch.testing import assert_close
from torchjd.aggregation import PCGrad as TorchJDPCGrad

from taskprio.methods import PCGrad, UPGrad
from taskprio.methods._pcgrad import pcgrad_weights


def reference_pcgrad(matrix: Tensor, order: Tensor) -> Tensor:
    """Algorithm 1 of the paper on the vectors themselves, in float64, with explicit loops."""
    projected = []
    for i in range(matrix.shape[0]):
        g_i = matrix[i].clone()
        for j in order[i].tolist():
            if j == i:
                continue
            g_j = matrix[j]
            inner = float(g_i @ g_j)
            if inner < 0.0:
                g_i = g_i - inner / float(g_j @ g_j) * g_j
        projected.append(g_i)
    return torch.stack(projected).sum(dim=0)  # sum, not mean


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd_with_same_seed(matrix):
    # One randperm(K) per task, as torchjd draws from the global generator.
    torch.manual_seed(5)
    expected = TorchJDPCGrad()(matrix)
    assert_close(PCGrad(seed=5)(matrix), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "matrix", random_matrices()[::4], ids=lambda m: f"{m.shape[0]}x{m.shape[1]}"
)
def test_matches_float64_reference(matrix):
    num_tasks = matrix.shape[0]
    generator = torch.Generator().manual_seed(3)
    order = torch.stack([torch.randperm(num_tasks, generator=generator) for _ in range(num_tasks)])
    weights = pcgrad_weights(matrix @ matrix.T, order)
    assert_close(weights @ matrix, reference_pcgrad(matrix, order), rtol=1e-12, atol=1e-12)
    assert_close(PCGrad(seed=3)(matrix), reference_pcgrad(matrix, order), rtol=1e-12, atol=1e-12)


def test_pinned_value_and_sum_convention():
    method = PCGrad()
    assert_close(method(J_BASE), J_BASE.new_tensor([0.5848, 3.8012, 3.8012]), atol=1e-4, rtol=0)
    # Sum: the weights (2.2222, 1.5789) add to 3.80, twice the mean's scale would be 1.9.
    weights = torch.tensor(method.diagnostics()["task_weights"], dtype=torch.float64)
    assert_close(weights, torch.tensor([1 + 22 / 18, 1 + 22 / 38], dtype=torch.float64))


def test_two_rows_equal_upgrad_with_sum_preference():
    # Projecting onto the dual cone of two rows is PCGrad's projection (torchjd's equivalence).
    for seed in range(10):
        matrix = normal(2, 3 + seed, 700 + seed)
        upgrad = UPGrad(pref_vector=[1.0, 1.0], reg_eps=0.0, norm_eps=0.0)
        assert_close(PCGrad()(matrix), upgrad(matrix), rtol=1e-10, atol=1e-12)


def test_properties():
    assert_finite_on_edge_cases(PCGrad)
    assert_runs_in_step(PCGrad)
    assert_zero_on_zero(PCGrad)
    assert_single_task(PCGrad)
    assert_sum_without_conflict(PCGrad)
    assert_scale_equivariant(PCGrad)


def test_orders_come_from_the_seed_not_the_global_generator():
    matrix = normal(5, 8, 61)
    torch.manual_seed(0)
    first = PCGrad(seed=11)(matrix)
    torch.manual_seed(1)
    assert torch.equal(PCGrad(seed=11)(matrix), first)


def test_state_round_trip():
    matrices = [normal(4, 6, 70 + i) for i in range(4)]
    assert_state_round_trip(lambda: PCGrad(seed=2), matrices)


def test_seed_is_validated():
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        PCGrad(seed=-1)
    assert repr(PCGrad(seed=3)) == "PCGrad(seed=3)"
