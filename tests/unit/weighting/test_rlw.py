"""RLW: TorchJD's Random as oracle (same seed, same draws), state and partial labels."""

from __future__ import annotations

import pytest
import torch
from _weighting_asserts import TASKS, Feed, assert_state_round_trip, drive, run_steps
from torchjd.scalarization import Random

import taskprio
from taskprio.weighting import RLW


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchjd_random_with_the_same_seed(dtype):
    # TorchJD draws from the global generator; seeded alike, both draw the same normals.
    ours = RLW(seed=7)
    torch.manual_seed(7)
    reference = Random()
    feed = Feed(0, dtype=dtype)
    for _ in range(5):
        losses = feed.losses(3).requires_grad_()
        (expected,) = torch.autograd.grad(reference(losses), losses)
        got = ours(losses.detach(), TASKS)
        assert got.dtype == dtype
        assert torch.equal(got, expected)


def test_weights_are_a_softmax_of_standard_normals():
    weights = torch.stack(drive(RLW(seed=0), Feed(0), 1000, steps_per_epoch=1))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(1000, dtype=torch.float64))
    assert (weights > 0).all()
    # log w_t − mean_s log w_s = z_t − mean(z): variance 1 − 1/K = 2/3 for K = 3.
    centred = weights.log() - weights.log().mean(dim=1, keepdim=True)
    assert centred.var().item() == pytest.approx(2 / 3, rel=0.1)


def test_seed_and_reset_repeat_the_draws():
    first = drive(RLW(seed=3), Feed(0), 3)
    rlw = RLW(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, drive(rlw, Feed(0), 3), strict=True))
    rlw.reset()
    assert torch.equal(drive(rlw, Feed(0), 1)[0], first[0])
    assert not torch.equal(drive(RLW(seed=4), Feed(0), 1)[0], first[0])


def test_state_round_trip_keeps_the_generator():
    assert_state_round_trip(RLW)


def test_partial_supervision_draws_for_the_present_tasks():
    weights = drive(RLW(), Feed(0), 3, tasks=("b",))
    assert all(w.tolist() == [1.0] for w in weights)
    weights = drive(RLW(), Feed(0), 3, tasks=("a", "c"))
    assert all(w.shape == (2,) and w.sum().item() == pytest.approx(1.0) for w in weights)


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end(form):
    records = run_steps(RLW(), form)
    assert len({tuple(r.weights.values()) for r in records}) == len(records)


def test_bad_options_name_the_option():
    with pytest.raises(TypeError, match="`seed`"):
        RLW(seed=1.5)  # type: ignore[arg-type]
    assert repr(RLW(seed=2)) == "RLW(seed=2)"
    assert isinstance(taskprio.weighting.create("rlw"), RLW)
