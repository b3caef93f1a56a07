"""GLS: the weights reproduce the gradient of the geometric mean (autograd, TorchJD)."""

from __future__ import annotations

import math

import pytest
import torch
from _weighting_asserts import TASKS, Feed, run_steps, tiny_problem
from torchjd.scalarization import GeometricMean

import taskprio
from taskprio.weighting import GLS, gls_weights


def _geometric_mean_by_loops(losses: list[float]) -> float:
    product = 1.0
    for value in losses:
        product *= value
    return product ** (1 / len(losses))


@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e15])
def test_weights_are_the_gradient_of_the_geometric_mean(scale):
    feed = Feed(0)
    for num_tasks in (1, 2, 5):
        losses = (feed.losses(num_tasks) * scale).requires_grad_()
        # Reference: autograd of the product's K-th root, written with plain loops.
        product = torch.ones((), dtype=torch.float64)
        for value in losses:
            product = product * value
        (expected,) = torch.autograd.grad(product ** (1 / num_tasks), losses)
        got = GLS()(losses.detach(), TASKS[:num_tasks] + ("d", "e")[: max(0, num_tasks - 3)])
        torch.testing.assert_close(got, expected, rtol=2e-14, atol=0)
        # The weighted loss is the geometric mean itself.
        mean = _geometric_mean_by_loops(losses.tolist())
        assert float((got * losses.detach()).sum()) == pytest.approx(mean, rel=1e-14)


def test_matches_torchjd_geometric_mean():
    feed = Feed(1)
    for _ in range(5):
        losses = feed.losses(3).requires_grad_()
        (expected,) = torch.autograd.grad(GeometricMean()(losses), losses)
        torch.testing.assert_close(GLS()(losses.detach(), TASKS), expected, rtol=1e-15, atol=0)


def test_hand_worked():
    # L = (1, 4): G = 2, w = G / (2 L) = (1, 1/4); L = (2, 2, 16): G = 4, w = 4 / (3 L).
    assert GLS()(torch.tensor([1.0, 4.0]), ["a", "b"]).tolist() == [1.0, 0.25]
    expected = torch.tensor([4 / 6, 4 / 6, 4 / 48], dtype=torch.float64)
    got = gls_weights(torch.tensor([2.0, 2.0, 16.0], dtype=torch.float64))
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)


def test_no_overflow_where_the_product_overflows():
    losses = torch.full((40,), 1e10, dtype=torch.float32)  # the product is 1e400
    torch.testing.assert_close(gls_weights(losses), torch.full((40,), 1 / 40))


def test_weighted_model_gradient_is_the_gradient_of_the_geometric_mean():
    model, x, y = tiny_problem()
    losses = [model.loss(t, x, y) for t in ("a", "b")]
    weights = GLS()(torch.stack([loss.detach() for loss in losses]), ["a", "b"])
    params = list(model.trunk.parameters())
    total = sum(w * loss for w, loss in zip(weights, losses, strict=True))
    weighted = torch.autograd.grad(total, params, retain_graph=True)
    expected = torch.autograd.grad(torch.sqrt(losses[0] * losses[1]), params)
    for got, want in zip(weighted, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_non_positive_loss_names_the_task(bad):
    with pytest.raises(ValueError, match="task 'b' has loss"):
        GLS()(torch.tensor([1.0, bad]), ["a", "b"])


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end(form):
    records = run_steps(GLS(), form)
    for record in records:
        mean = _geometric_mean_by_loops(list(record.losses.values()))
        weighted = sum(record.weights[t] * record.losses[t] for t in record.losses)
        assert weighted == pytest.approx(mean, rel=1e-12)
    assert isinstance(taskprio.weighting.create("gls"), GLS)
    assert GLS().state_dict() == {}
