"""Per-task gradients of a set of parameters, from one shared forward or one forward per task."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Strategy = Literal["auto", "loop", "vmap"]
LossesOrClosure = Mapping[str, Tensor] | Callable[[str], Tensor | None]
STRATEGIES: tuple[Strategy, ...] = ("auto", "loop", "vmap")


@dataclass(frozen=True)
class PerTaskGrads:
    """The gradient of every task's loss with respect to every parameter.

    Attributes:
        tasks: the K task names, in row order.
        losses: [K] detached loss values, in row order.
        grads: one entry per parameter: a [K, *shape] tensor, or None when no task reached it.
            Rows of tasks that did not reach the parameter are zero *and* marked False in
            ``touched``; read them through :meth:`rows` to get None instead.
        touched: [K, P] bool, ``touched[k, i]`` is True iff task k's loss depends on parameter i.

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> v = torch.tensor([3.0], requires_grad=True)
    >>> g = per_task_grads({"a": (w * w).sum(), "b": (w * v).sum()}, [w, v])
    >>> g.grads[0]
    tensor([[2., 4.],
            [3., 3.]])
    >>> g.rows(1)
    [None, tensor([3.])]
    """

    tasks: tuple[str, ...]
    losses: Tensor
    grads: tuple[Tensor | None, ...]
    touched: Tensor

    @property
    def num_tasks(self) -> int:
        """K, the number of tasks."""
        return len(self.tasks)

    def rows(self, param_index: int) -> list[Tensor | None]:
        """The K gradients of parameter ``param_index``; None for a task that did not reach it."""
        stacked = self.grads[param_index]
        if stacked is None:
            return [None] * self.num_tasks
        return [
            stacked[k] if bool(self.touched[k, param_index]) else None
            for k in range(self.num_tasks)
        ]

    def task_grads(self, task: str) -> list[Tensor | None]:
        """The gradient of one task's loss for every parameter; None where it did not reach."""
        k = self.tasks.index(task)
        return [
            g[k] if g is not None and bool(self.touched[k, i]) else None
            for i, g in enumerate(self.grads)
        ]


def per_task_grads(
    losses_or_closure: LossesOrClosure,
    params: Sequence[Tensor],
    *,
    tasks: Sequence[str] | None = None,
    strategy: Strategy = "auto",
    retain_graph: bool = False,
    features: Tensor | None = None,
) -> PerTaskGrads:
    """Compute every task's gradient with respect to ``params``.

    Args:
        losses_or_closure: either a mapping ``task -> scalar loss`` whose losses come from one
            shared forward, or a closure ``task -> scalar loss`` that runs one task's forward
            (needed when the network itself differs per task, e.g. task-specific norms). A
            closure may return None for a task with no labels in the batch: that task is left
            out, and the result's ``tasks`` lists only the tasks present.
        params: P tensors requiring grad (usually ``model.parameters()``).
        tasks: the K tasks, in row order. Required with a closure; with a mapping it defaults to
            the mapping's keys and, if given, must equal them as a set.
        strategy: ``"loop"`` runs K backward passes, keeping the graph only until the last one;
            ``"vmap"`` runs one batched backward (``is_grads_batched``) over the stacked losses of
            a single shared graph (mapping form only); ``"auto"`` picks ``"loop"``, which is the
            faster one for convolutional trunks on CPU.
        retain_graph: keep the graph of a mapping's losses after the last task, for a later
            backward through the same forward.
        features: the shared representation all losses of the mapping were computed from. The
            K backward passes then stop at it (heads only), and the K representation gradients
            go through the trunk in one batched backward, as torchjd's ``mtl_backward``
            (``"vmap"``, and ``"auto"`` unless the trunk convolves on the CPU), or in one
            backward each (``"loop"``, and ``"auto"`` for a convolutional trunk on the CPU,
            where that is faster). Used only when every trunk parameter reaches the losses
            through ``features`` alone; otherwise the ``strategy`` applies as without it.

    Returns:
        :class:`PerTaskGrads`: per parameter a [K, *shape] tensor and which tasks reached it.

    Raises:
        ValueError: a loss is not a scalar, does not require grad, tasks mismatch, or the
            strategy does not apply to the input form.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; got {strategy!r}.")
    params = list(params)
    for i, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(
                f"`params[{i}]` (shape {tuple(p.shape)}) does not require grad; pass only "
                "trainable parameters."
            )
    if isinstance(losses_or_closure, Mapping):
        task_order = _mapping_tasks(losses_or_closure, tasks)
        losses = [_check_loss(losses_or_closure[t], t) for t in task_order]
        if features is not None:
            through = _through_features(
                task_order, losses, params, features, retain_graph, strategy=strategy
            )
            if through is not None:
                return through
        if strategy == "vmap":
            return _vmap_grads(task_order, losses, params, retain_graph=retain_graph)
        return _loop_grads(
            task_order, lambda k: losses[k], params, retain_graph=True, keep_last=retain_graph
        )
    if not callable(losses_or_closure):
        raise TypeError(
            "`losses_or_closure` must be a mapping task -> loss or a callable task -> loss; "
            f"got {type(losses_or_closure).__name__}."
        )
    if tasks is None:
        raise ValueError("`tasks` is required with a closure: it says which tasks to run.")
    task_order = _check_tasks(tasks)
    if strategy == "vmap":
        raise ValueError(
            "`strategy='vmap'` needs one shared graph: pass a mapping {task: loss} from one "
            "forward. A closure runs K separate forwards, whose losses are never stacked "
            "(that would cost K² backward work); use strategy='loop' or 'auto'."
        )
    closure = losses_or_closure

    def closure_loss(k: int) -> Tensor | None:
        loss = closure(task_order[k])
        return None if loss is None else _check_loss(loss, task_order[k])

    return _loop_grads(task_order, closure_loss, params, retain_graph=False)


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    task_order = tuple(tasks)
    if not task_order:
        raise ValueError("`tasks` is empty; name at least one task.")
    if len(set(task_order)) != len(task_order):
        raise ValueError(f"`tasks` has duplicates: {task_order}.")
    return task_order


def _mapping_tasks(losses: Mapping[str, Tensor], tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return _check_tasks(list(losses))
    task_order = _check_tasks(tasks)
    if set(task_order) != set(losses):
        raise ValueError(
            f"`tasks` {sorted(task_order)} and the losses' keys {sorted(losses)} differ; "
            "give one loss per task."
        )
    return task_order


def _check_loss(loss: object, task: str) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"The loss of task {task!r} must be a Tensor; got {type(loss).__name__}.")
    if loss.numel() != 1:
        raise ValueError(
            f"The loss of task {task!r} must be a scalar; got shape {tuple(loss.shape)}. "
            "Reduce it (e.g. `.mean()`) first."
        )
    if not loss.requires_grad:
        raise ValueError(
            f"The loss of task {task!r} does not require grad: it was computed without a graph "
            "(under torch.no_grad(), or from detached tensors)."
        )
    return loss.reshape(())


def _loop_grads(
    tasks: tuple[str, ...],
    loss_of: Callable[[int], Tensor | None],
    params: list[Tensor],
    *,
    retain_graph: bool,
    keep_last: bool = False,
) -> PerTaskGrads:
    num_tasks = len(tasks)
    present: list[str] = []
    loss_values: list[Tensor] = []
    task_rows: list[tuple[Tensor | None, ...]] = []
    for k in range(num_tasks):
        loss = loss_of(k)
        if loss is None:
            continue
        present.append(tasks[k])
        loss_values.append(loss.detach())
        # The graph of a shared forward is kept only until the last task has used it.
        task_rows.append(
            torch.autograd.grad(
                loss,
                params,
                retain_graph=retain_graph and (keep_last or k < num_tasks - 1),
                allow_unused=True,
            )
        )
    if not present:
        raise ValueError("No task has a loss: the closure returned None for every task.")
    rows = [[task_grads[i] for task_grads in task_rows] for i in range(len(params))]
    return _assemble(tuple(present), torch.stack(loss_values), params, rows)


def _vmap_grads(
    tasks: tuple[str, ...], losses: list[Tensor], params: list[Tensor], *, retain_graph: bool
) -> PerTaskGrads:
    num_tasks = len(tasks)
    stacked = torch.stack(losses)  # [K]; one shared graph, so one batched backward is K-fold work
    grad_outputs = torch.eye(num_tasks, dtype=stacked.dtype, device=stacked.device)
    batched = torch.autograd.grad(
        stacked,
        params,
        grad_outputs,
        retain_graph=retain_graph,
        is_grads_batched=True,
        allow_unused=True,
    )
    # A batched backward returns zeros for a task whose loss does not reach a parameter another
    # task reaches, so reachability is read off the graph instead.
    reach = [_Reach(loss) for loss in losses]
    rows: list[list[Tensor | None]] = []
    for p, g in zip(params, batched, strict=True):
        rows.append([g[k] if g is not None and p in reach[k] else None for k in range(num_tasks)])
    return _assemble(tasks, stacked.detach(), params, rows)


def _through_features(
    tasks: tuple[str, ...],
    losses: list[Tensor],
    params: list[Tensor],
    features: Tensor,
    retain_graph: bool,
    *,
    strategy: Strategy,
) -> PerTaskGrads | None:
    """Per-task gradients via the representation; None when a trunk parameter bypasses it.

    The K representation gradients go through the trunk in one batched backward
    (``strategy="vmap"``) or one backward each (``"loop"``); ``"auto"`` loops for a
    convolutional trunk on the CPU, where batched convolution backward kernels are slower
    (measured 1.77× against 1.94× LS for a 6-conv trunk, K = 3), and batches otherwise (3.4×
    against 4.1× for an MLP, K = 10).
    """
    if features.grad_fn is None:
        return None
    in_trunk = _Reach(features)
    trunk = [i for i, p in enumerate(params) if p in in_trunk]
    rest = [i for i, p in enumerate(params) if p not in in_trunk]
    if not trunk:
        return None
    heads: list[list[int]] = []  # per task, the parameters it reaches besides the trunk
    for loss in losses:
        beside = _Reach(loss, stop_at=features)
        if any(params[i] in beside for i in trunk):
            return None  # e.g. tied weights: a trunk parameter also used by a head
        heads.append([i for i in rest if params[i] in beside])
    num_tasks = len(tasks)
    rows: list[list[Tensor | None] | Tensor] = [[None] * num_tasks for _ in params]
    feature_grads: list[Tensor | None] = []
    for k, loss in enumerate(losses):
        # Only this task's own parameters: every unused input costs the backward call time
        # (measured 0.5 ms of 1.2 for ten heads of an MLP).
        grads = torch.autograd.grad(
            loss, [features] + [params[i] for i in heads[k]], retain_graph=True, allow_unused=True
        )
        feature_grads.append(grads[0])
        for i, g in zip(heads[k], grads[1:], strict=True):
            rows[i][k] = g
    reached = [g is not None for g in feature_grads]
    trunk_params = [params[i] for i in trunk]
    is_batched = strategy == "vmap" or (
        strategy == "auto" and not (features.device.type == "cpu" and in_trunk.has_convolution)
    )
    if any(reached) and is_batched:
        zero = features.new_zeros(features.shape)
        stacked = torch.stack([zero if g is None else g for g in feature_grads])  # [K, *z]
        batched = torch.autograd.grad(
            features,
            trunk_params,
            stacked,
            retain_graph=retain_graph,
            is_grads_batched=True,
            allow_unused=True,
        )
        for i, g in zip(trunk, batched, strict=True):
            if g is not None:
                # Already [K, *shape]: kept whole (rows of unreached tasks are zero).
                rows[i] = (
                    g if all(reached) else [g[k] if reached[k] else None for k in range(num_tasks)]
                )
    elif any(reached):
        last = max(k for k in range(num_tasks) if reached[k])
        for k, feature_grad in enumerate(feature_grads):
            if feature_grad is None:
                continue
            grads = torch.autograd.grad(
                features,
                trunk_params,
                feature_grad,
                retain_graph=retain_graph or k < last,
                allow_unused=True,
            )
            for i, g in zip(trunk, grads, strict=True):
                rows[i][k] = g  # rows[i] is still a list: only the batched path sets a tensor
    return _assemble(tasks, torch.stack([loss.detach() for loss in losses]), params, rows)


class _Reach:
    """What one loss's autograd graph reaches, compared by identity (``==`` is elementwise).

    ``has_convolution`` tells whether the graph runs a convolution.
    """

    def __init__(self, loss: Tensor, *, stop_at: Tensor | None = None) -> None:
        self._leaf_ids: set[int] = set()
        self._node_ids: set[int] = set()
        self.has_convolution = False
        stop_id = None if stop_at is None else id(stop_at.grad_fn)
        stack = [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or id(node) in self._node_ids or id(node) == stop_id:
                continue
            self._node_ids.add(id(node))
            self.has_convolution = self.has_convolution or "Convolution" in node.name()
            variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold the leaf
            if isinstance(variable, Tensor):
                self._leaf_ids.add(id(variable))
            stack.extend(next_node for next_node, _ in node.next_functions)

    def __contains__(self, tensor: Tensor) -> bool:
        if tensor.grad_fn is None:
            return id(tensor) in self._leaf_ids
        # A non-leaf input (e.g. a shared representation) is reached through the node made it.
        return id(tensor.grad_fn) in self._node_ids


def _assemble(
    tasks: tuple[str, ...],
    losses: Tensor,
    params: list[Tensor],
    rows: Sequence[list[Tensor | None] | Tensor],
) -> PerTaskGrads:
    """Stack each parameter's rows into [K, *shape].

    A ready [K, *shape] tensor in place of a parameter's rows means every task reached it.
    """
    grads: list[Tensor | None] = []
    columns: list[list[bool]] = []
    for p, param_rows in zip(params, rows, strict=True):
        if isinstance(param_rows, Tensor):
            columns.append([True] * len(tasks))
            grads.append(param_rows)
            continue
        reached = [g is not None for g in param_rows]
        columns.append(reached)
        if not any(reached):
            grads.append(None)
            continue
        zero = None if all(reached) else p.new_zeros(p.shape)
        grads.append(torch.stack([zero if g is None else g for g in param_rows]))  # type: ignore[misc]
    touched = torch.tensor(columns, dtype=torch.bool).reshape(len(params), len(tasks)).T
    return PerTaskGrads(tasks=tasks, losses=losses, grads=tuple(grads), touched=touched)


def flat_grad_matrix(grads: Sequence[Tensor]) -> Tensor:
    """Flatten per-parameter [K, *shape] gradients into one [K, n] matrix.

    Args:
        grads: P tensors of shapes [K, *shape_i].

    Returns:
        [K, n] with n = Σ_i prod(shape_i), parameters concatenated in order; always a new
        tensor, which the caller may change in place.

    >>> flat_grad_matrix([torch.ones(2, 3), torch.zeros(2, 1, 2)]).shape
    torch.Size([2, 5])
    """
    if not grads:
        raise ValueError("`grads` is empty; give at least one [K, *shape] gradient.")
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)


def unflatten_like(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split an [n] vector back into tensors shaped like ``like`` (the inverse of flattening).

    >>> [t.shape for t in unflatten_like(torch.arange(5.0), [torch.ones(3), torch.ones(1, 2)])]
    [torch.Size([3]), torch.Size([1, 2])]
    """
    sizes = [math.prod(t.shape) for t in like]
    if flat.shape != (sum(sizes),):
        raise ValueError(
            f"`flat` must have shape ({sum(sizes)},) to fill the given tensors; "
            f"got {tuple(flat.shape)}."
        )
    return [
        piece.view(t.shape) for piece, t in zip(flat.split_with_sizes(sizes), like, strict=True)
    ]
