"""Dense models: the dilated ResNet-18 and SegNet trunks, dense heads, task norms, and CSO."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

import taskprio
from taskprio.methods import CSO
from taskprio.models import DenseHead, DenseMultiTaskModel, ResNet18Dilated, SegNet
from taskprio.nn import TaskBatchNorm2d, TaskNorm, active_task

OUTPUTS = {"semseg": 5, "depth": 1, "normals": 3}
# Image sizes per trunk: SegNet pools 5 times (at least 32x32); odd sizes on purpose.
SIZES = {"resnet18_dilated": [(16, 24), (19, 33)], "segnet": [(32, 48), (37, 45)]}


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these tiny convs on one thread: a thread pool costs more than the work, and far
    more when other processes keep the cores busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(batch, height, width, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _model(backbone, *, task_norms=False, seed=0):
    torch.manual_seed(seed)
    return DenseMultiTaskModel.build(
        backbone, OUTPUTS, width=2, hidden_channels=4, task_norms=task_norms
    )


@pytest.mark.parametrize("backbone", ["resnet18_dilated", "segnet"])
def test_output_shapes_match_the_input(backbone):
    model = _model(backbone)
    for size in SIZES[backbone]:
        outputs = model(_images(2, *size))
        assert list(outputs) == list(OUTPUTS)
        for task, out in outputs.items():
            assert out.shape == (2, OUTPUTS[task], *size)
            assert torch.isfinite(out).all()


def test_trunk_feature_shapes():
    assert ResNet18Dilated(width=2)(_images(1, 19, 33)).shape == (1, 16, 3, 5)  # stride 8
    assert SegNet(width=3)(_images(1, 37, 45)).shape == (1, 3, 37, 45)
    with pytest.raises(ValueError, match="at least 32x32"):
        SegNet(width=3)(_images(1, 19, 33))
    with pytest.raises(ValueError, match="`width`"):
        SegNet(width=0)


@pytest.mark.parametrize("backbone", ["resnet18_dilated", "segnet"])
@pytest.mark.parametrize("task_norms", [False, True])
def test_forward_task_equals_forward_in_eval_mode(backbone, task_norms):
    model = _model(backbone, task_norms=task_norms)
    size = SIZES[backbone][0]
    for seed in range(2):  # train-mode batches, so the running statistics are not the identity
        for task in model.tasks:
            model.forward_task(_images(4, *size, seed), task)
    model.eval()
    x = _images(3, *size, seed=9)
    outputs = model(x)
    for task in model.tasks:
        torch.testing.assert_close(model.forward_task(x, task), outputs[task], rtol=0, atol=0)


def test_task_norms_make_every_trunk_norm_task_specific():
    model = _model("resnet18_dilated", task_norms=True)
    assert model.has_task_norms
    trunk_norms = [m for m in model.trunk.modules() if isinstance(m, (TaskNorm, nn.BatchNorm2d))]
    outer = [m for m in trunk_norms if isinstance(m, TaskNorm)]
    assert len(outer) == 20 and all(isinstance(m, TaskBatchNorm2d) for m in outer)
    assert all(m.tasks == tuple(OUTPUTS) for m in outer)
    # Heads are task-specific already: their norms stay ordinary BatchNorms.
    assert all(isinstance(h.layers[1], nn.BatchNorm2d) for h in model.heads.values())
    # Task norms give each task its own features.
    with torch.no_grad():
        for task in model.tasks:
            for norm in outer:
                norm.norms[task].weight.uniform_(0.5, 2.0)
    x = _images(4, 16, 16)
    with active_task(model, "depth"):
        depth_features = model.trunk(x)
    with active_task(model, "normals"):
        assert not torch.allclose(model.trunk(x), depth_features)


def _loss(task, prediction, target):
    if task == "semseg":
        return functional.cross_entropy(prediction, target, ignore_index=255)
    if task == "normals":
        prediction = functional.normalize(prediction)
    return functional.l1_loss(prediction, target)


@pytest.mark.parametrize(("backbone", "num_convs"), [("resnet18_dilated", 20), ("segnet", 26)])
def test_cso_finds_every_trunk_conv_and_steps(backbone, num_convs):
    model = _model(backbone, task_norms=True)
    assert sum(isinstance(m, nn.Conv2d) for m in model.trunk.modules()) == num_convs
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = taskprio.MultiTaskStep(
        model, optimizer, model.tasks, method=CSO(epochs=1, schedule="phase2")
    )
    generator = torch.Generator().manual_seed(1)
    height, width = SIZES[backbone][0]
    x = torch.randn(4, 3, height, width, generator=generator)
    targets = {
        "semseg": torch.randint(0, 5, (4, height, width), generator=generator),
        "depth": torch.rand(4, 1, height, width, generator=generator),
        "normals": functional.normalize(torch.randn(4, 3, height, width, generator=generator)),
    }

    def task_loss(task):
        with active_task(model, task):
            return _loss(task, model.forward_task(x, task), targets[task])

    before = [p.detach().clone() for p in model.trunk.parameters()]
    record = step(task_loss, epoch=0)
    assert record.phase == "phase2"
    assert set(record.losses) == set(OUTPUTS)
    connections = step.method.connections
    assert len(connections) == num_convs
    assert {c.layer for c in connections} == {
        m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)
    }
    changed = [not torch.equal(b, p) for b, p in zip(before, model.trunk.parameters(), strict=True)]
    assert any(changed)


def test_dense_head_and_bad_arguments():
    head = DenseHead(8, 3, hidden_channels=4)
    assert head(torch.zeros(2, 8, 3, 5)).shape == (2, 3, 3, 5)
    assert head(torch.zeros(2, 8, 3, 5), size=(12, 20)).shape == (2, 3, 12, 20)
    with pytest.raises(ValueError, match="`backbone`"):
        DenseMultiTaskModel.build("resnet50", OUTPUTS)
    model = _model("segnet")
    with pytest.raises(ValueError, match="`task`"):
        model.forward_task(_images(1, 32, 32), "edge")


def test_custom_trunk_and_heads():
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    model = DenseMultiTaskModel(
        trunk, {"a": DenseHead(4, 2), "b": DenseHead(4, 1)}, task_norms=True
    )
    assert isinstance(model.trunk[1], TaskBatchNorm2d) and model.tasks == ("a", "b")
    assert model(_images(2, 6, 7))["b"].shape == (2, 1, 6, 7)
