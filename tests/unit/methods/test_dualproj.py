"""DualProj: the mean projected onto the dual cone, with our exact projection."""

from __future__ import annotations

import pytest
import torch
from _asserts import (
    OurProjector,
    assert_finite_on_edge_cases,
    assert_permutation_invariant,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_zero_on_zero,
    normalized,
    reference_projection,
)
from _inputs import J_BASE, normal, random_matrices
from torch.testing import assert_close
from torchjd.aggregation import DualProj as TorchJDDualProj

from taskprio.methods import DualProj


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd_composition(matrix):
    expected = TorchJDDualProj(projector=OurProjector())(matrix)
    assert_close(DualProj()(matrix), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_matches_exhaustive_reference(num_tasks):
    for seed in range(3):
        matrix = normal(num_tasks, [3, 8, 30][seed], 900 + 10 * num_tasks + seed)
        lower = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        expected = reference_projection(lower, normalized(matrix @ matrix.T)) @ matrix
        assert_close(DualProj()(matrix), expected, rtol=1e-12, atol=1e-13)


def test_closest_to_the_mean_among_non_conflicting():
    # Unregularized, the result is the Euclidean projection of the mean onto the dual cone:
    # it conflicts with no task, and the mean minus it is orthogonal to it.
    for matrix in random_matrices():
        direction = DualProj(reg_eps=0.0)(matrix)
        scale = float(matrix.norm()) ** 2
        assert float((matrix @ direction).min()) >= -1e-12 * scale
        assert abs(float((matrix.mean(dim=0) - direction) @ direction)) <= 1e-12 * scale


def test_matches_torchjd_when_quadprog_is_installed():
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    for matrix in random_matrices():
        assert_close(DualProj()(matrix), TorchJDDualProj()(matrix), rtol=1e-8, atol=1e-10)


def test_pinned_value():
    assert_close(DualProj()(J_BASE), J_BASE.new_tensor([0.5563, 1.1109, 1.1109]), atol=1e-4, rtol=0)


def test_no_conflict_gives_the_mean():
    matrix = normal(5, 9, 950).abs()
    assert_close(DualProj()(matrix), matrix.mean(dim=0), rtol=1e-12, atol=1e-12)


def test_properties():
    assert_finite_on_edge_cases(DualProj)
    assert_runs_in_step(DualProj)
    assert_zero_on_zero(DualProj)
    assert_single_task(DualProj)
    assert_permutation_invariant(DualProj, rtol=1e-11)
    assert_scale_equivariant(DualProj, scales=(1e15,))  # norm_eps is absolute, as torchjd
    assert_scale_equivariant(lambda: DualProj(norm_eps=0.0), scales=(1e-15, 1e15))
    assert repr(DualProj()) == "DualProj(pref_vector=None, norm_eps=0.0001, reg_eps=0.0001)"
