"""Uncertainty weighting: TorchJD's UW as oracle, a hand-worked step, state and partial labels."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _weighting_asserts import (
    TASKS,
    Feed,
    assert_absent_task_untouched,
    assert_state_round_trip,
    drive,
    run_steps,
    tiny_problem,
)
from torchjd.scalarization import UW

import taskprio
from taskprio.weighting import Uncertainty


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_matches_torchjd_uw_trained_by_its_own_optimizer(optimizer):
    # TorchJD's UW with its log-variances in a separate optimizer at the same lr, stepped
    # together with the model: our forward weights are ∂UW/∂L, our update is its step.
    reference = UW(3).double()
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    reference_optimizer = make(reference.parameters(), lr=0.025)
    ours = Uncertainty(optimizer=optimizer)
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
    expected_s = dict(zip(TASKS, reference.log_var.tolist(), strict=True))
    for task in TASKS:
        assert ours.log_variances[task] == pytest.approx(expected_s[task], rel=1e-14, abs=1e-16)


def test_hand_worked_sgd_step():
    # s = 0, L = (0.5, 2): ∂/∂s = ½(1 − e^{-s} L) = (0.25, −0.5); SGD lr 0.1 gives
    # s = (−0.025, 0.05), so w = ½e^{0.025}, ½e^{−0.05}.
    uw = Uncertainty(optimizer="sgd", lr=0.1)
    losses = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert uw(losses, ["x", "y"]).tolist() == [0.5, 0.5]
    uw.update(losses, ["x", "y"])
    assert uw.log_variances == pytest.approx({"x": -0.025, "y": 0.05}, abs=1e-16)
    expected = torch.tensor([0.5 * math.exp(0.025), 0.5 * math.exp(-0.05)], dtype=torch.float64)
    torch.testing.assert_close(uw(losses, ["x", "y"]), expected, rtol=1e-15, atol=0)


def test_minimum_is_log_loss():
    # Curvature ½e^{-s}L = ½ at the optimum: SGD at lr 1 halves the error every step.
    uw = Uncertainty(optimizer="sgd", lr=1.0)
    losses = torch.tensor([0.2, 5.0], dtype=torch.float64)
    for _ in range(100):
        uw.update(losses, ["x", "y"])
    torch.testing.assert_close(uw(losses, ["x", "y"]), 0.5 / losses, rtol=1e-12, atol=0)


def test_state_round_trip_with_optimizer_state():
    assert_state_round_trip(Uncertainty)


def test_load_into_a_weighting_that_has_other_tasks():
    trained = Uncertainty()
    drive(trained, Feed(0), 3)
    other = Uncertainty()
    drive(other, Feed(5), 2, tasks=("z",))
    other.load_state_dict(trained.state_dict())
    assert other.tasks == TASKS
    assert other.log_variances == trained.log_variances
    assert torch.equal(drive(other, Feed(1), 2)[1], drive(trained, Feed(1), 2)[1])


def test_absent_task_untouched():
    uw = assert_absent_task_untouched(Uncertainty)
    uw.reset()
    assert uw.tasks == ()
    assert uw(torch.ones(2), ["a", "b"]).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end_learns(form):
    uw = Uncertainty()
    run_steps(uw, form)
    assert set(uw.log_variances) == {"a", "b"}
    assert all(s != 0 for s in uw.log_variances.values())


def test_end_to_end_equals_joint_training_with_torchjd():
    # Reference: the model (SGD) and TorchJD's UW (Adam) trained jointly on Σ ½e^{-s}L + ½s.
    model, x, y = tiny_problem()
    reference_model = copy.deepcopy(model)
    reference_uw = UW(2).double()
    model_optimizer = torch.optim.SGD(reference_model.parameters(), lr=0.05)
    uw_optimizer = torch.optim.Adam(reference_uw.parameters(), lr=0.025)
    for _ in range(4):
        losses = torch.stack([reference_model.loss(t, x, y) for t in ("a", "b")])
        model_optimizer.zero_grad()
        uw_optimizer.zero_grad()
        reference_uw(losses).backward()
        model_optimizer.step()
        uw_optimizer.step()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.05), ["a", "b"], weighting="uncertainty"
    )
    for _ in range(4):
        step({t: model.loss(t, x, y) for t in ("a", "b")})
    for ours, expected in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-13, atol=1e-15)
    s = step.weighting.log_variances  # type: ignore[attr-defined]
    torch.testing.assert_close(
        torch.tensor([s["a"], s["b"]], dtype=torch.float64),
        reference_uw.log_var.detach(),
        rtol=1e-13,
        atol=1e-15,
    )


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="`lr`"):
        Uncertainty(lr=0.0)
    with pytest.raises(ValueError, match="`optimizer`"):
        Uncertainty(optimizer="rmsprop")  # type: ignore[arg-type]
    assert repr(Uncertainty()) == "Uncertainty(optimizer='adam', lr=0.025)"
    assert isinstance(taskprio.weighting.create("uncertainty"), Uncertainty)
