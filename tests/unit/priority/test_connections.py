"""Connection discovery by forward hooks: what is and what is not a connection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskprio.nn import TaskBatchNorm2d, active_task, make_task_specific
from taskprio.priority import Connection, PriorityMap, discover_connections

TASKS = ("a", "b", "c")


def _run(model, x, tasks=TASKS):
    def run(task):
        with active_task(model, task):
            return model(x)

    return run


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus a 1×1 stride-2 downsample branch; add after the norms."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.downsample = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
        self.tail = nn.Conv2d(4, 2, 1)  # followed by no norm

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.tail(torch.relu(out + self.downsample(x)))


def test_residual_block_with_downsample():
    model = make_task_specific(Residual(), TASKS)
    found = discover_connections(model, TASKS, _run(model, torch.randn(2, 3, 8, 8)))
    assert [c.name for c in found] == ["conv1", "conv2", "downsample.0"]
    assert found[2].norm is model.downsample[1]


def test_grouped_transposed_and_linear_layer_norm():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, groups=2),
        nn.BatchNorm2d(4),
        nn.ConvTranspose2d(4, 6, 3, groups=2),
        nn.GroupNorm(6, 6),
        nn.Flatten(),
        nn.Linear(6 * 7 * 7, 5),
        nn.LayerNorm(5),
    )
    model = make_task_specific(model, TASKS)
    found = discover_connections(model, TASKS, _run(model, torch.randn(2, 2, 7, 7)))
    assert [c.name for c in found] == ["0", "2", "5"]
    assert [c.num_channels for c in found] == [4, 6, 5]


def test_norm_that_is_not_per_channel_is_not_a_connection():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(36, 3))
    model = make_task_specific(model, TASKS)
    with pytest.warns(UserWarning, match="one group per channel"):
        found = discover_connections(model, TASKS, _run(model, torch.randn(2, 1, 5, 5)))
    assert found == []


def test_layer_feeding_only_some_tasks_norms_warns():
    class Partial(nn.Module):
        """Task c reads the shared conv through a plain BatchNorm, a and b through task norms."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)
            self.norm = TaskBatchNorm2d(3, ("a", "b", "c"))
            self.norm_c = nn.BatchNorm2d(3)

        def forward(self, x):
            out = self.conv(x)
            return self.norm_c(out) if self.norm.active_task == "c" else self.norm(out)

    model = Partial()
    with pytest.warns(UserWarning, match=r"only \['a', 'b'\]"):
        found = discover_connections(model, TASKS, _run(model, torch.randn(2, 1, 5, 5)))
    assert found == []


def test_norm_reading_a_transformed_output_is_not_a_connection():
    model = make_task_specific(
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.BatchNorm2d(3)), TASKS
    )
    found = discover_connections(model, TASKS, _run(model, torch.randn(2, 1, 5, 5)))
    assert found == []


def test_explicit_connection_is_validated():
    with pytest.raises(ValueError, match="4 features but the layer has 3"):
        Connection("x", nn.Conv2d(1, 3, 1), TaskBatchNorm2d(4, TASKS))
    with pytest.raises(TypeError, match="Conv, ConvTranspose or Linear"):
        Connection("x", nn.BatchNorm2d(3), TaskBatchNorm2d(3, TASKS))


def test_priority_map_reads_current_norms():
    conv = nn.Conv2d(1, 4, 1, bias=False)
    norm = TaskBatchNorm2d(4, ("a", "b"))
    with torch.no_grad():
        conv.weight.fill_(1.0)
        norm.norms["b"].weight.copy_(torch.tensor([3.0, 3.0, 1.0, 1.0]))
        norm.norms["a"].running_var.copy_(torch.tensor([1.0, 1.0, 0.5, 0.5]))
    snapshot = PriorityMap.from_connections([Connection("conv", conv, norm)], ("a", "b"))
    layer = snapshot.layers[0]
    assert layer.owner == (1, 1, 0, 0)
    assert layer.shares == {"a": 0.5, "b": 0.5}
    assert not layer.is_degenerate
    assert snapshot.to_dict()["layers"][0]["owner"] == [1, 1, 0, 0]
