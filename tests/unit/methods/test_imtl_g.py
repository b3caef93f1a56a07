"""IMTL-G: torchjd's pseudo-inverse form on the trace-normalized Gramian."""

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
from _inputs import J_BASE, normal, random_matrices
from torch import Tensor
from torch.testing import assert_close
from torchjd.aggregation import IMTLG as TorchJDIMTLG

from taskprio.methods import IMTLG


def reference_imtl_g(matrix: Tensor) -> Tensor:
    """The paper's closed form (as Nash-MTL's code), for linearly independent rows.

    D = g₁ − gⱼ and U = u₁ − uⱼ (j ≥ 2, u the unit rows); α₂.. = g₁Uᵀ(DUᵀ)⁻¹, α₁ = 1 − Σα₂..
    """
    units = matrix / matrix.norm(dim=1, keepdim=True)
    differences = matrix[0] - matrix[1:]
    unit_differences = units[0] - units[1:]
    rest = matrix[0] @ unit_differences.T @ torch.linalg.inv(differences @ unit_differences.T)
    return torch.cat([(1 - rest.sum()).reshape(1), rest]) @ matrix


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd(matrix):
    # Same formula; only the normalization of the Gramian differs (rounding).
    assert_close(IMTLG()(matrix), TorchJDIMTLG()(matrix), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8])
def test_matches_closed_form(num_tasks):
    matrix = normal(num_tasks, 20, 600 + num_tasks)
    assert_close(IMTLG()(matrix), reference_imtl_g(matrix), rtol=1e-9, atol=1e-9)


def test_equal_projections_on_unit_rows():
    for matrix in random_matrices():
        if int(torch.linalg.matrix_rank(matrix)) < matrix.shape[0]:
            continue  # dependent rows: equal projections are not always reachable
        direction = IMTLG()(matrix)
        projections = matrix @ direction / matrix.norm(dim=1)
        assert_close(projections, projections[0].expand_as(projections), rtol=1e-8, atol=1e-8)


def test_pinned_value_and_weights_sum_to_one():
    method = IMTLG()
    assert_close(method(J_BASE), J_BASE.new_tensor([0.0767, 1.0, 1.0]), atol=1e-4, rtol=0)
    assert sum(method.diagnostics()["task_weights"]) == pytest.approx(1.0, abs=1e-12)


def test_scale_where_torchjd_returns_zero():
    # torchjd's |Σw| < 1e-12 cutoff is absolute: gradients scaled by 1e15 give 0 there.
    assert torch.equal(TorchJDIMTLG()(J_BASE * 1e15), torch.zeros(3, dtype=torch.float64))
    assert_close(IMTLG()(J_BASE * 1e15) / 1e15, IMTLG()(J_BASE))


def test_properties():
    assert_finite_on_edge_cases(IMTLG)
    assert_runs_in_step(IMTLG)
    assert_zero_on_zero(IMTLG)
    assert_single_task(IMTLG)
    assert_permutation_invariant(IMTLG, rtol=1e-9)
    assert_scale_equivariant(IMTLG)
