"""MPNN: radial basis against loops, invariances in float64, padding, CSO connections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from taskprio.models import MPNN
from taskprio.models._mpnn import radial_expansion
from taskprio.nn import active_task, make_task_specific
from taskprio.priority import discover_connections

TASKS = {"U0": 1, "homo": 1, "mu": 1}
# Three molecules of 5, 9 and 2 atoms in 12 slots; molecule 1 has a padding slot in the middle.
COUNTS = (5, 9, 2)
NUM_SLOTS = 12


def _molecules(*, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[3, 12, 4] padded molecules: atomic numbers in 1..9, positions within a few Å."""
    generator = torch.Generator().manual_seed(0)
    x = torch.zeros(len(COUNTS), NUM_SLOTS, 4, dtype=dtype)
    for b, count in enumerate(COUNTS):
        slots = [0, 1, 2, 3, 4, 6, 7, 8, 9] if b == 1 else list(range(count))
        numbers = torch.randint(1, 10, (count,), generator=generator)
        x[b, slots, 0] = numbers.to(dtype)
        x[b, slots, 1:] = 1.5 * torch.randn(count, 3, generator=generator, dtype=dtype)
    return x


@pytest.fixture(scope="module")
def model() -> MPNN:
    """A float64 model in eval mode, trained a few steps (nontrivial BatchNorm statistics)."""
    torch.manual_seed(0)
    model = MPNN(TASKS, width=16, num_blocks=2, num_rbf=6, cutoff=4.0, head_hidden=8).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _molecules()
    for _ in range(3):
        loss = sum(output.square().mean() for output in model(x).values())
        optimizer.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
    return model.eval()


def _stacked(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, 3] every task's output."""
    return torch.cat(list(model(x).values()), dim=1)


def _rotation(dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_radial_expansion_matches_a_loop():
    x = _molecules()
    atom_mask = x[..., 0] > 0
    centers = torch.linspace(0.0, 4.0, 6, dtype=torch.float64)
    got = radial_expansion(x[..., 1:], atom_mask, centers, cutoff=4.0)  # [B, P, R, P]
    expected = np.zeros(tuple(got.shape))
    spacing = 4.0 / 5
    numbers, positions = x[..., 0].tolist(), x[..., 1:].tolist()
    for b in range(x.shape[0]):
        for i in range(NUM_SLOTS):
            for j in range(NUM_SLOTS):
                if i == j or not (numbers[b][i] and numbers[b][j]):
                    continue
                d = math.dist(positions[b][i], positions[b][j])
                if d >= 4.0:
                    continue
                envelope = 0.5 * (math.cos(math.pi * d / 4.0) + 1)
                for r in range(6):
                    gaussian = math.exp(-0.5 * ((d - r * spacing) / spacing) ** 2)
                    expected[b, i, r, j] = gaussian * envelope
    assert (expected > 0).any()
    assert (expected == 0).any()  # some pairs are beyond the cutoff
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-12, atol=1e-14)


def test_messages_match_a_loop_over_pairs(model):
    """One block's messages m_ic = sum_j sum_r e_ijr F_rc LN(W1 h)_jc, by explicit loops."""
    block = model.blocks[0]
    x = _molecules()
    atom_mask = x[..., 0] > 0
    weight = atom_mask.unsqueeze(-1).double()
    features = model.embedding(x[..., 0].long()) * weight
    expansion = radial_expansion(x[..., 1:], atom_mask, model.rbf_centers, cutoff=4.0)
    captured = {}
    handle = block.update_in.register_forward_pre_hook(
        lambda module, inputs: captured.setdefault("messages", inputs[0])
    )
    with torch.no_grad():
        block(features, expansion, weight)
    handle.remove()
    sources = block.atom_in_norm(block.atom_in(features)).detach().numpy()
    filters, basis = block.filter_weight.detach().numpy(), expansion.numpy()
    expected = np.zeros((x.shape[0], NUM_SLOTS, 16))
    for b in range(x.shape[0]):
        for i in range(NUM_SLOTS):
            for j in range(NUM_SLOTS):
                for r in range(6):
                    expected[b, i] += basis[b, i, r, j] * filters[r] * sources[b, j]
    assert np.abs(expected).max() > 0.1
    torch.testing.assert_close(
        captured["messages"], torch.from_numpy(expected), rtol=1e-12, atol=1e-13
    )


def test_invariant_to_rotation_translation_and_atom_order(model):
    x = _molecules()
    reference = _stacked(model, x)
    moved = x.clone()
    moved[..., 1:] = x[..., 1:] @ _rotation(torch.float64).T + torch.tensor([3.0, -1.0, 0.5])
    permutation = torch.randperm(NUM_SLOTS, generator=torch.Generator().manual_seed(1))
    assert permutation[-1] != NUM_SLOTS - 1  # padding moves into the middle too
    with torch.no_grad():
        torch.testing.assert_close(_stacked(model, moved), reference, rtol=1e-10, atol=1e-10)
        permuted = _stacked(model, x[:, permutation])
        torch.testing.assert_close(permuted, reference, rtol=1e-10, atol=1e-10)
        # Not invariant to everything: stretching a molecule changes its outputs.
        stretched = x.clone()
        stretched[..., 1:] *= 1.1
        assert (_stacked(model, stretched) - reference).abs().min() > 1e-6


def test_padding_changes_nothing(model):
    x = _molecules()
    with torch.no_grad():
        reference = _stacked(model, x)
        # Padding slots hold arbitrary positions, and more padding slots are added.
        padded = torch.zeros(x.shape[0], 29, 4, dtype=torch.float64)
        padded[:, :NUM_SLOTS] = x
        padded[..., 1:] += 50.0 * (padded[..., :1] == 0)
        torch.testing.assert_close(_stacked(model, padded), reference, rtol=1e-12, atol=1e-12)
        # Each molecule alone, in as few slots as it needs: the same outputs.
        for b, count in enumerate(COUNTS):
            alone = x[b : b + 1, x[b, :, 0] > 0]
            assert alone.shape[1] == count
            torch.testing.assert_close(
                _stacked(model, alone), reference[b : b + 1], rtol=1e-10, atol=1e-10
            )


def test_float32_output_and_gradients_are_finite_with_padding():
    model = MPNN(TASKS, width=8, num_blocks=1)
    x = _molecules(dtype=torch.float32)
    x[0, 5:, 1:] = x[0, 0, 1:]  # padding atoms on top of a real atom
    outputs = model(x)
    assert {task: tuple(y.shape) for task, y in outputs.items()} == dict.fromkeys(TASKS, (3, 1))
    sum(y.sum() for y in outputs.values()).backward()  # type: ignore[union-attr]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.embedding.weight.grad is not None
    assert torch.equal(model.embedding.weight.grad[0], torch.zeros(8))  # padding row


def test_forward_task_equals_forward(model):
    x = _molecules()
    with torch.no_grad():
        for task in TASKS:
            torch.testing.assert_close(model.forward_task(x, task), model(x)[task])


def test_every_shared_linear_is_a_connection_with_task_norms():
    torch.manual_seed(0)
    tasks = list(TASKS)
    model = make_task_specific(MPNN(TASKS, width=8, num_blocks=2), tasks)
    x = _molecules(dtype=torch.float32)

    def run(task: str) -> torch.Tensor:
        with active_task(model, task):
            return model.forward_task(x, task)

    found = [connection.name for connection in discover_connections(model, tasks, run)]
    block = ["atom_in", "update_in", "update_out"]
    expected = [f"blocks.{k}.{name}" for k in range(2) for name in block]
    assert found == [*expected, "atom_out.0", "molecule.0"]
    shared_linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith("heads.")
    ]
    assert sorted(shared_linears) == sorted(found)


def test_bad_inputs_and_options_are_refused():
    model = MPNN(TASKS, width=8, num_blocks=1)
    with pytest.raises(ValueError, match=r"\[B, P, 4\]"):
        model(torch.zeros(2, 5, 3))
    x = _molecules(dtype=torch.float32)
    for bad in (1.5, 10.0, -1.0):
        wrong = x.clone()
        wrong[0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"integer atomic numbers in 0\.\.9"):
            model(wrong)
    with pytest.raises(ValueError, match="`task` must be one of"):
        model.forward_task(x, "G")
    with pytest.raises(ValueError, match="`num_rbf`"):
        MPNN(TASKS, num_rbf=1)
    with pytest.raises(ValueError, match="`cutoff`"):
        MPNN(TASKS, cutoff=0.0)
    with pytest.raises(ValueError, match=r"`outputs\['a'\]`"):
        MPNN({"a": 0})
