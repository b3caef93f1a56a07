"""A small training loop for multi-task classification on in-memory tensors (MultiMNIST)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional

from taskprio.methods import Method
from taskprio.nn import active_task, task_norms
from taskprio.optim import MultiTaskStep
from taskprio.weighting import Weighting

logger = logging.getLogger(__name__)

Batches = Callable[[torch.Generator | None], Iterator[tuple[Tensor, dict[str, Tensor]]]]


@dataclass
class ClassificationRun:
    """The outcome of :func:`train_classification`.

    Attributes:
        val_accuracy: task → accuracy on the validation split after the last epoch.
        test_accuracy: task → accuracy on the test split after the last epoch.
        epoch_losses: per epoch, task → mean training loss.
        train_time_s: wall time spent in training steps (evaluation excluded).
    """

    val_accuracy: dict[str, float]
    test_accuracy: dict[str, float]
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0


def train_classification(
    model: nn.Module,
    tasks: Sequence[str],
    train_batches: Batches,
    eval_batches: Mapping[str, Callable[[], Iterator[tuple[Tensor, dict[str, Tensor]]]]],
    *,
    method: Method | str = "sum",
    weighting: Weighting | str = "equal",
    epochs: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> ClassificationRun:
    """Train with Adam and cross-entropy per task, then measure accuracy on each eval split.

    A model with task-specific norms is trained through the closure form (one forward per task
    under :func:`~taskprio.nn.active_task`); otherwise one shared forward gives every loss.

    Args:
        model: returns ``{task: logits [B, C]}`` and has ``forward_task(x, task) -> [B, C]``.
        tasks: the task names (keys of the model's outputs and of the labels).
        train_batches: ``generator -> iterator`` over (x [B, ...], {task: y [B]}) for one epoch.
        eval_batches: split name (``"val"``, ``"test"``) → a function giving that split's batches.
        method: the aggregation method.
        weighting: the loss weighting.
        epochs: passes over the training data.
        lr: Adam's learning rate.
        seed: seeds the model's initialization order and the batch order.
        on_epoch: called after each epoch with its index and mean training losses.

    Returns:
        A :class:`ClassificationRun`.
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be at least 1; got {epochs}.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = MultiTaskStep(model, optimizer, tasks, method=method, weighting=weighting)
    has_task_norms = bool(task_norms(model))
    run = ClassificationRun(val_accuracy={}, test_accuracy={})
    for epoch in range(epochs):
        model.train()
        sums = dict.fromkeys(tasks, 0.0)
        num_batches = 0
        started = time.perf_counter()
        for x, labels in train_batches(generator):
            if has_task_norms:

                def task_loss(
                    task: str, x: Tensor = x, labels: dict[str, Tensor] = labels
                ) -> Tensor:
                    with active_task(model, task):
                        logits = model.forward_task(x, task)  # type: ignore[operator]
                    return functional.cross_entropy(logits, labels[task])

                record = step(task_loss, epoch=epoch)
            else:
                outputs = model(x)
                record = step(
                    {t: functional.cross_entropy(outputs[t], labels[t]) for t in tasks},
                    epoch=epoch,
                )
            for task, value in record.losses.items():
                sums[task] += value
            num_batches += 1
        run.train_time_s += time.perf_counter() - started
        epoch_loss = {t: sums[t] / max(num_batches, 1) for t in tasks}
        run.epoch_losses.append(epoch_loss)
        logger.info("epoch %d: %s", epoch, epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss)
    for split, batches in eval_batches.items():
        accuracy = evaluate_accuracy(model, tasks, batches(), has_task_norms=has_task_norms)
        if split == "val":
            run.val_accuracy = accuracy
        elif split == "test":
            run.test_accuracy = accuracy
    return run


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    tasks: Sequence[str],
    batches: Iterator[tuple[Tensor, dict[str, Tensor]]],
    *,
    has_task_norms: bool,
) -> dict[str, float]:
    """Per-task top-1 accuracy over all batches, in eval mode.

    Args:
        model: returns ``{task: logits [B, C]}`` and has ``forward_task(x, task) -> [B, C]``.
        tasks: the task names.
        batches: (x [B, ...], {task: y [B]}) over a whole split.
        has_task_norms: run one forward per task under its own norms.

    Returns:
        task → fraction of correct predictions.
    """
    model.eval()
    correct = dict.fromkeys(tasks, 0)
    total = 0
    for x, labels in batches:
        if has_task_norms:
            predictions = {}
            for task in tasks:
                with active_task(model, task):
                    predictions[task] = model.forward_task(x, task).argmax(dim=1)  # type: ignore[operator]
        else:
            predictions = {t: logits.argmax(dim=1) for t, logits in model(x).items()}
        for task in tasks:
            correct[task] += int((predictions[task] == labels[task]).sum())
        total += x.shape[0]
    return {t: correct[t] / max(total, 1) for t in tasks}
