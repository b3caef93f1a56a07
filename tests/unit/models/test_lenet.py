"""MultiLeNet: shapes, per-task forwards, size, and the conv/linear -> norm layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskprio.models import MultiLeNet


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_output_shapes():
    model = MultiLeNet(("a", "b", "c"), num_classes=7)
    outputs = model(_images(5))
    assert list(outputs) == ["a", "b", "c"]
    for logits in outputs.values():
        assert logits.shape == (5, 7)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("task", ["left", "right"])
def test_forward_task_equals_forward_in_eval_mode(task):
    torch.manual_seed(0)
    model = MultiLeNet()
    # A few train-mode batches so the running statistics are not the identity.
    for seed in range(3):
        model(_images(16, seed))
    model.eval()
    x = _images(8, seed=10)
    torch.testing.assert_close(model.forward_task(x, task), model(x)[task], rtol=0, atol=0)


def test_forward_task_reaches_only_its_head():
    model = MultiLeNet()
    model.forward_task(_images(4), "left").sum().backward()
    assert all(p.grad is not None for p in model.heads["left"].parameters())
    assert all(p.grad is None for p in model.heads["right"].parameters())
    assert all(p.grad is not None for p in model.trunk.parameters())


def test_parameter_count_stays_small():
    model = MultiLeNet()
    trunk = sum(p.numel() for p in model.trunk.parameters())
    head = sum(p.numel() for p in model.heads["left"].parameters())
    # conv 250 + bn 20 + conv 5,000 + bn 40 + linear 16,000 + bn 100; head 2,550 + 510.
    assert trunk == 21_410
    assert head == 3_060
    assert sum(p.numel() for p in model.parameters()) == 27_530


def test_every_shared_conv_and_linear_is_followed_by_a_norm():
    layers = list(MultiLeNet().trunk)
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 3
    for i in weighted:
        layer, norm = layers[i], layers[i + 1]
        assert isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d))
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        assert norm.num_features == width
        assert layer.bias is None


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="`task` must be one of"):
        MultiLeNet().forward_task(_images(2), "middle")


@pytest.mark.parametrize(
    ("tasks", "error", "match"),
    [
        ((), ValueError, "at least one"),
        (("a", "a"), ValueError, "each task once"),
        (("a.b",), ValueError, "without '.'"),
        ("left", ValueError, "not a string"),
    ],
)
def test_bad_tasks_are_refused(tasks, error, match):
    with pytest.raises(error, match=match):
        MultiLeNet(tasks)


def test_bad_num_classes_is_refused():
    with pytest.raises(ValueError, match="`num_classes` must be at least 2"):
        MultiLeNet(num_classes=1)
