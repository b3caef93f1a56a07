"""GradDrop on the parameter-gradient matrix (torchjd's form), with the method's own draws."""

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
from _inputs import normal, random_matrices
from torch import Tensor
from torch.testing import assert_close
from torchjd.aggregation import GradDrop as TorchJDGradDrop

from taskprio.methods import GradDrop
from taskprio.methods._graddrop import graddrop


def reference_graddrop(matrix: Tensor, uniform: Tensor, leak: list[float]) -> Tensor:
    """Lines 10–15 of Algorithm 1 (f the identity), entry by entry, in float64."""
    num_tasks, n = matrix.shape
    result = torch.zeros(n, dtype=torch.float64)
    for p in range(n):
        column = [float(matrix[i, p]) for i in range(num_tasks)]
        magnitude = sum(abs(x) for x in column)
        purity = 0.5 * (1.0 + sum(column) / magnitude) if magnitude > 0 else 0.5
        for i, x in enumerate(column):
            keep = (purity > uniform[p] and x > 0) or (purity < uniform[p] and x < 0)
            result[p] += (leak[i] + (1.0 - leak[i]) * float(keep)) * x
    return result


def _draws(seed: int, n: int) -> Tensor:
    """The U that GradDrop(seed=seed) draws in its first call on CPU float64 gradients."""
    generator = torch.Generator().manual_seed(seed)
    device_seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    return torch.rand(n, generator=torch.Generator().manual_seed(device_seed), dtype=torch.float64)


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd_with_same_draws(matrix):
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(int(torch.randint(0, 2**63 - 1, (), generator=generator)))
    expected = TorchJDGradDrop()(matrix)
    assert_close(GradDrop(seed=4)(matrix), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("leak", [[0.0, 0.0, 0.0], [0.2, 0.5, 1.0]])
def test_matches_float64_reference(leak):
    matrix = normal(3, 25, 81)
    uniform = _draws(6, 25)
    expected = reference_graddrop(matrix, uniform, leak)
    assert_close(
        graddrop(matrix, uniform, torch.tensor(leak, dtype=torch.float64)),
        expected,
        rtol=1e-14,
        atol=1e-14,
    )
    assert_close(GradDrop(seed=6, leak=leak)(matrix), expected, rtol=1e-14, atol=1e-14)


def test_full_leak_is_the_sum():
    matrix = normal(4, 30, 82)
    assert_close(GradDrop(leak=1.0)(matrix), matrix.sum(dim=0))


def test_properties():
    assert_finite_on_edge_cases(GradDrop)
    assert_runs_in_step(GradDrop)
    assert_zero_on_zero(GradDrop)
    assert_single_task(GradDrop)  # P ∈ {0, 1}: every component is kept
    assert_sum_without_conflict(GradDrop)
    assert_scale_equivariant(GradDrop)  # same seed, same draws


def test_each_entry_keeps_one_sign():
    matrix = normal(5, 200, 83)
    result = GradDrop(seed=1)(matrix)
    positive = matrix.clamp_min(0).sum(dim=0)
    negative = matrix.clamp_max(0).sum(dim=0)
    # To rounding: the negative parts are summed as the total minus the positive ones.
    tolerance = 1e-14 * matrix.abs().sum(dim=0)
    is_positive = (result - positive).abs() <= tolerance
    is_negative = (result - negative).abs() <= tolerance
    assert bool((is_positive | is_negative).all())
    assert bool(is_positive.any()) and bool(is_negative.any())


def test_state_round_trip():
    matrices = [normal(3, 10, 90 + i) for i in range(3)]
    assert_state_round_trip(lambda: GradDrop(seed=8), matrices)


def test_options_are_validated():
    with pytest.raises(ValueError, match="`leak` must be a number in"):
        GradDrop(leak=1.5)
    with pytest.raises(ValueError, match="one per task"):
        GradDrop(leak=[0.1, 0.2])(normal(3, 4, 1))
    assert repr(GradDrop(leak=[0.1, 0.2])) == "GradDrop(leak=(0.1, 0.2), seed=0)"


@pytest.mark.parametrize("leak", [[0.0, 0.0, 0.0], [0.2, 0.5, 1.0]])
def test_column_blocks_equal_one_pass(leak, monkeypatch):
    # 70 001 columns: two blocks of 65 536 columns, the second partial.
    import taskprio.methods._graddrop as module

    matrix = normal(3, 70_001, 84)
    uniform = _draws(7, 70_001)
    leak_tensor = torch.tensor(leak, dtype=torch.float64)
    blocks = graddrop(matrix, uniform, leak_tensor)
    monkeypatch.setattr(module, "_COLUMNS_PER_PASS", 1 << 20)
    assert_close(blocks, graddrop(matrix, uniform, leak_tensor), rtol=1e-14, atol=1e-14)
    # And the entries of the second block against the reference, on a few columns.
    columns = slice(69_990, 70_001)
    expected = reference_graddrop(matrix[:, columns], uniform[columns], leak)
    assert_close(blocks[columns], expected, rtol=1e-14, atol=1e-14)
