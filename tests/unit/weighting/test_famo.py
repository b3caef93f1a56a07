"""FAMO: TorchJD's FAMO as oracle (closure and mapping forms), bounds, state, partial labels."""

from __future__ import annotations

import copy

import pytest
import torch
from _weighting_asserts import (
    TASKS,
    Feed,
    assert_absent_task_untouched,
    assert_state_round_trip,
    run_steps,
    task_state,
    tiny_problem,
)
from torchjd.scalarization import FAMO as TorchJDFAMO

import taskprio
from taskprio.weighting import FAMO, famo_weights


def _logits(famo: FAMO, tasks=TASKS) -> torch.Tensor:
    return torch.tensor([famo.logits[t] for t in tasks], dtype=torch.float64)


def _reference_weights(reference: TorchJDFAMO, losses: torch.Tensor) -> torch.Tensor:
    """The per-task gradient scale of TorchJD's (the official) FAMO loss: ∂loss/∂L."""
    values = losses.clone().requires_grad_()
    (grad,) = torch.autograd.grad(reference(values), values)
    return grad


def test_matches_torchjd_famo_with_losses_after_the_step():
    # TorchJD (adapted from the official code) uses lr 0.025 and weight decay 1e-3 too.
    reference = TorchJDFAMO(3).double()
    ours = FAMO()
    feed = Feed(0)
    for _ in range(6):
        inputs = feed.step(3)
        expected = _reference_weights(reference, inputs["losses"])
        got = ours(inputs["losses"], TASKS)
        torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
        assert got.sum().item() == pytest.approx(1.0, rel=1e-15)
        reference.update(inputs["losses_after"])
        ours.update(inputs["losses"], TASKS, losses_after=inputs["losses_after"])
        torch.testing.assert_close(_logits(ours), reference._w.detach(), rtol=1e-14, atol=1e-17)
    assert not torch.equal(_logits(ours), torch.zeros(3, dtype=torch.float64))


def test_mapping_form_pairs_each_step_with_the_next():
    # Without losses after the step, step n+1's losses stand in for them: after n updates the
    # logits are TorchJD's after the n − 1 pairs (L_1, L_2), …, (L_{n−1}, L_n).
    reference = TorchJDFAMO(3).double()
    ours = FAMO()
    feed = Feed(1)
    previous = None
    for _ in range(6):
        losses = feed.losses(3)
        if previous is not None:
            reference(previous)
            reference.update(losses)
        ours(losses, TASKS)
        ours.update(losses, TASKS)
        torch.testing.assert_close(_logits(ours), reference._w.detach(), rtol=1e-14, atol=1e-17)
        previous = losses


def test_weights_hand_worked_with_bounds():
    # z = softmax(0, 0) = (½, ½); D = L − L_min = (1, 3): w ∝ (½ / 1, ½ / 3), normalized (¾, ¼).
    assert famo_weights(torch.zeros(2), torch.tensor([1.0, 3.0])).tolist() == [0.75, 0.25]
    famo = FAMO(min_losses={"a": 1.0, "b": -1.0})
    got = famo(torch.tensor([2.0, 2.0], dtype=torch.float64), ["a", "b"])
    torch.testing.assert_close(got, torch.tensor([0.75, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"task .a. has loss 0\.5.*`min_losses` 1\.0"):
        famo(torch.tensor([0.5, 2.0]), ["a", "b"])
    with pytest.raises(ValueError, match=r"task .a. has loss after the step -1\.0"):
        FAMO().update(torch.ones(2), ["a", "b"], losses_after=torch.tensor([-1.0, 1.0]))


def test_state_round_trip_closure_form():
    assert_state_round_trip(FAMO)


def test_state_round_trip_mapping_form_keeps_the_pending_losses():
    def run(famo: FAMO, feed: Feed, steps: int) -> list[torch.Tensor]:
        weights = []
        for _ in range(steps):
            losses = feed.losses(3)
            weights.append(famo(losses, TASKS))
            famo.update(losses, TASKS)
        return weights

    original = FAMO()
    run(original, Feed(0), 4)
    restored = FAMO()
    restored.load_state_dict(copy.deepcopy(original.state_dict()))
    for a, b in zip(run(original, Feed(1), 4), run(restored, Feed(1), 4), strict=True):
        assert torch.equal(a, b)


def test_absent_task_untouched_closure_form():
    assert_absent_task_untouched(FAMO)


def test_absent_task_untouched_mapping_form():
    famo = FAMO()
    feed = Feed(2)
    for tasks in [TASKS, TASKS, ("a", "b")]:
        famo.update(feed.losses(len(tasks)), tasks)
    c_state = task_state(famo, "c")
    ab_logits = _logits(famo, ("a", "b"))
    # c was not in the previous step, so it is not paired now (its loss only waits for the
    # next step); a and b are.
    famo.update(feed.losses(3), TASKS)
    after = task_state(famo, "c")
    learned = [k for k in c_state if k != "pending_losses"]
    assert learned == ["parameter", "optimizer.step", "optimizer.exp_avg", "optimizer.exp_avg_sq"]
    assert all(torch.equal(c_state[k], after[k]) for k in learned)
    assert not torch.equal(_logits(famo, ("a", "b")), ab_logits)
    famo.update(feed.losses(3), TASKS)
    assert not torch.equal(task_state(famo, "c")["parameter"], c_state["parameter"])


def test_end_to_end_closure_form_equals_torchjd_with_an_extra_forward():
    model, x, y = tiny_problem()
    reference_model = copy.deepcopy(model)
    reference = TorchJDFAMO(2).double()
    optimizer = torch.optim.SGD(reference_model.parameters(), lr=0.05)
    for _ in range(4):
        losses = torch.stack([reference_model.loss(t, x, y) for t in ("a", "b")])
        optimizer.zero_grad()
        reference(losses).backward()
        optimizer.step()
        with torch.no_grad():
            reference.update(torch.stack([reference_model.loss(t, x, y) for t in ("a", "b")]))
    famo = FAMO()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.05), ["a", "b"], weighting=famo
    )
    for _ in range(4):
        step(lambda t: model.loss(t, x, y))
    for ours, expected in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(_logits(famo, ("a", "b")), reference._w.detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end_learns(form):
    famo = FAMO()
    records = run_steps(famo, form)
    assert all(sum(r.weights.values()) == pytest.approx(1.0) for r in records)
    assert all(value != 0 for value in famo.logits.values())


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="`gamma`"):
        FAMO(gamma=-1e-3)
    with pytest.raises(ValueError, match="`lr`"):
        FAMO(lr=0.0)
    with pytest.raises(ValueError, match="`min_losses`"):
        FAMO(min_losses={"a": float("inf")})
    assert repr(FAMO()) == "FAMO(lr=0.025, gamma=0.001)"
    assert FAMO.needs_losses_after_step
    assert isinstance(taskprio.weighting.create("famo", gamma=1e-5), FAMO)
