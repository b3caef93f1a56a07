"""Small seeded float64 models with task-specific norms, for the CSO tests.

Each model is a :class:`TaskModel`: a shared trunk, one head per task, ``forward_task(x, task)``
(the forward of one task, under :func:`taskprio.nn.active_task`), ``task_loss(task, x,
targets)``, and ``connections``: the (shared layer, task norm) pairs that are CSO connections,
**written by hand** as the tests' ground truth, never found by the library's discovery.

Norm state. Every task norm is a ``TaskBatchNorm*`` with ``momentum=0.0`` (or a LayerNorm /
GroupNorm, which have no running statistics), and the models stay in train mode: each forward
normalizes with the batch statistics, so the losses do not depend on the running statistics,
while the running variances the priorities read stay exactly where :func:`randomize_task_norms`
put them during any number of forwards (an exponential average with factor 0 keeps the old
value bit for bit). So "the current norms" of the spec are the same before, during and after
the step's forwards, whichever of them the implementation reads.

Each task's γ (weight) and running variance are drawn uniformly in [0.5, 2] so that channel
owners differ from channel to channel; β in [-0.5, 0.5] so that ReLU patterns differ per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from taskprio.nn import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskGroupNorm,
    TaskLayerNorm,
    TaskNorm,
    active_task,
)

DTYPE = torch.float64
TASK_NAMES = ("t0", "t1", "t2", "t3", "t4")


def task_names(num_tasks: int) -> tuple[str, ...]:
    """The first `num_tasks` task names."""
    return TASK_NAMES[:num_tasks]


def _bn2d(channels: int, tasks: Sequence[str]) -> TaskBatchNorm2d:
    return TaskBatchNorm2d(channels, tasks, momentum=0.0, dtype=DTYPE)


class TaskModel(nn.Module):
    """A shared trunk, one linear head per task, and the hand-listed connections.

    Attributes:
        tasks: the task names.
        heads: task → its head (task-specific parameters).
        connections: the (shared layer, task norm) pairs that are CSO connections.
        degenerate_layers: the shared layers of `connections` whose normalized shares are
            equal for all tasks (one owner for every channel).
        input_shape: the shape of one input sample.
        batch_size: samples per batch.
    """

    input_shape: tuple[int, ...]
    batch_size: int = 4

    def __init__(self, tasks: Sequence[str], features: int, outputs: int = 2) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.heads = nn.ModuleDict({t: nn.Linear(features, outputs) for t in self.tasks})
        self.outputs = outputs
        self.connections: list[tuple[nn.Module, TaskNorm]] = []
        self.degenerate_layers: list[nn.Module] = []

    def trunk(self, x: Tensor) -> Tensor:
        """The shared features [B, features] (with the active task's norms)."""
        raise NotImplementedError

    def forward_task(self, x: Tensor, task: str) -> Tensor:
        """Task `task`'s prediction [B, outputs]: its norms in the trunk, then its head."""
        with active_task(self, task):
            return self.heads[task](self.trunk(x))

    def task_loss(self, task: str, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        """Mean squared error of task `task` on the batch."""
        return ((self.forward_task(x, task) - targets[task]) ** 2).mean()

    def make_batch(self, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        """A seeded input batch and one target per task."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch_size, *self.input_shape, generator=generator, dtype=DTYPE)
        targets = {
            t: torch.randn(self.batch_size, self.outputs, generator=generator, dtype=DTYPE)
            for t in self.tasks
        }
        return x, targets


def _pool(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(2, x.ndim)))


class PlainCNN(TaskModel):
    """(a) conv-BN-ReLU, conv(bias)-BN-ReLU, then a 1x1 conv with no norm after it.

    Connections: ``conv1``→``bn1``, ``conv2``→``bn2`` (``conv2.bias`` is not a connection
    parameter and gets the plain sum). ``conv3`` is followed by a ReLU: plain sum.
    """

    input_shape = (3, 5, 5)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=4)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = _bn2d(6, tasks)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1, bias=True)
        self.bn2 = _bn2d(5, tasks)
        self.conv3 = nn.Conv2d(5, 4, 1)
        self.connections = [(self.conv1, self.bn1), (self.conv2, self.bn2)]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return _pool(torch.relu(self.conv3(x)))


class GroupedCNN(TaskModel):
    """(b) grouped conv (groups=2), depthwise conv, depthwise ×2 conv into a per-channel GroupNorm.

    Connections: ``grouped``→``bn1`` (weight [6, 2, 3, 3]), ``depthwise``→``bn2`` (weight
    [6, 1, 3, 3]), ``depthwise2``→``gn`` (weight [12, 1, 3, 3], GroupNorm with 12 groups of one
    channel: v+ε := 1). ``pointwise`` feeds a *shared* BatchNorm2d: not a connection, plain sum
    (as are that shared norm's parameters).
    """

    input_shape = (4, 4, 4)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=4)
        self.grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.bn1 = _bn2d(6, tasks)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.bn2 = _bn2d(6, tasks)
        self.depthwise2 = nn.Conv2d(6, 12, 3, padding=1, groups=6, bias=False)
        self.gn = TaskGroupNorm(12, 12, tasks, dtype=DTYPE)
        self.pointwise = nn.Conv2d(12, 4, 1, bias=False)
        self.shared_bn = nn.BatchNorm2d(4, momentum=0.0)
        self.connections = [
            (self.grouped, self.bn1),
            (self.depthwise, self.bn2),
            (self.depthwise2, self.gn),
        ]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.grouped(x)))
        x = torch.relu(self.bn2(self.depthwise(x)))
        x = torch.relu(self.gn(self.depthwise2(x)))
        return _pool(torch.relu(self.shared_bn(self.pointwise(x))))


class TransposedCNN(TaskModel):
    """(c) ConvTranspose2d then a grouped ConvTranspose2d (groups=2, bias), each into a task BN.

    Connections: ``up1``→``bn1`` (weight [3, 4, 3, 3]: channel p is ``W[:, p]``) and
    ``up2``→``bn2`` (weight [4, 3, 2, 2], groups=2: channel p of group g = p // 3 is
    ``W[2g:2g+2, p % 3]``). ``up2.bias`` gets the plain sum.
    """

    input_shape = (3, 3, 3)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=6)
        self.up1 = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, bias=False)  # 3x3 → 5x5
        self.bn1 = _bn2d(4, tasks)
        self.up2 = nn.ConvTranspose2d(4, 6, 2, groups=2, bias=True)  # 5x5 → 6x6
        self.bn2 = _bn2d(6, tasks)
        self.connections = [(self.up1, self.bn1), (self.up2, self.bn2)]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.up1(x)))
        return _pool(torch.relu(self.bn2(self.up2(x))))


class BasicBlock(nn.Module):
    """ResNet-18 block: conv-BN-ReLU-conv-BN, plus the identity or a 1x1 stride-2 conv + BN."""

    def __init__(self, in_channels: int, channels: int, stride: int, tasks: Sequence[str]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn2d(channels, tasks)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = _bn2d(channels, tasks)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                _bn2d(channels, tasks),
            )

    def connections(self) -> list[tuple[nn.Module, TaskNorm]]:
        """conv1→bn1, conv2→bn2 and, if any, the downsample conv → its BN."""
        pairs: list[tuple[nn.Module, TaskNorm]] = [(self.conv1, self.bn1), (self.conv2, self.bn2)]
        if self.downsample is not None:
            pairs.append((self.downsample[0], self.downsample[1]))
        return pairs

    def forward(self, x: Tensor) -> Tensor:
        """[B, in, H, W] → [B, channels, H/stride, W/stride]; the add comes after the norms."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class TinyResNet(TaskModel):
    """(d) a ResNet-18-style trunk: stem conv-BN-ReLU, an identity block, a downsampling block.

    Connections (6): the stem, both convs of each block, and the downsample 1x1 conv (its output
    feeds the downsample BN directly; the residual add comes after the norms).
    """

    input_shape = (3, 6, 6)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=6)
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.stem_bn = _bn2d(4, tasks)
        self.block1 = BasicBlock(4, 4, 1, tasks)
        self.block2 = BasicBlock(4, 6, 2, tasks)
        self.connections = [
            (self.stem, self.stem_bn),
            *self.block1.connections(),
            *self.block2.connections(),
        ]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        return _pool(self.block2(self.block1(x)))


class LinearLayerNorm(TaskModel):
    """(e) Linear(bias)→TaskLayerNorm, Linear→TaskBatchNorm1d, then a Linear with no norm.

    Connections: ``fc1``→``ln`` (LayerNorm over the 6 features: v+ε := 1, γ = its weight) and
    ``fc2``→``bn`` (rows of ``W``). ``fc1.bias`` and ``fc3`` get the plain sum.
    """

    input_shape = (5,)
    batch_size = 6

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=3)
        self.fc1 = nn.Linear(5, 6)
        self.ln = TaskLayerNorm(6, tasks, dtype=DTYPE)
        self.fc2 = nn.Linear(6, 4, bias=False)
        self.bn = TaskBatchNorm1d(4, tasks, momentum=0.0, dtype=DTYPE)
        self.fc3 = nn.Linear(4, 3)
        self.connections = [(self.fc1, self.ln), (self.fc2, self.bn)]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.ln(self.fc1(x)))
        x = torch.relu(self.bn(self.fc2(x)))
        return torch.relu(self.fc3(x))


class DegenerateCNN(TaskModel):
    """(f) two degenerate connections and one ordinary one.

    - ``narrow``→``bn1``: a conv with a single output channel (bias=True): Ŝ = 1 for every task,
      so task 0 owns the layer by the tie rule.
    - ``same``→``bn2``: task norms with the same γ and running variance for every task, so all
      rows of Ŝ are equal (task 0 owns every channel by the tie rule).
    - ``last``→``bn3``: random norms, an ordinary connection.
    """

    input_shape = (3, 5, 5)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks, features=3)
        self.narrow = nn.Conv2d(3, 1, 3, padding=1, bias=True)
        self.bn1 = _bn2d(1, tasks)
        self.same = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn2 = _bn2d(4, tasks)
        self.last = nn.Conv2d(4, 3, 3, padding=1, bias=False)
        self.bn3 = _bn2d(3, tasks)
        self.connections = [(self.narrow, self.bn1), (self.same, self.bn2), (self.last, self.bn3)]
        self.degenerate_layers = [self.narrow, self.same]

    def trunk(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.narrow(x)))
        x = torch.relu(self.bn2(self.same(x)))
        return _pool(torch.relu(self.bn3(self.last(x))))


MODELS: dict[str, type[TaskModel]] = {
    "plain_cnn": PlainCNN,
    "grouped_cnn": GroupedCNN,
    "transposed_cnn": TransposedCNN,
    "resnet": TinyResNet,
    "linear_layernorm": LinearLayerNorm,
    "degenerate_cnn": DegenerateCNN,
}


@torch.no_grad()
def randomize_task_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Draw every task's γ and running variance in [0.5, 2], β in [-0.5, 0.5], mean in [-1, 1]."""
    for module in model.modules():
        if not isinstance(module, TaskNorm):
            continue
        for norm in module.norms.values():
            if getattr(norm, "weight", None) is not None:
                norm.weight.copy_(_uniform(norm.weight.shape, 0.5, 2.0, generator))
            if getattr(norm, "bias", None) is not None:
                norm.bias.copy_(_uniform(norm.bias.shape, -0.5, 0.5, generator))
            if getattr(norm, "running_var", None) is not None:
                norm.running_var.copy_(_uniform(norm.running_var.shape, 0.5, 2.0, generator))
                norm.running_mean.copy_(_uniform(norm.running_mean.shape, -1.0, 1.0, generator))


@torch.no_grad()
def make_norms_identical(norm: TaskNorm) -> None:
    """Give every task of `norm` the first task's parameters and running statistics."""
    first = next(iter(norm.norms.values()))
    for other in norm.norms.values():
        other.load_state_dict(first.state_dict())


def _uniform(shape: torch.Size, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=DTYPE)


def build_model(name: str, num_tasks: int, seed: int = 0) -> TaskModel:
    """Model `name` for the first `num_tasks` tasks, float64, train mode, seeded by `seed`."""
    torch.manual_seed(seed)
    model = MODELS[name](task_names(num_tasks)).to(DTYPE)
    randomize_task_norms(model, torch.Generator().manual_seed(seed + 1000))
    if isinstance(model, DegenerateCNN):
        make_norms_identical(model.bn2)
    return model.train()


class HandWorked(nn.Module):
    """The K=2, N=2 hand-worked example (numbers in ``test_hand_worked_example``).

    ``fc``: Linear(2, 2, bias=False) with W = [[1, 0], [1, 1]], into a TaskBatchNorm1d in eval
    mode (eps = 0.25, running mean 0) with, per task,
    a: γ = (1, 1), running_var = (0.75, 3.75) → v+ε = (1, 4);
    b: γ = (1, 2), running_var = (3.75, 0.75) → v+ε = (4, 1).
    The batch is x = I₂ (sample n is e_n) and task t's loss is the linear readout
    ``(C_t * z).sum()`` of the normalized output z [2, 2], so
    dL_t/dW[p, q] = C_t[q, p]·γ_t,p/√(v_t,p+ε).
    """

    tasks = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False, dtype=DTYPE)
        self.norm = TaskBatchNorm1d(2, self.tasks, eps=0.25, momentum=0.0, dtype=DTYPE)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
            for task, gamma, var in (
                ("a", (1.0, 1.0), (0.75, 3.75)),
                ("b", (1.0, 2.0), (3.75, 0.75)),
            ):
                norm = self.norm.norms[task]
                norm.weight.copy_(torch.tensor(gamma))
                norm.bias.zero_()
                norm.running_mean.zero_()
                norm.running_var.copy_(torch.tensor(var))
        readouts = {"a": [[2.0, 2.0], [1.0, -2.0]], "b": [[-6.0, 0.0], [2.0, 1.0]]}
        self.readouts = {t: torch.tensor(c, dtype=DTYPE) for t, c in readouts.items()}
        self.connections: list[tuple[nn.Module, TaskNorm]] = [(self.fc, self.norm)]
        self.degenerate_layers: list[nn.Module] = []
        self.eval()

    def task_loss(self, task: str, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        """Σ C_t ⊙ norm_t(fc(x)); `targets` is unused."""
        with active_task(self, task):
            return (self.readouts[task] * self.norm(self.fc(x))).sum()

    def make_batch(self, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        """x = I₂, whatever `seed`; no targets."""
        return torch.eye(2, dtype=DTYPE), {}


class AlignedReadout(nn.Module):
    """A connection on which no two task gradients conflict, for "no conflict ⇒ plain sum".

    ``conv`` (2→3 channels, no bias) into a TaskBatchNorm2d in eval mode with random positive γ
    and running variances, then a fixed positive readout c_p of each channel's mean:
    L_t = Σ_p c_p·mean(z_t,p). In eval mode the norm is affine, so
    dL_t/dW[p] = c_p·γ_t,p/√(v_t,p+ε)·d mean(y_p)/dW[p]: for every task a positive multiple of
    the same row, hence every group dot product is positive.
    """

    def __init__(self, tasks: Sequence[str], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tasks = tuple(tasks)
        self.conv = nn.Conv2d(2, 3, 3, bias=False, dtype=DTYPE)
        self.norm = _bn2d(3, tasks)
        randomize_task_norms(self, torch.Generator().manual_seed(seed + 1000))
        self.readout = torch.tensor([0.5, 1.0, 2.0], dtype=DTYPE)
        self.connections: list[tuple[nn.Module, TaskNorm]] = [(self.conv, self.norm)]
        self.degenerate_layers: list[nn.Module] = []
        self.eval()

    def task_loss(self, task: str, x: Tensor, targets: dict[str, Tensor]) -> Tensor:
        """Σ_p c_p·mean(z_t,p); `targets` is unused."""
        with active_task(self, task):
            z = self.norm(self.conv(x))
        return (self.readout * _pool(z).mean(dim=0)).sum()

    def make_batch(self, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        """A seeded [4, 2, 5, 5] input; no targets."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(4, 2, 5, 5, generator=generator, dtype=DTYPE), {}
