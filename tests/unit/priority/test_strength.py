"""Connection strength, shares and owners: hand-worked values and the spec's properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskprio.priority import (
    channel_energy,
    channel_owner,
    channel_rows,
    connection_strength,
    normalized_shares,
    owner_shares,
    rows_to_weight,
)


def test_hand_worked_strengths_shares_and_owners():
    # Two channels with energies r = (1, 4). Task a: γ = (1, 1), v+ε = (1, 1) → S = (1, 4),
    # Ŝ = (0.2, 0.8). Task b: γ = (2, 1), v+ε = (1, 2) → S = (4, 2), Ŝ = (2/3, 1/3).
    # Owners: channel 0 → b (2/3 > 0.2), channel 1 → a (0.8 > 1/3).
    energy = torch.tensor([1.0, 4.0], dtype=torch.float64)
    scale = torch.tensor([[1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    var_plus_eps = torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    strength = connection_strength(energy, scale, var_plus_eps)
    torch.testing.assert_close(
        strength, torch.tensor([[1.0, 4.0], [4.0, 2.0]], dtype=torch.float64)
    )
    shares = normalized_shares(strength)
    torch.testing.assert_close(
        shares, torch.tensor([[0.2, 0.8], [2 / 3, 1 / 3]], dtype=torch.float64)
    )
    assert channel_owner(shares).tolist() == [1, 0]


def test_zero_row_gives_zero_shares_not_nan():
    shares = normalized_shares(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    assert torch.isfinite(shares).all()
    assert shares[0].tolist() == [0.0, 0.0]


def test_ties_go_to_the_lowest_task_index():
    shares = torch.full((4, 5), 0.2, dtype=torch.float64)
    assert channel_owner(shares).tolist() == [0] * 5


def test_uniform_rescaling_of_one_task_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    energy = torch.rand(7, generator=generator, dtype=torch.float64) + 0.1
    scale = torch.rand(3, 7, generator=generator, dtype=torch.float64) + 0.5
    var = torch.rand(3, 7, generator=generator, dtype=torch.float64) + 0.5
    owner = channel_owner(normalized_shares(connection_strength(energy, scale, var)))
    scale[1] *= 17.0
    var[2] *= 0.03
    rescaled = channel_owner(normalized_shares(connection_strength(energy, scale, var)))
    assert torch.equal(owner, rescaled)


def test_equal_rows_are_degenerate_one_owner():
    energy = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    ones = torch.ones(3, 3, dtype=torch.float64)
    owner = channel_owner(normalized_shares(connection_strength(energy, ones, ones)))
    assert owner.tolist() == [0, 0, 0]
    assert owner_shares(owner, 3).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(4, 6, 3, groups=2),
        nn.Conv1d(3, 5, 2),
        nn.Conv2d(4, 4, 3, groups=4),  # depthwise
        nn.ConvTranspose2d(4, 6, 3, groups=2),
        nn.ConvTranspose1d(3, 2, 4),
        nn.Linear(5, 3),
    ],
    ids=str,
)
def test_channel_rows_match_a_slow_reference(layer):
    weight = layer.weight.detach().double()
    rows = channel_rows(weight, layer)
    if isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d):
        in_per_group = weight.shape[0] // layer.groups
        out_per_group = weight.shape[1]
        expected = []
        for p in range(out_per_group * layer.groups):
            group, j = divmod(p, out_per_group)
            block = weight[group * in_per_group : (group + 1) * in_per_group, j]
            expected.append(block.reshape(-1))
        expected = torch.stack(expected)
    else:
        expected = torch.stack([weight[p].reshape(-1) for p in range(weight.shape[0])])
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)
    assert torch.equal(rows_to_weight(rows, layer), weight)
    torch.testing.assert_close(channel_energy(layer.weight, layer), expected.pow(2).sum(dim=1))
    batched = channel_rows(torch.stack([weight, 2 * weight]), layer)
    assert torch.equal(batched[1], 2 * expected)
