"""Norm-free networks: PaMaL's LeNet size, the benchmarks' MLP widths without norms, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskprio.data import available_benchmarks, get_benchmark
from taskprio.pareto import NORM_FREE_MODELS, COSMOSModel, NormFreeLeNet, norm_free_model

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_lenet_has_pamal_s_27450_parameters_counted_by_hand():
    # conv 1→10 5×5: 250 + 10; conv 10→20 5×5: 5,000 + 20; linear 320→50: 16,000 + 50.
    trunk = (250 + 10) + (5000 + 20) + (16000 + 50)
    # head: linear 50→50: 2,500 + 50; linear 50→10: 500 + 10.
    head = (2500 + 50) + (500 + 10)
    model = NormFreeLeNet(("left", "right"))
    assert (trunk, head) == (21330, 3060)
    assert _count(model.trunk) == trunk
    assert [_count(model.heads[task]) for task in ("left", "right")] == [head, head]
    assert _count(model) == trunk + 2 * head == 27450
    assert not any(isinstance(module, NORMS) for module in model.modules())


def test_lenet_outputs_one_logit_row_per_task():
    model = NormFreeLeNet(("a", "b", "c"), num_classes=4)
    outputs = model(torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert list(outputs) == ["a", "b", "c"]
    assert all(tuple(output.shape) == (5, 4) for output in outputs.values())
    with pytest.raises(ValueError, match="`num_classes` must be at least 2"):
        NormFreeLeNet(num_classes=1)


@pytest.mark.parametrize("name", sorted(NORM_FREE_MODELS))
def test_each_factory_fits_its_benchmark_without_norms(name):
    benchmark = get_benchmark(name)
    make = norm_free_model(name)
    model = make(benchmark.task_names)
    assert not any(isinstance(module, NORMS) for module in model.modules())
    x = torch.zeros(3, *benchmark.input_shape)
    outputs = model(x)
    assert list(outputs) == list(benchmark.task_names)
    for task in benchmark.tasks:
        assert tuple(outputs[task.name].shape) == (3, task.num_outputs)
    # Same layers as the benchmark's own model, norms aside: identical weight shapes.
    reference = benchmark.make_model()
    weights = [m.weight.shape for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    expected = [
        m.weight.shape for m in reference.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    assert weights == expected


def test_mlp_follows_the_benchmark_options_and_the_task_subset():
    small = get_benchmark("qm9", hidden_sizes=(16, 8), head_hidden=4)
    model = norm_free_model(small)(["alpha"])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(34, 16), (16, 8), (8, 4), (4, 1)]
    assert all(m.bias is not None for m in linears)  # no norm follows them, so they keep biases
    assert list(model(torch.zeros(2, 34))) == ["alpha"]


def test_benchmarks_without_one_give_none():
    missing = sorted(set(available_benchmarks()) - set(NORM_FREE_MODELS))
    assert "qm9_graph" in missing
    assert all(norm_free_model(name) is None for name in missing)


def test_cosmos_sees_the_preference_through_a_norm_free_network():
    torch.manual_seed(0)
    model = COSMOSModel(norm_free_model("yeast")(["class1", "class2"]), ["class1", "class2"])
    x = torch.randn(4, 103, generator=torch.Generator().manual_seed(1))
    first = model(x, torch.tensor([1.0, 0.0]))["class1"]
    second = model(x, torch.tensor([0.0, 1.0]))["class1"]
    assert not torch.allclose(first, second)
