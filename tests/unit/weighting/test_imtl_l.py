"""IMTL-L: TorchJD's IMTLL as oracle, a hand-worked step, state and partial labels."""

from __future__ import annotations

import math

import pytest
import torch
from _weighting_asserts import (
    TASKS,
    Feed,
    assert_absent_task_untouched,
    assert_state_round_trip,
    run_steps,
)
from torchjd.scalarization import IMTLL as TorchJDIMTLL

import taskprio
from taskprio.weighting import IMTLL, Uncertainty


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_matches_torchjd_imtll_trained_by_its_own_optimizer(optimizer):
    reference = TorchJDIMTLL(3).double()
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    reference_optimizer = make(reference.parameters(), lr=0.025)
    ours = IMTLL(optimizer=optimizer)
    feed = Feed(0)
    for _ in range(8):
        losses = feed.losses(3).requires_grad_()
        objective = reference(losses)
        (expected,) = torch.autograd.grad(objective, losses, retain_graph=True)
        torch.testing.assert_close(ours(losses.detach(), TASKS), expected, rtol=1e-15, atol=0)
        reference_optimizer.zero_grad()
        objective.backward()
        reference_optimizer.step()
        ours.update(losses.detach(), TASKS)
    expected_s = dict(zip(TASKS, reference.log_scale.tolist(), strict=True))
    for task in TASKS:
        assert ours.scales[task] == pytest.approx(expected_s[task], rel=1e-14, abs=1e-16)


def test_hand_worked_sgd_step_and_optimum():
    # s = 0, L = (0.5, 2): ∂/∂s = e^s L − 1 = (−0.5, 1); SGD lr 0.1: s = (0.05, −0.1).
    imtl = IMTLL(optimizer="sgd", lr=0.1)
    losses = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert imtl(losses, ["x", "y"]).tolist() == [1.0, 1.0]
    imtl.update(losses, ["x", "y"])
    assert imtl.scales == pytest.approx({"x": 0.05, "y": -0.1}, abs=1e-16)
    expected = torch.tensor([math.exp(0.05), math.exp(-0.1)], dtype=torch.float64)
    torch.testing.assert_close(imtl(losses, ["x", "y"]), expected, rtol=1e-15, atol=0)
    # The optimum scales every loss to 1 (curvature e^s L = 1 there: SGD at lr 0.5 converges).
    imtl = IMTLL(optimizer="sgd", lr=0.5)
    for _ in range(100):
        imtl.update(losses, ["x", "y"])
    torch.testing.assert_close(imtl(losses, ["x", "y"]) * losses, torch.ones(2).double())


def test_is_twice_uncertainty_at_the_opposite_parameter():
    # e^{s} L − s = 2 (½e^{−u} L + ½u) at u = −s: with SGD at twice the lr, IMTL-L's s stays −u.
    imtl, uw = IMTLL(optimizer="sgd", lr=0.05), Uncertainty(optimizer="sgd", lr=0.1)
    feed = Feed(0)
    for _ in range(5):
        losses = feed.losses(3)
        torch.testing.assert_close(imtl(losses, TASKS), 2 * uw(losses, TASKS))
        imtl.update(losses, TASKS)
        uw.update(losses, TASKS)
    assert imtl.scales == pytest.approx({t: -u for t, u in uw.log_variances.items()})


def test_state_round_trip_with_optimizer_state():
    assert_state_round_trip(IMTLL)


def test_absent_task_untouched():
    assert_absent_task_untouched(IMTLL)


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end_learns(form):
    imtl = IMTLL()
    run_steps(imtl, form)
    assert all(s != 0 for s in imtl.scales.values())


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="`lr`"):
        IMTLL(lr=-1.0)
    assert repr(IMTLL(optimizer="sgd", lr=0.1)) == "IMTLL(optimizer='sgd', lr=0.1)"
    assert isinstance(taskprio.weighting.create("imtl_l"), IMTLL)
