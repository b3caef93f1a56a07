"""DWA: a hand-worked two-epoch sequence, TorchJD's DWA as oracle, epochs, state, partial labels."""

from __future__ import annotations

import math

import pytest
import torch
from _weighting_asserts import TASKS, Feed, assert_state_round_trip, run_steps, task_state
from torchjd.scalarization import DWA as TorchJDDWA

import taskprio
from taskprio.weighting import DWA, dwa_weights


def _epoch(dwa: DWA, epoch: int, steps: list[list[float]], tasks=("a", "b")) -> list[list[float]]:
    weights = []
    for losses in steps:
        values = torch.tensor(losses, dtype=torch.float64)
        weights.append(dwa(values, tasks, epoch=epoch).tolist())
        dwa.update(values, tasks, epoch=epoch)
    return weights


def test_hand_worked_two_epochs():
    # Epoch 0: a averages (2 + 4) / 2 = 3, b (1 + 1) / 2 = 1; epoch 1: a 1.5, b (0.9 + 1.1) / 2
    # = 1. Both epochs weigh 1. At epoch 2: r = (1.5 / 3, 1 / 1) = (0.5, 1), and with T = 2,
    # w = 2 softmax(0.25, 0.5) = (2 / (1 + e^{0.25}), 2 e^{0.25} / (1 + e^{0.25})).
    dwa = DWA()
    assert _epoch(dwa, 0, [[2.0, 1.0], [4.0, 1.0]]) == [[1.0, 1.0]] * 2
    assert _epoch(dwa, 1, [[1.5, 0.9], [1.5, 1.1]]) == [[1.0, 1.0]] * 2
    expected = [2 / (1 + math.exp(0.25)), 2 * math.exp(0.25) / (1 + math.exp(0.25))]
    for got in _epoch(dwa, 2, [[0.1, 5.0], [7.0, 0.2]]):  # this epoch's losses do not matter
        assert got == pytest.approx(expected, rel=1e-15)
        assert sum(got) == pytest.approx(2.0, rel=1e-15)


def test_matches_torchjd_dwa():
    # TorchJD sums the losses in each call and rolls the epoch on step(); here update() sums
    # and the epoch argument rolls.
    reference = TorchJDDWA(temperature=2.0)
    ours = DWA(temperature=2.0)
    feed = Feed(0)
    for epoch in range(5):
        for _ in range(3):
            losses = feed.losses(3).requires_grad_()
            (expected,) = torch.autograd.grad(reference(losses), losses)
            got = ours(losses.detach(), TASKS, epoch=epoch)
            torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
            ours.update(losses.detach(), TASKS, epoch=epoch)
        reference.step()
    assert not torch.equal(got, torch.ones(3, dtype=torch.float64))


def test_temperature():
    older, newer = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.0])
    assert dwa_weights(older, newer, 1e6).tolist() == pytest.approx([1.0, 1.0])
    assert dwa_weights(older, newer, 1e-3).tolist() == pytest.approx([0.0, 2.0])
    with pytest.raises(ValueError, match="`temperature`"):
        DWA(temperature=0.0)


def test_epoch_is_required_and_never_goes_back():
    dwa = DWA()
    with pytest.raises(ValueError, match="`epoch`"):
        dwa(torch.ones(2), ["a", "b"])
    dwa.update(torch.ones(2), ["a", "b"], epoch=3)
    with pytest.raises(ValueError, match="went back from 3 to 2"):
        dwa.update(torch.ones(2), ["a", "b"], epoch=2)
    dwa.reset()
    dwa.update(torch.ones(2), ["a", "b"], epoch=2)


def test_skipped_epochs_compare_the_last_two_with_losses():
    dwa = DWA()
    _epoch(dwa, 0, [[2.0, 1.0]])
    _epoch(dwa, 5, [[1.0, 1.0]])
    assert dwa(torch.ones(2), ["a", "b"], epoch=9).tolist() == pytest.approx(
        dwa_weights(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), 2.0).tolist()
    )


def test_forward_is_pure_across_an_epoch_boundary():
    dwa = DWA()
    _epoch(dwa, 0, [[2.0, 1.0]])
    _epoch(dwa, 1, [[1.0, 1.0]])
    state = {k: v.clone() for k, v in dwa.state_dict().items() if isinstance(v, torch.Tensor)}
    first = dwa(torch.ones(2), ["a", "b"], epoch=2)
    assert torch.equal(dwa(torch.ones(2), ["a", "b"], epoch=2), first)
    for key, value in dwa.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[key])


def test_state_round_trip_mid_epoch():
    assert_state_round_trip(DWA, steps_per_epoch=3)


def test_absent_task_keeps_its_history():
    # c has losses in epochs 0 and 1 only; at epoch 4 its rate is still L̄(1) / L̄(0), while a
    # and b compare epochs 3 and 2.
    dwa = DWA()
    _epoch(dwa, 0, [[4.0, 2.0, 1.0]], TASKS)
    _epoch(dwa, 1, [[2.0, 2.0, 3.0]], TASKS)
    _epoch(dwa, 2, [[1.0, 1.0]])
    c_state = task_state(dwa, "c")
    _epoch(dwa, 2, [[1.0, 4.0]])
    _epoch(dwa, 3, [[1.0, 1.0], [2.0, 1.0]])
    after = task_state(dwa, "c")
    assert all(torch.equal(c_state[k], after[k]) for k in c_state)
    got = dwa(torch.ones(3), TASKS, epoch=4)
    rates = torch.tensor([1.5 / 1.0, 1.0 / 2.5, 3.0 / 1.0])
    expected = 3 * torch.softmax(rates / 2, dim=0)
    torch.testing.assert_close(got, expected)
    # A task seen in fewer than two epochs makes the step's weights equal.
    assert dwa(torch.ones(2), ["a", "new"], epoch=4).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end(form):
    records = run_steps(DWA(), form, steps=6)
    assert [r.weights for r in records[:4]] == [{"a": 1.0, "b": 1.0}] * 4
    last = records[-1].weights
    assert last["a"] != last["b"]
    assert sum(last.values()) == pytest.approx(2.0)
    assert isinstance(taskprio.weighting.create("dwa"), DWA)
