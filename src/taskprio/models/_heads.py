"""Dense task heads and the model that joins a shared trunk to them.

:class:`DenseMultiTaskModel` runs a trunk (:class:`ResNet18Dilated`, :class:`SegNet`, or any
module mapping [B, 3, H, W] to [B, C, h, w] features) and one :class:`DenseHead` per task,
whose outputs are upsampled to the input size. With ``task_norms=True`` the trunk's
BatchNorms become task-specific (:func:`taskprio.nn.make_task_specific`), so each task's
forward runs the trunk with its own norms: :meth:`DenseMultiTaskModel.forward` then runs the
trunk once per task, and a training step uses the closure form of
:class:`taskprio.MultiTaskStep`.

Output channels per task follow the data sets' ``task_outputs``: semantic classes for
``semseg``/``human_parts``, 1 for ``depth``/``edge``/``sal``, 3 for ``normals`` (raw: normalize
them, e.g. with ``torch.nn.functional.normalize``, before an angular loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn import functional

from taskprio.models._resnet import ResNet18Dilated
from taskprio.models._segnet import SegNet
from taskprio.nn import active_task, make_task_specific, task_norms
from taskprio.nn._task_norm import check_tasks

# Registry of the trunks :meth:`DenseMultiTaskModel.build` can make.
BACKBONES: dict[str, type[ResNet18Dilated] | type[SegNet]] = {
    "resnet18_dilated": ResNet18Dilated,
    "segnet": SegNet,
}


class DenseHead(nn.Module):
    """A small dense head: conv3x3-BN-ReLU, conv1x1, then bilinear upsampling to `size`.

    Args:
        in_channels: channels of the trunk's features.
        out_channels: the task's output channels.
        hidden_channels: channels of the 3x3 conv; ``min(in_channels, 256)`` when None.

    >>> import torch
    >>> head = DenseHead(16, 3)
    >>> tuple(head(torch.zeros(2, 16, 4, 5), size=(32, 40)).shape)
    (2, 3, 32, 40)
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, hidden_channels: int | None = None
    ) -> None:
        super().__init__()
        hidden = min(in_channels, 256) if hidden_channels is None else hidden_channels
        if min(in_channels, out_channels, hidden) < 1:
            raise ValueError(
                "`in_channels`, `out_channels` and `hidden_channels` must be positive; got "
                f"{in_channels}, {out_channels}, {hidden}."
            )
        self.out_channels = out_channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),  # [B, hidden, h, w]
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),  # [B, out, h, w]
        )

    def forward(self, features: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """[B, C, h, w] features → [B, out_channels, *size] (``size`` None: [.., h, w])."""
        out: Tensor = self.layers(features)
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = functional.interpolate(
                out, size=tuple(size), mode="bilinear", align_corners=False
            )
        return out


class DenseMultiTaskModel(nn.Module):
    """A shared trunk and one dense head per task: ``forward(x) -> {task: [B, C_t, H, W]}``.

    Args:
        trunk: maps [B, 3, H, W] images to [B, C, h, w] features.
        heads: task → head; a head is called as ``head(features, size=(H, W))`` (see
            :class:`DenseHead`) and returns the task's prediction at the input size.
        task_norms: convert the trunk's BatchNorm/LayerNorm/GroupNorm modules to task-specific
            ones (one copy per task) with :func:`taskprio.nn.make_task_specific`. Do it before
            building the optimizer. A trunk converted beforehand works as well.

    Attributes:
        tasks: the task names, in the heads' order.
        has_task_norms: whether the trunk holds task-specific norms.

    >>> import torch
    >>> model = DenseMultiTaskModel.build("segnet", {"semseg": 7, "depth": 1}, width=4)
    >>> {t: tuple(y.shape) for t, y in model(torch.zeros(2, 3, 32, 64)).items()}
    {'semseg': (2, 7, 32, 64), 'depth': (2, 1, 32, 64)}
    """

    def __init__(
        self, trunk: nn.Module, heads: Mapping[str, nn.Module], *, task_norms: bool = False
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(list(heads))
        if task_norms:
            trunk = make_task_specific(trunk, self.tasks)
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))
        self.has_task_norms = bool(_task_norms_of(trunk))

    @classmethod
    def build(
        cls,
        backbone: str,
        outputs: Mapping[str, int],
        *,
        width: int = 64,
        hidden_channels: int | None = None,
        task_norms: bool = False,
    ) -> DenseMultiTaskModel:
        """A model from a registered trunk and one :class:`DenseHead` per task.

        Args:
            backbone: a key of :data:`BACKBONES`: ``"resnet18_dilated"`` or ``"segnet"``.
            outputs: task → output channels (a data set's ``task_outputs``).
            width: the trunk's first-stage width (64 in the papers).
            hidden_channels: the heads' hidden channels (see :class:`DenseHead`).
            task_norms: make the trunk's norms task-specific.
        """
        if backbone not in BACKBONES:
            raise ValueError(f"`backbone` must be one of {sorted(BACKBONES)}; got {backbone!r}.")
        trunk = BACKBONES[backbone](width=width)
        heads = {
            task: DenseHead(trunk.out_channels, channels, hidden_channels=hidden_channels)
            for task, channels in outputs.items()
        }
        return cls(trunk, heads, task_norms=task_norms)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Every task's prediction at the input size.

        With task norms the trunk runs once per task (under that task's norms); otherwise once.

        Args:
            x: [B, 3, H, W] images.

        Returns:
            task → [B, C_task, H, W].
        """
        if self.has_task_norms:
            return {task: self.forward_task(x, task) for task in self.tasks}
        features = self.trunk(x)
        size = tuple(x.shape[-2:])
        return {task: self.heads[task](features, size=size) for task in self.tasks}

    def forward_task(self, x: Tensor, task: str) -> Tensor:
        """One task's prediction: the trunk under `task`'s norms, then its head.

        This is the forward of the closure form of :class:`taskprio.MultiTaskStep`; it sets
        the active task itself, so an enclosing :func:`taskprio.nn.active_task` is optional.

        Args:
            x: [B, 3, H, W] images.
            task: one of :attr:`tasks`.

        Returns:
            [B, C_task, H, W].
        """
        if task not in self.heads:
            raise ValueError(f"`task` must be one of {list(self.tasks)}; got {task!r}.")
        with active_task(self, task):
            features = self.trunk(x)
            out: Tensor = self.heads[task](features, size=tuple(x.shape[-2:]))
        return out

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, task_norms={self.has_task_norms}"


def _task_norms_of(module: nn.Module) -> list[object]:
    return [norm for _, norm in task_norms(module)]
