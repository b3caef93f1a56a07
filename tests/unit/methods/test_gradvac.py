"""GradVac: torchjd's weight-space form, EMA targets kept per task pair in the state."""

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
from torchjd.aggregation import GradVac as TorchJDGradVac

from taskprio.methods import GradVac
from taskprio.methods._pcgrad import pcgrad_weights


def reference_gradvac(matrix: Tensor, targets: Tensor, orders: list[list[int]], beta: float):
    """GradVac on the vectors themselves (eps = 0), in float64; returns (sum, new targets)."""
    targets = targets.clone()
    rows = []
    for i in range(matrix.shape[0]):
        g_i = matrix[i].clone()
        for j in orders[i]:
            g_j = matrix[j]
            cosine = float(g_i @ g_j) / (float(g_i.norm()) * float(g_j.norm()))
            target = float(targets[i, j])
            if cosine < target:
                step = float(g_i.norm()) * (
                    target * (1 - cosine**2) ** 0.5 - cosine * (1 - target**2) ** 0.5
                )
                g_i = g_i + step / (float(g_j.norm()) * (1 - target**2) ** 0.5) * g_j
            targets[i, j] = (1 - beta) * target + beta * cosine
        rows.append(g_i)
    return torch.stack(rows).sum(dim=0), targets


def _orders(seed: int, num_tasks: int, calls: int) -> list[list[list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(calls):
        orders = []
        for i in range(num_tasks):
            others = [j for j in range(num_tasks) if j != i]
            orders.append([others[k] for k in torch.randperm(num_tasks - 1, generator=generator)])
        result.append(orders)
    return result


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd_over_calls(matrix):
    # eps = 0 for both: ours applies eps to the trace-normalized Gramian, torchjd's to G.
    ours, theirs = GradVac(seed=9, eps=0.0), TorchJDGradVac(eps=0.0)
    torch.manual_seed(9)
    for call in range(3):
        expected = theirs(matrix + 0.1 * call)
        assert_close(ours(matrix + 0.1 * call), expected, rtol=1e-10, atol=1e-10)


def test_matches_float64_reference_over_calls():
    matrices = [normal(4, 12, 110 + i) for i in range(4)]
    method = GradVac(seed=2, beta=0.3, eps=0.0)
    targets = torch.zeros(4, 4, dtype=torch.float64)
    for matrix, orders in zip(matrices, _orders(2, 4, len(matrices)), strict=True):
        expected, targets = reference_gradvac(matrix, targets, orders, beta=0.3)
        assert_close(method(matrix), expected, rtol=1e-12, atol=1e-12)
    current = method.targets()
    for i in range(4):
        for j in range(4):
            if i != j:
                assert current[(str(i), str(j))] == pytest.approx(float(targets[i, j]), abs=1e-13)


def test_first_call_is_pcgrad():
    # Targets start at 0: a correction happens iff the cosine is negative, and it is PCGrad's.
    matrix = normal(4, 9, 120)
    orders = _orders(1, 4, 1)[0]
    pcgrad_order = torch.tensor([[*others, i] for i, others in enumerate(orders)])
    expected = pcgrad_weights(matrix @ matrix.T, pcgrad_order) @ matrix
    assert_close(GradVac(seed=1, eps=0.0)(matrix), expected, rtol=1e-12, atol=1e-12)
    assert_close(
        GradVac(eps=0.0)(J_BASE), J_BASE.new_tensor([0.5848, 3.8012, 3.8012]), atol=1e-4, rtol=0
    )


def test_targets_follow_task_names():
    a, b, c = normal(3, 8, 130)
    method = GradVac(seed=0)
    method(torch.stack([a, b, c]), ["x", "y", "z"])
    before = method.targets()
    method(torch.stack([c, a]), ["z", "x"])  # "y" has no loss this step
    after = method.targets()
    assert after[("x", "y")] == before[("x", "y")] and after[("y", "z")] == before[("y", "z")]
    assert after[("x", "z")] != before[("x", "z")]
    method.reset()
    assert method.targets() == {}


def test_properties():
    assert_finite_on_edge_cases(GradVac)
    assert_runs_in_step(GradVac)
    assert_zero_on_zero(GradVac)
    assert_single_task(GradVac)
    assert_sum_without_conflict(GradVac)  # first call: targets 0, no negative cosine
    assert_scale_equivariant(GradVac)  # eps acts on the normalized Gramian


def test_state_round_trip():
    matrices = [normal(3, 10, 140 + i) for i in range(4)]
    assert_state_round_trip(lambda: GradVac(seed=3), matrices)


def test_options_are_validated():
    with pytest.raises(ValueError, match="`beta` must be a number in"):
        GradVac(beta=2.0)
    with pytest.raises(ValueError, match="`eps` must be a non-negative"):
        GradVac(eps=-1.0)
    assert repr(GradVac()) == "GradVac(beta=0.5, eps=1e-08, seed=0)"
