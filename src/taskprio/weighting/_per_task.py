"""Base classes for weightings that keep state per task, and those that learn it.

Tasks are not known when a weighting is built (``create("uncertainty")`` takes no task list), so
per-task state grows the first time :meth:`~taskprio.weighting.Weighting.update` sees a task:
one row of every per-task buffer and, for learnable weightings, one scalar parameter with its
own parameter group in the weighting's optimizer. A task absent from a step gets no gradient,
so the optimizer skips it: its value and its optimizer state stay exactly as they were.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from taskprio.weighting._base import Weighting

OptimizerName = Literal["adam", "sgd"]

# Key of the optimizer state inside ``get_extra_state``.
_OPTIMIZER = "optimizer"
_TASKS = "tasks"


class PerTaskWeighting(Weighting):
    """A weighting with per-task buffers, grown as tasks are first seen by ``update``.

    Subclasses list their buffers in ``task_buffers``: name → (trailing shape, dtype or None
    for the losses' dtype, fill value of a new task's row). :attr:`tasks` gives the row order.
    Forward is pure: it reads rows, and a task not seen yet has its initial state.
    """

    task_buffers: ClassVar[dict[str, tuple[tuple[int, ...], torch.dtype | None, float]]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._tasks: list[str] = []
        for name, (shape, dtype, _) in self.task_buffers.items():
            self.register_buffer(name, torch.zeros(0, *shape, dtype=dtype))

    def __repr__(self) -> str:
        # The options only: the per-task tensors are state, not configuration.
        return f"{type(self).__name__}({self.extra_repr()})"

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks with state, in the order ``update`` first saw them (the row order)."""
        return tuple(self._tasks)

    def rows(self, tasks: Sequence[str]) -> list[int | None]:
        """The row of each task, None for a task not seen yet."""
        index = {task: i for i, task in enumerate(self._tasks)}
        return [index.get(task) for task in tasks]

    def register_tasks(self, tasks: Sequence[str], like: Tensor) -> Tensor:
        """Give every unseen task its state (on ``like``'s device); return the [K] rows (CPU)."""
        for task in tasks:
            if task not in self._tasks:
                self._tasks.append(task)
                for name, (shape, dtype, fill) in self.task_buffers.items():
                    buffer: Tensor = getattr(self, name)
                    row_dtype = buffer.dtype if dtype is not None or len(buffer) else like.dtype
                    device = buffer.device if len(buffer) else like.device
                    row = torch.full((1, *shape), fill, dtype=row_dtype, device=device)
                    self._buffers[name] = torch.cat([buffer.to(row_dtype), row])
                self.add_task_parameter(like)
        rows = [self._tasks.index(task) for task in tasks]
        return torch.tensor(rows, dtype=torch.long)

    def read(self, name: str, rows: Tensor) -> Tensor:
        """[K, *shape] the given rows of buffer ``name``."""
        buffer: Tensor = getattr(self, name)
        return buffer[rows.to(buffer.device)]

    def write(self, name: str, rows: Tensor, values: Tensor) -> None:
        """Set the given rows of buffer ``name`` (in the buffer's dtype)."""
        buffer: Tensor = getattr(self, name)
        buffer[rows.to(buffer.device)] = values.to(buffer)

    def add_task_parameter(self, like: Tensor) -> None:
        """Hook for learnable weightings: create the new task's parameter."""

    def reset(self) -> None:
        """Forget every task: the next step starts from the initial state."""
        self._tasks = []
        for name, (shape, dtype, _) in self.task_buffers.items():
            buffer: Tensor = getattr(self, name)
            self._buffers[name] = buffer.new_zeros(
                (0, *shape), dtype=buffer.dtype if dtype is None else dtype
            )

    def get_extra_state(self) -> dict[str, Any]:
        """The task order (the rows of every per-task tensor)."""
        return {_TASKS: list(self._tasks)}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self._tasks = [str(task) for task in state[_TASKS]]

    def prepare_load(self, tasks: list[str], state_dict: dict[str, Any], prefix: str) -> None:
        """Reshape the per-task tensors to those of a saved state before it is copied in."""
        self._tasks = list(tasks)
        for name in self.task_buffers:
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor):
                self._buffers[name] = torch.empty_like(saved)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The per-task tensors of a fresh weighting have no rows yet: give them the saved shapes
        # (and devices: pass ``map_location`` to torch.load) first, so that a checkpoint loads
        # into a weighting built from the config alone.
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and _TASKS in extra:
            self.prepare_load([str(task) for task in extra[_TASKS]], state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class LearnableWeighting(PerTaskWeighting):
    """A weighting with one learnable scalar per task and its own optimizer over them.

    The scalars live in ``task_parameters`` (row order of :attr:`tasks`, initial value
    ``initial_value``); they are never part of the model's optimizer and receive no gradient
    from the model's backward: they learn only in ``update``, through :meth:`descend`. As with
    any torch optimizer, ``.to()`` after the first step does not move the optimizer's state:
    let the scalars be created on the losses' device, or load a checkpoint with
    ``map_location``.

    Args:
        optimizer: ``"adam"`` or ``"sgd"`` (plain, no momentum), over the per-task scalars.
        lr: its learning rate.
        weight_decay: its (L2, added to the gradient) weight decay.
    """

    initial_value: ClassVar[float] = 0.0

    def __init__(
        self, *, optimizer: OptimizerName = "adam", lr: float, weight_decay: float = 0.0
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"`optimizer` must be 'adam' or 'sgd'; got {optimizer!r}.")
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"`lr` must be positive and finite; got {lr}. The default is fine.")
        if not math.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"`weight_decay` must be non-negative and finite; got {weight_decay}.")
        self.optimizer_name: OptimizerName = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.task_parameters = nn.ParameterList()
        self._optimizer: torch.optim.Optimizer | None = None

    def add_task_parameter(self, like: Tensor) -> None:
        """Append the new task's scalar and give it a parameter group of its own."""
        # At least float32: a float16 scalar under Adam (eps 1e-8) would not learn.
        dtype = torch.promote_types(like.dtype, torch.float32)
        parameter = nn.Parameter(
            torch.full((), self.initial_value, dtype=dtype, device=like.device)
        )
        self.task_parameters.append(parameter)
        self._add_to_optimizer(parameter)

    def _add_to_optimizer(self, parameter: nn.Parameter) -> None:
        if self._optimizer is None:
            if self.optimizer_name == "adam":
                self._optimizer = torch.optim.Adam(
                    [parameter], lr=self.lr, weight_decay=self.weight_decay
                )
            else:
                self._optimizer = torch.optim.SGD(
                    [parameter], lr=self.lr, weight_decay=self.weight_decay
                )
        else:
            self._optimizer.add_param_group({"params": [parameter]})

    def parameter_values(self, tasks: Sequence[str], like: Tensor) -> Tensor:
        """[K] the detached scalars of ``tasks`` (``initial_value`` for unseen ones)."""
        values = like.new_full((len(tasks),), self.initial_value)
        for k, row in enumerate(self.rows(tasks)):
            if row is not None:
                values[k] = self.task_parameters[row].detach().to(values)
        return values

    def descend(self, rows: Tensor, objective: Callable[[Tensor], Tensor]) -> None:
        """One optimizer step on the scalars of ``rows`` down ``objective``.

        Args:
            rows: [K] the rows of the tasks present in the step.
            objective: [K] scalars (differentiable) → the scalar to minimize.
        """
        assert self._optimizer is not None  # register_tasks created it
        parameters = [self.task_parameters[int(row)] for row in rows]
        with torch.enable_grad():
            value = objective(torch.stack(list(parameters)))
            grads = torch.autograd.grad(value, parameters)
        # Only the present tasks get a gradient: the optimizer skips the others entirely.
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = grad
        self._optimizer.step()
        for parameter in parameters:
            parameter.grad = None

    def reset(self) -> None:
        """Forget every task, its scalar and its optimizer state."""
        super().reset()
        self.task_parameters = nn.ParameterList()
        self._optimizer = None

    def get_extra_state(self) -> dict[str, Any]:
        """The task order and the optimizer's state (a copy, so later steps do not alter it)."""
        state = super().get_extra_state()
        optimizer = None if self._optimizer is None else self._optimizer.state_dict()
        state[_OPTIMIZER] = copy.deepcopy(optimizer)
        return state

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        super().set_extra_state(state)
        if state.get(_OPTIMIZER) is not None and self._optimizer is not None:
            self._optimizer.load_state_dict(state[_OPTIMIZER])

    def prepare_load(self, tasks: list[str], state_dict: dict[str, Any], prefix: str) -> None:
        """Rebuild one scalar (and parameter group) per saved task, then reshape the buffers."""
        super().prepare_load(tasks, state_dict, prefix)
        self.task_parameters = nn.ParameterList()
        self._optimizer = None
        for i in range(len(tasks)):
            saved = state_dict.get(f"{prefix}task_parameters.{i}")
            if not isinstance(saved, Tensor):
                saved = torch.zeros(())
            parameter = nn.Parameter(torch.empty_like(saved))
            self.task_parameters.append(parameter)
            self._add_to_optimizer(parameter)

    def task_values(self) -> dict[str, float]:
        """Task → its learned scalar."""
        return {
            task: float(parameter.detach())
            for task, parameter in zip(self._tasks, self.task_parameters, strict=True)
        }

    def extra_repr(self) -> str:
        """The optimizer options."""
        decay = f", weight_decay={self.weight_decay}" if self.weight_decay else ""
        return f"optimizer={self.optimizer_name!r}, lr={self.lr}{decay}"
