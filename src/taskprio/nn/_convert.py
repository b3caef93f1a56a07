"""Replace a model's norm modules by task-specific ones, in place."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

from torch import nn

from ._task_norm import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskBatchNorm3d,
    TaskGroupNorm,
    TaskLayerNorm,
    TaskNorm,
    check_tasks,
)

logger = logging.getLogger(__name__)

# Exact types: subclasses (SyncBatchNorm, user norms) may change forward, so they are not copied.
_TASK_NORM_OF: dict[type[nn.Module], type[TaskNorm]] = {
    cls.shared_module_type: cls
    for cls in (TaskBatchNorm1d, TaskBatchNorm2d, TaskBatchNorm3d, TaskLayerNorm, TaskGroupNorm)
}
_LAZY_BATCH_NORMS = (nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)


def make_task_specific(
    model: nn.Module, tasks: Sequence[str], *, under: nn.Module | str | None = None
) -> nn.Module:
    """Replace, in place, each BatchNorm1d/2d/3d, LayerNorm and GroupNorm by its task norm.

    Each norm becomes the matching :class:`TaskNorm` holding one exact copy of it per task, so
    the converted model computes what the original did, whichever task is active. A norm object
    registered at several places becomes one task norm registered at all of them. Task norms
    already there are kept when their tasks are `tasks`.

    Call it before building the optimizer: the per-task copies are new parameters. Use the
    returned module: when `model` itself is a norm, it is a new module, not `model`.

    Args:
        model: the model to convert.
        tasks: the task names, in order: non-empty strings without '.'.
        under: convert only inside this submodule of `model`, given as the module or its
            dotted name (``"decoder.block1"``); ``None`` converts the whole model.

    Returns:
        `model`, converted; or its replacement when `model` is itself a norm.

    Raises:
        ValueError: if `tasks` or `under` is invalid, no norm is found, a task norm has other
            tasks, or a norm is a SyncBatchNorm or an uninitialized lazy BatchNorm.

    >>> from torch import nn
    >>> model = make_task_specific(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), ("a", "b"))
    >>> type(model[1]).__name__, model[1].tasks
    ('TaskBatchNorm2d', ('a', 'b'))
    """
    task_names = check_tasks(tasks)
    root_name, root = _find_under(model, under)
    where = f"`model.{root_name}`" if root_name else "`model`"
    # Build every replacement before touching the model, so an error leaves it as it was.
    replacements: dict[nn.Module, TaskNorm] = {}
    num_task_norms = 0
    inside_task_norms: set[nn.Module] = set()
    for name, module in root.named_modules(prefix=root_name):  # Parents come before children.
        if module in inside_task_norms:
            continue
        if isinstance(module, TaskNorm):
            _check_same_tasks(module, name, task_names)
            inside_task_norms.update(module.modules())
            num_task_norms += 1
        else:
            task_norm = _to_task_norm(module, name or "model", task_names)
            if task_norm is not None:
                replacements[module] = task_norm
    if not replacements and not num_task_norms:
        raise ValueError(
            f"make_task_specific found no BatchNorm/LayerNorm/GroupNorm under {where}. "
            "Pass a model (or `under`) that holds one; only these exact types are converted, "
            "not InstanceNorm or subclasses."
        )
    logger.debug("Converted %d norms under %s to tasks %s.", len(replacements), where, task_names)
    if model in replacements:
        return replacements[model]
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child in replacements:
                parent._modules[child_name] = replacements[child]
    return model


def _find_under(model: nn.Module, under: nn.Module | str | None) -> tuple[str, nn.Module]:
    """Return the dotted name (``""`` for `model`) and the module `under` designates."""
    if under is None:
        return "", model
    names = [name for name, _ in model.named_modules()]
    if isinstance(under, str):
        if under in names:
            return under, model.get_submodule(under)
        close = difflib.get_close_matches(under, names, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else "See `dict(model.named_modules())`."
        raise ValueError(f"`under`={under!r} names no submodule of `model`. {hint}")
    for name, module in model.named_modules():
        if module is under:
            return name, module
    raise ValueError(
        f"`under` ({type(under).__name__}) is not a submodule of `model`. Pass one of its "
        "modules or its dotted name."
    )


def _check_same_tasks(task_norm: TaskNorm, name: str, tasks: tuple[str, ...]) -> None:
    if task_norm.tasks != tasks:
        raise ValueError(
            f"{name or 'model'} is already a {type(task_norm).__name__} for tasks "
            f"{task_norm.tasks}, not the `tasks` {tasks} asked for. Convert a model only once, "
            "with its final task list."
        )


def _to_task_norm(module: nn.Module, name: str, tasks: tuple[str, ...]) -> TaskNorm | None:
    """Return the task norm that replaces `module`, or ``None`` when it is not a norm to convert."""
    if isinstance(module, nn.SyncBatchNorm):
        raise ValueError(
            f"{name} is a SyncBatchNorm, which make_task_specific does not convert. Convert it "
            "to BatchNorm first (build the model without nn.SyncBatchNorm.convert_sync_batchnorm)"
            ", call make_task_specific, then convert_sync_batchnorm: it syncs each task's copy."
        )
    if isinstance(module, _LAZY_BATCH_NORMS):
        raise ValueError(
            f"{name} is a {type(module).__name__} that is still uninitialized. Run one forward "
            "first (its type then becomes the BatchNorm it stands for), then make_task_specific."
        )
    task_norm_type = _TASK_NORM_OF.get(type(module))
    return None if task_norm_type is None else task_norm_type.from_module(module, tasks)
