"""Task-specific normalization: one ordinary torch norm module per task, picked at forward time."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_TaskNormT = TypeVar("_TaskNormT", bound="TaskNorm")

# A key of nn.ModuleDict cannot contain '.', be empty, or shadow one of its attributes ('train').
_RESERVED_NAMES = frozenset(dir(nn.ModuleDict()))


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Return `tasks` as a tuple after checking it names at least one task, each valid and once.

    Raises:
        ValueError: if `tasks` is a string or empty, or a name is invalid or repeated.
    """
    if isinstance(tasks, str):
        raise ValueError(
            f"`tasks` must be a sequence of task names, not a string; got {tasks!r}. "
            f"Write `tasks=({tasks!r},)` for a single task."
        )
    names = tuple(tasks)
    if not names:
        raise ValueError("`tasks` must name at least one task; got (). Pass e.g. ('seg', 'depth').")
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"`tasks` must hold non-empty strings without '.'; got {name!r} in {names!r}. "
                "Rename that task."
            )
        if name in _RESERVED_NAMES:
            raise ValueError(
                f"`tasks` holds {name!r}, which is an nn.ModuleDict attribute and cannot key "
                "one. Rename that task."
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"`tasks` must name each task once; got {names!r}, repeating {repeated}.")
    return names


class TaskNorm(nn.Module):
    """One copy of a norm module per task; `forward` uses the copy of :attr:`active_task`.

    Task ``t``'s parameters and statistics are those of an ordinary torch module,
    ``norm.norms[t]`` (``norm.norms[t].weight``, ``.bias``, ``.running_mean``, ``.running_var``,
    ``.eps``), called with the input tensor unmodified, so forward hooks on ``norm.norms[t]`` see
    exactly what feeds task ``t``'s norm. Set the task with :func:`taskprio.nn.active_task`.
    Subclasses only build the wrapped module and fix :attr:`shared_module_type`; the base class
    wraps any module.

    Args:
        norm: the module to copy (``copy.deepcopy``) once per task.
        tasks: the task names, in order: non-empty strings without '.'.

    Attributes:
        norms: task name -> that task's module.
        active_task: the task whose module `forward` uses; ``None`` outside ``active_task``.

    >>> import torch
    >>> from taskprio.nn import TaskNorm, active_task
    >>> norm = TaskNorm(torch.nn.InstanceNorm1d(2), tasks=("a", "b"))
    >>> norm.tasks
    ('a', 'b')
    >>> with active_task(norm, "b"):
    ...     norm(torch.tensor([[[1.0, 3.0], [0.0, 0.0]]]))
    tensor([[[-1.0000,  1.0000],
             [ 0.0000,  0.0000]]])
    """

    shared_module_type: ClassVar[type[nn.Module]] = nn.Module
    """The exact torch type whose instances :meth:`from_module` accepts."""

    def __init__(self, norm: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({task: copy.deepcopy(norm) for task in check_tasks(tasks)})
        self.active_task: str | None = None
        self.training = norm.training

    @classmethod
    def from_module(cls: type[_TaskNormT], norm: nn.Module, tasks: Sequence[str]) -> _TaskNormT:
        """Build a task norm holding one exact copy of `norm` per task.

        Parameters, running statistics, ``num_batches_tracked``, device, dtype, options and
        training mode are all copied, so every task starts as `norm`.

        Raises:
            TypeError: if `norm` is not exactly a :attr:`shared_module_type`.
        """
        if cls is not TaskNorm and type(norm) is not cls.shared_module_type:
            raise TypeError(
                f"`norm` must be exactly a {cls.shared_module_type.__name__} for "
                f"{cls.__name__}.from_module; got {type(norm).__name__}. "
                f"Use the task norm class made for {type(norm).__name__}."
            )
        # Skip the subclass constructor: it only builds a fresh module that `norm` replaces.
        task_norm = cls.__new__(cls)
        TaskNorm.__init__(task_norm, norm, tasks)
        return task_norm

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names, in order."""
        return tuple(self.norms.keys())

    def forward(self, x: Tensor) -> Tensor:
        """Normalize `x` with the active task's module.

        Args:
            x: the input of the wrapped norm, e.g. [B, C, H, W] for 2-D batch norm.

        Returns:
            The active task's module applied to `x`, same shape.

        Raises:
            RuntimeError: if no task is active, or the active one is not among :attr:`tasks`.
        """
        task = self.active_task
        if task is None or task not in self.norms:
            problem = "has no active task" if task is None else f"has no task {task!r}"
            known = ", ".join(repr(name) for name in self.tasks)
            raise RuntimeError(
                f"{self!r} {problem}. Run the forward inside "
                f"`with taskprio.nn.active_task(model, {self.tasks[0]!r}):` (one of {known})."
            )
        out: Tensor = self.norms[task](x)
        return out

    def extra_repr(self) -> str:
        first: nn.Module = next(iter(self.norms.values()))
        return f"{first.extra_repr()}, tasks={self.tasks!r}"

    def __repr__(self) -> str:
        # The per-task copies share their options: one line, like the torch module it replaces.
        return f"{type(self).__name__}({self.extra_repr()})"


class _TaskBatchNorm(TaskNorm):
    shared_module_type: ClassVar[type[_BatchNorm]] = nn.BatchNorm2d

    def __init__(
        self,
        num_features: int,
        tasks: Sequence[str],
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        norm = self.shared_module_type(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        super().__init__(norm, tasks)


class TaskBatchNorm1d(_TaskBatchNorm):
    """One :class:`torch.nn.BatchNorm1d` per task; arguments as there, plus `tasks`.

    >>> norm = TaskBatchNorm1d(4, tasks=("a", "b"))
    >>> norm.tasks, type(norm.norms["a"]).__name__
    (('a', 'b'), 'BatchNorm1d')
    """

    shared_module_type = nn.BatchNorm1d


class TaskBatchNorm2d(_TaskBatchNorm):
    """One :class:`torch.nn.BatchNorm2d` per task; arguments as there, plus `tasks`.

    >>> norm = TaskBatchNorm2d(64, tasks=("left", "right"))
    >>> norm.norms["left"].weight.shape, norm.norms["left"] is norm.norms["right"]
    (torch.Size([64]), False)
    """

    shared_module_type = nn.BatchNorm2d


class TaskBatchNorm3d(_TaskBatchNorm):
    """One :class:`torch.nn.BatchNorm3d` per task; arguments as there, plus `tasks`.

    >>> TaskBatchNorm3d(8, tasks=("a",), affine=False).norms["a"].weight is None
    True
    """

    shared_module_type = nn.BatchNorm3d


class TaskLayerNorm(TaskNorm):
    """One :class:`torch.nn.LayerNorm` per task; arguments as there, plus `tasks`.

    >>> TaskLayerNorm(16, tasks=("a", "b")).norms["b"].normalized_shape
    (16,)
    """

    shared_module_type = nn.LayerNorm

    def __init__(
        self,
        normalized_shape: int | list[int] | torch.Size,
        tasks: Sequence[str],
        *,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        norm = nn.LayerNorm(
            normalized_shape,
            eps=eps,
            elementwise_affine=elementwise_affine,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        super().__init__(norm, tasks)


class TaskGroupNorm(TaskNorm):
    """One :class:`torch.nn.GroupNorm` per task; arguments as there, plus `tasks`.

    >>> norm = TaskGroupNorm(2, 8, tasks=("a", "b"))
    >>> norm.norms["a"].num_groups, norm.norms["b"].num_channels
    (2, 8)
    """

    shared_module_type = nn.GroupNorm

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        tasks: Sequence[str],
        *,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        norm = nn.GroupNorm(
            num_groups, num_channels, eps=eps, affine=affine, device=device, dtype=dtype
        )
        super().__init__(norm, tasks)
