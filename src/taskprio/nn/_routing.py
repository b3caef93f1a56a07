"""Choose which task's norm statistics and parameters a forward uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ._task_norm import TaskNorm


def task_norms(model: nn.Module) -> list[tuple[str, TaskNorm]]:
    """List the task norms of `model` with their dotted names, each object once.

    >>> from torch import nn
    >>> from taskprio.nn import TaskLayerNorm
    >>> [name for name, _ in task_norms(nn.Sequential(nn.Linear(4, 4), TaskLayerNorm(4, ("a",))))]
    ['1']
    """
    return [
        (name, module) for name, module in model.named_modules() if isinstance(module, TaskNorm)
    ]


@contextmanager
def active_task(model: nn.Module, task: str) -> Iterator[None]:
    """Make every task norm of `model` use `task`'s module, restoring the previous task on exit.

    Contexts nest, and an exception restores the previous tasks too. A model without task norms
    is left as it is, so one training loop serves shared-norm models as well.

    Args:
        model: the model whose :class:`TaskNorm` modules are switched.
        task: the task to activate; every task norm of `model` must know it.

    Raises:
        ValueError: if a task norm of `model` does not know `task` (then nothing is changed).

    >>> import torch
    >>> from taskprio.nn import TaskBatchNorm1d
    >>> norm = TaskBatchNorm1d(3, tasks=("a", "b"))
    >>> with active_task(norm, "b"):
    ...     _ = norm(torch.randn(4, 3))
    >>> norm.norms["a"].num_batches_tracked.item(), norm.norms["b"].num_batches_tracked.item()
    (0, 1)
    >>> print(norm.active_task)
    None
    """
    norms = task_norms(model)
    for name, norm in norms:
        if task not in norm.tasks:
            raise ValueError(
                f"`task`={task!r} is not a task of {name or 'model'} ({type(norm).__name__}), "
                f"whose tasks are {norm.tasks}. Pass one of those."
            )
    previous = [norm.active_task for _, norm in norms]
    for _, norm in norms:
        norm.active_task = task
    try:
        yield
    finally:
        for (_, norm), previous_task in zip(norms, previous, strict=True):
            norm.active_task = previous_task
