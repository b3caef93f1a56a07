"""COSMOS: the preference as extra input channels, and its cosine-penalized loss."""

from __future__ import annotations

import math

import pytest
import torch
from _pareto_inputs import TwoHeadConvNet
from torch import nn

from taskprio.models import MultiTaskMLP
from taskprio.pareto import COSMOS, COSMOSModel, cosmos_loss, widen_input


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (nn.Conv2d(2, 4, 3, stride=2, padding=1), torch.randn(3, 2, 6, 6)),
        (nn.Linear(5, 4), torch.randn(3, 5)),
    ],
)
def test_widened_layer_with_zero_new_weights_ignores_the_extra_inputs(layer, x):
    wide = widen_input(layer, 3)
    with torch.no_grad():
        wide.weight[:, layer.weight.shape[1] :] = 0
    extra = torch.randn(x.shape[0], 3, *x.shape[2:])
    torch.testing.assert_close(wide(torch.cat([x, extra], dim=1)), layer(x))


def test_preference_enters_as_constant_channels():
    torch.manual_seed(0)
    base = TwoHeadConvNet()
    model = COSMOSModel(base, ["left", "right"]).eval()
    first = model.model.trunk[0]
    assert first.in_channels == 4 and model.input_layer == "trunk.0"
    x = torch.randn(2, 2, 8, 8)
    # Reference: the widened network on x with two channels filled with α_1, α_2.
    alpha = torch.tensor([0.25, 0.75])
    channels = torch.stack([torch.full((2, 8, 8), 0.25), torch.full((2, 8, 8), 0.75)], dim=1)
    expected = model.model(torch.cat([x, channels], dim=1))
    outputs = model(x, alpha)
    torch.testing.assert_close(outputs["left"], expected["left"], rtol=0, atol=0)
    other = model(x, torch.tensor([1.0, 0.0]))
    assert not torch.allclose(outputs["left"], other["left"])


def test_parameter_count_adds_the_preference_inputs():
    mlp = MultiTaskMLP(5, {"a": 1, "b": 1}, hidden_sizes=(8,), head_hidden=0)
    main = sum(p.numel() for p in mlp.parameters())
    count = COSMOSModel(mlp, ["a", "b"]).parameter_count()
    assert (count.main, count.extra) == (main, 8 * 2)
    conv = COSMOSModel(TwoHeadConvNet(), ["left", "right"]).parameter_count()
    assert conv.extra == 4 * 2 * 3 * 3


def test_cosmos_loss_hand_worked():
    # α = (1, 0), ℓ = (1, 1): α·ℓ = 1, cos = 1/√2; λ = 2 → 1 − √2.
    value = cosmos_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), cosine_weight=2.0)
    assert value.item() == pytest.approx(1 - math.sqrt(2), rel=1e-6)
    method = COSMOS(cosine_weight=2.0)
    objective = method.objective(
        None, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), generator=torch.Generator()
    )
    assert objective.terms["weighted_loss"] == pytest.approx(1.0)
    torch.testing.assert_close(objective.loss, value)


def test_input_layer_errors():
    with pytest.raises(ValueError, match="groups"):
        widen_input(nn.Conv2d(4, 4, 3, groups=2), 2)
    with pytest.raises(ValueError, match="no module 'nope'"):
        COSMOSModel(TwoHeadConvNet(), ["left", "right"], input_layer="nope")
    with pytest.raises(ValueError, match="BatchNorm2d"):
        COSMOSModel(TwoHeadConvNet(), ["left", "right"], input_layer="trunk.1")
