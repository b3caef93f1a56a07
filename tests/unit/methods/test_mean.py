"""Mean: 1/K weights, torchjd's Mean."""

from __future__ import annotations

import pytest
from _asserts import (
    assert_finite_on_edge_cases,
    assert_permutation_invariant,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_zero_on_zero,
)
from _inputs import J_BASE, random_matrices
from torch.testing import assert_close
from torchjd.aggregation import Mean as TorchJDMean

from taskprio.methods import Mean, create


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd(matrix):
    assert_close(Mean()(matrix), TorchJDMean()(matrix), rtol=1e-15, atol=1e-15)


def test_pinned_value():
    method = Mean()
    assert_close(method(J_BASE), J_BASE.new_tensor([1.0, 1.0, 1.0]))
    assert method.diagnostics() == {"task_weights": [0.5, 0.5]}


def test_properties():
    assert_finite_on_edge_cases(Mean)
    assert_runs_in_step(Mean)
    assert_zero_on_zero(Mean)
    assert_single_task(Mean)
    assert_permutation_invariant(Mean)
    assert_scale_equivariant(Mean)


def test_mean_is_sum_over_k():
    matrix = random_matrices()[5]
    assert_close(Mean()(matrix), matrix.sum(dim=0) / matrix.shape[0])


def test_registry_and_repr():
    assert isinstance(create("mean"), Mean)
    assert repr(Mean()) == "Mean()"
