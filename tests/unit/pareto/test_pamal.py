"""PaMaL: θ(α) = Σ α_i θ_i over m networks."""

from __future__ import annotations

import pytest
import torch
from _pareto_inputs import TwoHeadConvNet
from torch import nn

from taskprio.pareto import PaMaL, PaMaLModel


def _members(count, tasks=("left", "right")):
    torch.manual_seed(0)
    return [TwoHeadConvNet(tasks) for _ in range(count)]


def test_vertices_are_the_members_exactly():
    members = _members(3, ("a", "b", "c"))
    model = PaMaLModel(members, ["a", "b", "c"]).eval()
    x = torch.randn(4, 2, 8, 8)
    for index in range(3):
        vertex = torch.eye(3)[index]
        outputs = model(x, vertex)
        reference = members[index](x)
        for task in ("a", "b", "c"):
            assert torch.equal(outputs[task], reference[task])


def test_merged_parameters_are_the_weighted_sum_float64():
    members = [member.double() for member in _members(2)]
    model = PaMaLModel(members, ["left", "right"])
    alpha = torch.tensor([0.3, 0.7], dtype=torch.float64)
    merged = model.merged_parameters(alpha)
    for name, first in members[0].named_parameters():
        second = dict(members[1].named_parameters())[name]
        torch.testing.assert_close(merged[name], 0.3 * first + 0.7 * second, rtol=0, atol=1e-15)
    # BatchNorm affine parameters are merged too (PaMaL merges every parameter).
    assert "trunk.1.weight" in merged


def test_gradient_reaches_members_in_proportion_to_their_weight():
    model = PaMaLModel(_members(2), ["left", "right"])
    x = torch.randn(4, 2, 8, 8)
    sum(y.sum() for y in model(x, torch.tensor([1.0, 0.0])).values()).backward()
    first, second = (member.heads["left"].weight.grad for member in model.members)
    assert first.abs().sum() > 0
    assert torch.equal(second, torch.zeros_like(second))


def test_parameter_count_is_m_networks():
    members = _members(2)
    size = sum(p.numel() for p in members[0].parameters())
    count = PaMaLModel(members, ["left", "right"]).parameter_count()
    assert (count.main, count.extra, count.total) == (size, size, 2 * size)


def test_members_must_match_and_be_distinct():
    member = TwoHeadConvNet()
    with pytest.raises(ValueError, match="distinct"):
        PaMaLModel([member, member], ["left", "right"])
    with pytest.raises(ValueError, match="one network per task"):
        PaMaLModel([member], ["left", "right"])
    with pytest.raises(ValueError, match=r"members\[1\]"):
        PaMaLModel([nn.Linear(2, 2), nn.Linear(2, 3)], ["a", "b"])


def test_build_makes_one_fresh_network_per_task():
    calls = []

    def make():
        calls.append(1)
        return TwoHeadConvNet()

    torch.manual_seed(0)
    model = PaMaL(window=4).build(make, ["left", "right"])
    assert len(calls) == 2
    first, second = (member.heads["left"].weight for member in model.members)
    assert not torch.equal(first, second)
