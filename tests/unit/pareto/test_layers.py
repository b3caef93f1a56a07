"""Preference-conditioned layers: merge equivalence, rank 0 / s = 0, endpoints, counts."""

from __future__ import annotations

import logging

import pytest
import torch
from _pareto_inputs import TwoHeadConvNet
from torch import nn
from torch.nn import functional

from taskprio.models import MultiLeNet
from taskprio.pareto import (
    LowRankLayer,
    LowRankParetoModel,
    add_low_rank,
    low_rank_layers,
    using_preference,
)

ALPHA = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)


def _randomize(layer: LowRankLayer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (layer.lora_a, layer.lora_b):
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))


def test_linear_merge_equals_low_rank_sum_float64():
    base = nn.Linear(7, 5).double()
    layer = LowRankLayer(base, 3, rank=2, scale=0.7)
    _randomize(layer, 0)
    x = torch.randn(4, 7, dtype=torch.float64)
    with using_preference(layer, ALPHA):
        merged = layer(x)
    # Reference: W0 x + b + s Σ α_i B_i (A_i x), never merging the weights.
    expected = x @ base.weight.T + base.bias
    for task in range(3):
        expected = expected + 0.7 * ALPHA[task] * (
            (x @ layer.lora_a[task].T) @ layer.lora_b[task].T
        )
    torch.testing.assert_close(merged, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("conv", "x_shape"),
    [
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
        (nn.Conv1d(2, 5, 4, stride=3, padding=2, bias=False), (2, 2, 11)),
    ],
)
def test_conv_merge_equals_sum_of_convolutions_float64(conv, x_shape):
    base = conv.double()
    layer = LowRankLayer(base, 3, rank=2, scale=1.3)
    _randomize(layer, 1)
    x = torch.randn(x_shape, dtype=torch.float64)
    with using_preference(layer, ALPHA):
        merged = layer(x)
    # Reference: the main conv plus s Σ α_i conv(x, B_iA_i reshaped to a kernel), no bias.
    conv_fn = functional.conv2d if isinstance(base, nn.Conv2d) else functional.conv1d
    options = {"stride": base.stride, "padding": base.padding}
    expected = base(x)
    for task in range(3):
        kernel = (layer.lora_b[task] @ layer.lora_a[task]).view_as(base.weight)
        expected = expected + 1.3 * ALPHA[task] * conv_fn(x, kernel, **options)
    torch.testing.assert_close(merged, expected, rtol=1e-12, atol=1e-12)


def test_merged_weight_is_linear_in_the_preference():
    layer = LowRankLayer(nn.Linear(6, 4).double(), 2, rank=3)
    _randomize(layer, 2)
    e1, e2 = torch.eye(2, dtype=torch.float64)
    middle = layer.merged_weight(0.5 * e1 + 0.5 * e2)
    torch.testing.assert_close(
        middle, 0.5 * (layer.merged_weight(e1) + layer.merged_weight(e2)), rtol=0, atol=1e-14
    )


def test_vertex_selects_that_tasks_low_rank_term():
    layer = LowRankLayer(nn.Conv2d(2, 3, 3).double(), 3, rank=2, scale=0.5)
    _randomize(layer, 3)
    for task in range(3):
        vertex = torch.eye(3, dtype=torch.float64)[task]
        term = (layer.lora_b[task] @ layer.lora_a[task]).view_as(layer.base.weight)
        torch.testing.assert_close(
            layer.merged_weight(vertex), layer.base.weight + 0.5 * term, rtol=0, atol=1e-14
        )
        # Bit for bit: the other tasks' factors are multiplied by exact zeros.
        torch.testing.assert_close(layer.delta(vertex), 0.5 * layer.low_rank_product(task))
    other = layer.merged_weight(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert not torch.allclose(other, layer.merged_weight(torch.eye(3, dtype=torch.float64)[0]))


@pytest.mark.parametrize(("rank", "scale"), [(0, 1.0), (4, 0.0)])
def test_rank_or_scale_zero_is_the_main_network_exactly(rank, scale):
    torch.manual_seed(0)
    plain = TwoHeadConvNet()
    wrapped = TwoHeadConvNet()
    wrapped.load_state_dict(plain.state_dict())
    model = LowRankParetoModel(wrapped, ["left", "right"], rank=rank, scale=scale)
    x = torch.randn(5, 2, 8, 8)
    targets = {"left": torch.tensor([0, 1, 2, 0, 1]), "right": torch.tensor([2, 2, 1, 0, 0])}
    for alpha in ([1.0, 0.0], [0.0, 1.0], [0.3, 0.7]):
        preference = torch.tensor(alpha)
        outputs = model(x, preference)
        reference = plain(x)
        for task in ("left", "right"):
            assert torch.equal(outputs[task], reference[task])

        # Gradients of the main network equal the plain network's on Σ α_i L_i.
        def weighted(out, preference=preference):
            return sum(
                preference[i] * functional.cross_entropy(out[t], targets[t])
                for i, t in enumerate(("left", "right"))
            )

        model.zero_grad()
        plain.zero_grad()
        weighted(model(x, preference)).backward()
        weighted(plain(x)).backward()
        for (name, mine), theirs in zip(
            [(n, p) for n, p in model.model.named_parameters() if "lora" not in n],
            plain.parameters(),
            strict=True,
        ):
            assert torch.equal(mine.grad, theirs.grad), name
    assert model.orthogonality().item() == 0.0


def test_parameter_count_of_multilenet():
    # main + m Σ_l r (d_out + d_in): conv1 8·(10+25), conv2 8·(20+250), fc 8·(50+320), and per
    # head 8·(50+50) + 8·(10+50); two tasks.
    per_task = 8 * (10 + 25) + 8 * (20 + 250) + 8 * (50 + 320) + 2 * (8 * 100 + 8 * 60)
    model = LowRankParetoModel(MultiLeNet(), ["left", "right"], rank=8)
    count = model.parameter_count()
    assert count.main == 27_530
    assert count.extra == 2 * per_task == 15_920
    assert count.total == sum(p.numel() for p in model.parameters())
    assert len(model.layers) == 7


def test_rank_is_clipped_per_layer_with_a_logged_warning(caplog):
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    with caplog.at_level(logging.WARNING, logger="taskprio.pareto._layers"):
        layers = add_low_rank(net, 2, rank=5)
    assert [layer.rank for layer in layers] == [3, 1]
    assert "0 (rank 3)" in caplog.text
    assert "2 (rank 1)" in caplog.text
    with pytest.raises(ValueError, match="rank"):
        LowRankLayer(nn.Linear(3, 2), 1, rank=3)


def test_include_chooses_layers_and_double_wrapping_is_refused():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    layers = add_low_rank(net, 2, rank=1, include=lambda name, _: name == "1")
    assert low_rank_layers(net) == layers
    assert isinstance(net[0], nn.Linear)
    with pytest.raises(ValueError, match="already"):
        add_low_rank(net, 2)


def test_lora_init_starts_at_the_main_network():
    layer = LowRankLayer(nn.Linear(4, 3), 2, rank=2, init="lora")
    assert torch.count_nonzero(layer.lora_b) == 0
    assert torch.count_nonzero(layer.lora_a) > 0
    assert torch.equal(layer.merged_weight(torch.tensor([0.5, 0.5])), layer.base.weight)
    default = LowRankLayer(nn.Linear(4, 3), 2, rank=2)
    assert torch.count_nonzero(default.low_rank_product(0)) > 0
    assert default.lora_a.abs().max() < 1e-2


def test_preference_context_nests_and_a_missing_preference_is_an_error():
    layer = LowRankLayer(nn.Linear(2, 2), 2, rank=1)
    with pytest.raises(RuntimeError, match="using_preference"):
        layer(torch.zeros(1, 2))
    first, second = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    with using_preference(layer, first):
        with using_preference(layer, second):
            assert layer.preference is second
        assert layer.preference is first
    assert layer.preference is None


@pytest.mark.parametrize(
    ("preference", "message"),
    [
        (torch.tensor([1.0, 0.0, 0.0]), "shape"),
        (torch.tensor([1.5, -0.5]), "non-negative"),
        (torch.tensor([0.5, 0.6]), "sum to 1"),
        (torch.tensor([1, 0]), "floating"),
    ],
)
def test_bad_preferences_are_rejected(preference, message):
    model = LowRankParetoModel(nn.Linear(2, 2), ["a", "b"], rank=1)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 2), preference)


def test_freeze_norm_statistics_keeps_batchnorm_in_eval_mode():
    model = LowRankParetoModel(TwoHeadConvNet(), ["left", "right"], rank=1)
    model.freeze_main()
    model.train()
    norm = model.model.trunk[1]
    assert model.training and not norm.training
    assert all(not p.requires_grad for p in model.main_parameters())
    assert all(p.requires_grad for p in model.low_rank_parameters())
