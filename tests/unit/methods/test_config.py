"""ConFIG: torchjd's implementation, checked against the defining equations."""

from __future__ import annotations

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
from _inputs import J_BASE, normal, parallel, random_matrices
from torch import Tensor
from torch.testing import assert_close
from torchjd.aggregation import ConFIG as TorchJDConFIG

from taskprio.methods import ConFIG


def reference_config(matrix: Tensor, preference: Tensor) -> Tensor:
    """Equation 2: û ∝ the minimum-norm solution of U x = p (U the unit rows), times Σᵢ gᵢᵀû."""
    units = matrix / matrix.norm(dim=1, keepdim=True)
    solution = torch.linalg.lstsq(units, preference.unsqueeze(1), driver="gelsd").solution[:, 0]
    direction = solution / solution.norm()
    return (matrix @ direction).sum() * direction


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd(matrix):
    # Through the Gramian the error grows with cond(U)²: 1.3e-13 observed on the square 7×7.
    assert_close(ConFIG()(matrix), TorchJDConFIG()(matrix), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "matrix", random_matrices()[::3], ids=lambda m: f"{m.shape[0]}x{m.shape[1]}"
)
def test_matches_float64_reference(matrix):
    ones = torch.ones(matrix.shape[0], dtype=torch.float64)
    assert_close(ConFIG()(matrix), reference_config(matrix, ones), rtol=1e-10, atol=1e-10)
    preference = torch.arange(1, matrix.shape[0] + 1, dtype=torch.float64)
    expected = reference_config(matrix, preference)
    assert_close(ConFIG(pref_vector=preference.tolist())(matrix), expected, rtol=1e-10, atol=1e-10)


def test_equal_cosines_when_reachable():
    matrix = normal(4, 10, 1000)  # independent rows: U x = 1 has an exact solution
    direction = ConFIG()(matrix)
    cosines = matrix @ direction / (matrix.norm(dim=1) * direction.norm())
    assert_close(cosines, cosines[0].expand_as(cosines), rtol=1e-12, atol=1e-12)
    assert bool((cosines > 0).all())


def test_pinned_value_and_parallel_rows_give_the_sum():
    assert_close(ConFIG()(J_BASE), J_BASE.new_tensor([0.1588, 2.0706, 2.0706]), atol=1e-4, rtol=0)
    matrix = parallel(6, 1001)
    assert_close(ConFIG()(matrix), matrix.sum(dim=0), rtol=1e-12, atol=1e-12)


def test_properties():
    assert_finite_on_edge_cases(ConFIG)
    assert_runs_in_step(ConFIG)
    assert_zero_on_zero(ConFIG)
    assert_single_task(ConFIG)
    assert_permutation_invariant(ConFIG, rtol=1e-11)
    assert_scale_equivariant(ConFIG)
    assert repr(ConFIG(pref_vector=[1, 2])) == "ConFIG(pref_vector=(1.0, 2.0))"


def test_zero_row_has_no_say_and_weights_are_recorded():
    # A zero row is a zero row of U: it changes neither the direction nor the length.
    matrix = normal(3, 8, 1003)
    with_zero = torch.cat([matrix[:1], torch.zeros(1, 8, dtype=matrix.dtype), matrix[1:]])
    method = ConFIG()
    assert_close(method(with_zero), ConFIG()(matrix), rtol=1e-12, atol=1e-12)
    weights = method.diagnostics()["task_weights"]
    assert len(weights) == 4 and weights[1] == 0.0
    assert_close(TorchJDConFIG()(with_zero), ConFIG()(matrix), rtol=1e-12, atol=1e-12)
