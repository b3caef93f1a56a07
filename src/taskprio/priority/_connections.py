"""Connections: a shared layer whose output is the input of one norm per task.

Found structurally, by forward hooks during one forward per task, never by module names.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from taskprio.nn import TaskNorm, task_norms
from taskprio.priority._strength import (
    CONNECTED_LAYER_TYPES,
    channel_energy,
    channel_owner,
    connection_strength,
    layer_weight,
    normalized_shares,
)


@dataclass(frozen=True, eq=False)
class Connection:
    """A shared Conv/ConvTranspose/Linear layer followed directly by a task-specific norm.

    Attributes:
        name: the layer's qualified name in the model (for logs and plots).
        layer: the shared layer; its ``weight`` is the parameter CSO projects per channel group.
        norm: the task norm whose per-task modules read the layer's output.
    """

    name: str
    layer: nn.Module
    norm: TaskNorm

    def __post_init__(self) -> None:
        if not isinstance(self.layer, CONNECTED_LAYER_TYPES):
            raise TypeError(
                f"Connection {self.name!r}: the layer must be a Conv, ConvTranspose or Linear "
                f"module; got {type(self.layer).__name__}."
            )
        problem = _norm_problem(self.layer, self.norm)
        if problem:
            raise ValueError(f"Connection {self.name!r}: {problem}")

    @property
    def num_channels(self) -> int:
        """N, the layer's output channels (features)."""
        return _num_channels(self.layer)

    def norm_terms(self, tasks: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Each task norm's γ and v + ε, with the conventions of the spec.

        Returns:
            ``(scale [K, N], var_plus_eps [K, N])`` in float64: γ is 1 for a norm without an
            affine weight; v + ε is 1 for a norm without running statistics (LayerNorm,
            GroupNorm, BatchNorm with ``track_running_stats=False``).
        """
        scales, variances = [], []
        for task in tasks:
            module = self.norm.norms[task]
            weight = getattr(module, "weight", None)
            ones = torch.ones(self.num_channels, dtype=torch.float64)
            scales.append(ones if weight is None else weight.detach().to(torch.float64).cpu())
            running_var = getattr(module, "running_var", None)
            if isinstance(module, _BatchNorm) and running_var is not None:
                variances.append(running_var.detach().to(torch.float64).cpu() + module.eps)
            else:
                variances.append(ones)
        return torch.stack(scales), torch.stack(variances)

    def strength(self, tasks: Sequence[str]) -> Tensor:
        """[K, N] connection strengths S from the current weights and norms."""
        scale, var_plus_eps = self.norm_terms(tasks)
        energy = channel_energy(layer_weight(self.layer), self.layer).cpu()
        return connection_strength(energy, scale, var_plus_eps)

    def owner(self, tasks: Sequence[str]) -> Tensor:
        """[N] the owning task index of every output channel."""
        return channel_owner(normalized_shares(self.strength(tasks)))


def _num_channels(layer: nn.Module) -> int:
    weight = layer_weight(layer)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return int(weight.shape[1]) * layer.groups
    return int(weight.shape[0])


def _norm_problem(layer: nn.Module, norm: TaskNorm) -> str:
    """Why ``norm`` cannot read ``layer``'s output channels; empty when it can."""
    channels = _num_channels(layer)
    module = next(iter(norm.norms.values()))
    if isinstance(module, _BatchNorm):
        features = module.num_features
    elif isinstance(module, nn.LayerNorm):
        if not isinstance(layer, nn.Linear) or len(module.normalized_shape) != 1:
            return "a LayerNorm is a channel norm only after a Linear layer, over its features."
        features = module.normalized_shape[0]
    elif isinstance(module, nn.GroupNorm):
        if module.num_groups != module.num_channels:
            return (
                f"a GroupNorm needs one group per channel to give per-channel scales; it has "
                f"{module.num_groups} groups for {module.num_channels} channels."
            )
        features = module.num_channels
    else:
        return f"its norm is a {type(module).__name__}, not BatchNorm, LayerNorm or GroupNorm."
    if features != channels:
        return f"the norm has {features} features but the layer has {channels} output channels."
    return ""


class ConnectionTracer:
    """Records, during one forward per task, which shared layer feeds which task norm.

    Use :meth:`trace` around the forwards and call :meth:`running` to say which task runs.
    """

    def __init__(self, model: nn.Module, tasks: Sequence[str]) -> None:
        self.model = model
        self.tasks = tuple(tasks)
        self._current: str | None = None
        self._outputs: dict[int, tuple[weakref.ref[Tensor], str]] = {}
        self._ran: dict[str, set[str]] = {}
        self._feeds: dict[str, dict[str, tuple[str, TaskNorm]]] = {}
        self._layers: dict[str, nn.Module] = {}

    @contextmanager
    def trace(self) -> Iterator[ConnectionTracer]:
        """Install the hooks for the duration of the block."""
        handles: list[RemovableHandle] = []
        norm_modules = {id(m) for _, tn in task_norms(self.model) for m in tn.modules()}
        for name, module in self.model.named_modules():
            if isinstance(module, CONNECTED_LAYER_TYPES) and id(module) not in norm_modules:
                self._layers[name] = module
                handles.append(module.register_forward_hook(self._layer_hook(name)))
        for norm_name, task_norm in task_norms(self.model):
            for task in task_norm.tasks:
                hook = self._norm_hook(task, norm_name, task_norm)
                handles.append(task_norm.norms[task].register_forward_pre_hook(hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._outputs.clear()

    @contextmanager
    def running(self, task: str) -> Iterator[None]:
        """Mark the forwards inside the block as ``task``'s."""
        self._current = task
        try:
            yield
        finally:
            self._current = None
            self._outputs.clear()

    def _layer_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._current is None or not isinstance(output, Tensor):
                return
            self._ran.setdefault(name, set()).add(self._current)
            self._outputs[id(output)] = (weakref.ref(output), name)

        return hook

    def _norm_hook(
        self, task: str, norm_name: str, task_norm: TaskNorm
    ) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            if self._current != task or not inputs or not isinstance(inputs[0], Tensor):
                return
            found = self._outputs.get(id(inputs[0]))
            # The weak reference guards against a recycled id of a freed tensor.
            if found is not None and found[0]() is inputs[0]:
                self._feeds.setdefault(found[1], {})[task] = (norm_name, task_norm)

        return hook

    def connections(self) -> list[Connection]:
        """The connections seen so far; warns about layers that feed only some tasks' norms."""
        found = []
        for name, layer in self._layers.items():
            feeds = self._feeds.get(name, {})
            if not feeds:
                continue
            norms = {id(tn) for _, tn in feeds.values()}
            if set(feeds) == set(self.tasks) and len(norms) == 1:
                task_norm = next(iter(feeds.values()))[1]
                problem = _norm_problem(layer, task_norm)
                if not problem:
                    found.append(Connection(name=name, layer=layer, norm=task_norm))
                    continue
                reason = problem
            elif len(norms) > 1:
                reason = "its output feeds different task norms for different tasks."
            else:
                reason = f"its output feeds task norms of only {sorted(feeds)}."
            if len(self._ran.get(name, ())) > 1:
                warnings.warn(
                    f"Shared layer {name!r} is not a CSO connection: {reason} Its gradient is "
                    "combined by plain sum.",
                    stacklevel=2,
                )
        return found


def discover_connections(
    model: nn.Module, tasks: Sequence[str], run_task: Callable[[str], object]
) -> list[Connection]:
    """Find every connection by running one forward per task with hooks in place.

    Args:
        model: the network with task-specific norms (:func:`taskprio.nn.make_task_specific`).
        tasks: the K task names.
        run_task: runs the forward of one task (inside :func:`taskprio.nn.active_task`).

    Returns:
        The connections in module order.

    >>> from taskprio.nn import active_task, make_task_specific
    >>> net = make_task_specific(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), ["a", "b"])
    >>> def run(task):
    ...     with active_task(net, task):
    ...         return net(torch.randn(2, 1, 5, 5))
    >>> [c.name for c in discover_connections(net, ["a", "b"], run)]
    ['0']
    """
    tracer = ConnectionTracer(model, tasks)
    with tracer.trace(), torch.no_grad():
        for task in tasks:
            with tracer.running(task):
                run_task(task)
    return tracer.connections()
