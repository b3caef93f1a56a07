"""The Gramian: its fast product, and one Gramian per call shared by the method and the step."""

from __future__ import annotations

import pytest
import torch
from _inputs import J_BASE, normal
from torch import nn
from torch.testing import assert_close

import taskprio
from taskprio.methods import create, gramian
from taskprio.methods._mgda import mgda_weights
from taskprio.optim import conflict_statistics

# Methods whose weights come from the Gramian alone, and methods that need none.
GRAMIAN_METHODS = [
    "aligned_mtl",
    "cagrad",
    "config",
    "dualproj",
    "gradvac",
    "imtl_g",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "upgrad",
    "wpcgrad",
]
ROW_METHODS = ["graddrop", "mean"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [7, 70_001])
def test_equals_the_float64_product(size, threads, monkeypatch):
    # 70 001 columns on two threads: the split product (8 blocks and a remainder of 1).
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    matrix = normal(5, size, 1)
    for dtype, tolerance in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        result = gramian(matrix.to(dtype))
        assert result.dtype == dtype
        assert torch.equal(result, result.T)
        expected = matrix @ matrix.T
        assert_close(result.double(), expected, rtol=tolerance, atol=tolerance * size)


def test_small_inputs_give_the_plain_product_bit_for_bit():
    # Below the split size: exactly J Jᵀ (made symmetric), as the methods computed before.
    matrix = normal(4, 40, 2)
    product = matrix @ matrix.T
    assert torch.equal(gramian(matrix), (product + product.T) / 2)


def test_half_precision_and_overflow():
    matrix = normal(3, 6, 3)
    # float16 would overflow at 65504: the product is formed in float32.
    result = gramian((matrix * 300.0).half())
    assert result.dtype == torch.float32
    assert bool(result.isfinite().all())
    assert_close(
        result.double(),
        (matrix * 300.0).half().double() @ (matrix * 300.0).half().double().T,
        rtol=1e-6,
        atol=0,
    )
    # Entries around 1e20 overflow the float32 product: rescaled, returned in float64.
    huge = (matrix * 1e20).float()
    result = gramian(huge)
    assert result.dtype == torch.float64
    expected = huge.double() @ huge.double().T
    assert_close(result, expected, rtol=1e-6, atol=0)


def test_rejects_a_non_matrix():
    with pytest.raises(ValueError, match=r"must be 2-D \[K, n\]"):
        gramian(torch.ones(3))


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
def test_method_forms_one_gramian_per_call(name, monkeypatch):
    import taskprio.methods._base as base

    calls = []

    def counting(matrix):
        calls.append(matrix)
        return gramian(matrix)

    monkeypatch.setattr(base, "form_gramian", counting)
    method = create(name)
    matrix = normal(4, 9, 4)
    method(matrix)
    assert len(calls) == 1 and calls[0] is matrix
    assert_close(method.last_gramian, matrix @ matrix.T, rtol=1e-13, atol=1e-13)
    # A given Gramian is used as is: none is formed.
    method(matrix, gramian=matrix @ matrix.T)
    assert len(calls) == 1


@pytest.mark.parametrize("name", ROW_METHODS)
def test_methods_without_a_gramian_record_none(name):
    method = create(name)
    method(normal(3, 5, 5))
    assert method.last_gramian is None


def test_a_given_gramian_decides_the_weights():
    # A different G than the matrix's own: the weights are those of the given G.
    matrix, other = normal(3, 6, 6), normal(3, 6, 7)
    method = create("mgda")
    method(matrix, gramian=other @ other.T)
    assert_close(
        torch.tensor(method.diagnostics()["task_weights"], dtype=torch.float64),
        mgda_weights(other @ other.T),
        rtol=1e-13,
        atol=1e-13,
    )
    with pytest.raises(ValueError, match=r"`gramian` must be \[K, K\] = \(3, 3\)"):
        method(matrix, gramian=torch.eye(2, dtype=torch.float64))


def test_weights_outside_a_call_form_a_fresh_gramian():
    # No stale Gramian: a direct weights() call after method(J) sees its own matrix.
    method = create("upgrad")
    first, second = normal(3, 6, 8), normal(3, 6, 9)
    method(first)
    assert_close(method.weights(second), create("upgrad").weights(second), rtol=0, atol=0)
    assert method.gramian(second) is not method.last_gramian


def test_conflict_statistics_from_a_given_gramian():
    matrix = J_BASE
    stats = conflict_statistics(matrix)
    assert stats == conflict_statistics(matrix, gramian=matrix @ matrix.T)
    # Hand-worked: g₁·g₂ = -22, ‖g₁‖² = 18, ‖g₂‖² = 38.
    assert stats["conflicting_pairs"] == 1.0
    assert stats["min_cosine"] == pytest.approx(-22 / (18 * 38) ** 0.5, rel=1e-15)
    assert conflict_statistics(matrix[:1]) == {"conflicting_pairs": 0.0, "min_cosine": 1.0}


@pytest.mark.parametrize(("name", "expected"), [("upgrad", 1), ("mean", 1), ("sum", 0)])
def test_a_step_forms_the_gramian_once(name, expected, monkeypatch):
    import taskprio.methods._base as base
    import taskprio.optim as optim

    calls = []

    def counting(matrix):
        calls.append(matrix.shape)
        return gramian(matrix)

    monkeypatch.setattr(base, "form_gramian", counting)
    monkeypatch.setattr(optim, "form_gramian", counting)
    torch.manual_seed(0)
    model = nn.ModuleDict({"trunk": nn.Linear(4, 5), "a": nn.Linear(5, 1), "b": nn.Linear(5, 1)})
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), ["a", "b"], method=name
    )
    features = torch.tanh(model["trunk"](normal(6, 4, 10).float()))
    record = step({"a": model["a"](features).mean(), "b": -model["b"](features).mean()})
    # The method's Gramian (UPGrad) or the statistics' own (mean); none for one backward.
    assert len(calls) == expected
    assert ("min_cosine" in record.diagnostics) == (expected == 1)


def _step_and_batch(method: str, **options):
    torch.manual_seed(0)
    model = nn.ModuleDict({"trunk": nn.Linear(4, 5), "a": nn.Linear(5, 1), "b": nn.Linear(5, 1)})
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), ["a", "b"], method=method, **options
    )
    x = normal(6, 4, 11).float()

    def losses():
        features = torch.tanh(model["trunk"](x))
        return {"a": model["a"](features).mean(), "b": -model["b"](features).mean()}

    return step, losses


@pytest.mark.parametrize("method", ["mean", "upgrad"])
def test_conflict_statistics_every_n_steps(method, monkeypatch):
    import taskprio.optim as optim

    calls = []
    monkeypatch.setattr(optim, "form_gramian", lambda m: calls.append(1) or gramian(m))
    step, losses = _step_and_batch(method, conflict_statistics_every=3)
    recorded = ["min_cosine" in step(losses()).diagnostics for _ in range(7)]
    assert recorded == [True, False, False, True, False, False, True]
    # Only the mean forms a Gramian for the statistics, and only on the steps that record them.
    assert len(calls) == (3 if method == "mean" else 0)
    never, losses = _step_and_batch(method, conflict_statistics_every=0)
    assert all("min_cosine" not in never(losses()).diagnostics for _ in range(2))


def test_conflict_statistics_every_is_validated():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="`conflict_statistics_every` must be a non-negative"):
            _step_and_batch("mean", conflict_statistics_every=bad)
