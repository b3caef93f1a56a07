"""Aligned-MTL: torchjd's weighting (mean of the aligned rows)."""

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
from torchjd.aggregation import AlignedMTL as TorchJDAlignedMTL

from taskprio.methods import AlignedMTL, AlignedMTLUB, create


def reference_aligned(matrix: Tensor, scale_mode: str = "min") -> Tensor:
    """From the SVD J = U S Vᵀ (full row rank): BJ = √σ U Vᵀ, the aligned rows; their mean."""
    left, singular, right_t = torch.linalg.svd(matrix, full_matrices=False)
    eigenvalues = singular**2
    sigma = {"min": eigenvalues.min(), "median": eigenvalues.median(), "rmse": eigenvalues.mean()}
    aligned = sigma[scale_mode].sqrt() * left @ right_t  # [K, n], orthogonal rows of norm √σ
    return aligned.mean(dim=0)


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd(matrix):
    assert_close(AlignedMTL()(matrix), TorchJDAlignedMTL()(matrix), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_matches_svd_reference(scale_mode):
    for num_tasks in (2, 3, 6):
        matrix = normal(num_tasks, 15, 700 + num_tasks)
        expected = reference_aligned(matrix, scale_mode)
        assert_close(AlignedMTL(scale_mode=scale_mode)(matrix), expected, rtol=1e-10, atol=1e-10)


def test_pinned_value_and_sum_convention():
    assert_close(
        AlignedMTL()(J_BASE), J_BASE.new_tensor([0.2133, 0.9673, 0.9673]), atol=1e-4, rtol=0
    )
    # The official code and LibMTL sum the aligned rows: pref_vector = ones.
    matrix = normal(3, 8, 710)
    assert_close(AlignedMTL(pref_vector=[1.0] * 3)(matrix), 3 * AlignedMTL()(matrix))


def test_ub_weights_are_aligned_mtl_weights_of_representation_gradients():
    matrix = normal(3, 12, 720)  # stands for the [K, B·d] representation gradients
    expected = reference_aligned(matrix)
    weights = AlignedMTLUB().weights(matrix)
    assert_close(weights @ matrix, expected, rtol=1e-10, atol=1e-10)
    assert AlignedMTLUB.uses_representation and not AlignedMTL.uses_representation


def test_properties():
    assert_finite_on_edge_cases(AlignedMTL)
    assert_runs_in_step(AlignedMTL)
    assert_runs_in_step(AlignedMTLUB)
    assert_zero_on_zero(AlignedMTL)
    assert_single_task(AlignedMTL)  # σ = ‖g‖²: B = 1
    assert_permutation_invariant(AlignedMTL, rtol=1e-10)
    assert_scale_equivariant(AlignedMTL)


def test_options_are_validated():
    with pytest.raises(ValueError, match="`scale_mode` must be"):
        AlignedMTL(scale_mode="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one weight per task"):
        AlignedMTL(pref_vector=[1.0, 2.0])(normal(3, 4, 1))
    assert isinstance(create("aligned_mtl_ub"), AlignedMTLUB)
    assert repr(AlignedMTL()) == "AlignedMTL(pref_vector=None, scale_mode='min')"
    assert torch.is_tensor(AlignedMTL().weights(normal(2, 3, 2)))
