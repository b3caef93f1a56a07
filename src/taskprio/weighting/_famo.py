"""FAMO: fast adaptive multitask optimization, balancing log-loss decrease rates (Liu et al.)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS
from taskprio.weighting._per_task import LearnableWeighting

# Added to L − L_min before the logarithm, as the official code does.
_EPSILON = 1e-8


def famo_weights(logits: Tensor, shifted_losses: Tensor) -> Tensor:
    """The loss weights of FAMO's update direction.

    The official code back-propagates Σ_t z_t log D_t / c with z = softmax(ξ), D_t = L_t −
    L_t^min + ε and c = Σ_s z_s / D_s held constant, so task t's gradient is scaled by::

        w_t = (z_t / D_t) / Σ_s (z_s / D_s)

    (positive, **summing to 1**): the gradient of the log-losses, as loss weights on the
    current losses.

    Args:
        logits: [K] the logits ξ.
        shifted_losses: [K] D = L − L_min + ε, positive.

    Returns:
        [K] weights summing to 1.

    >>> famo_weights(torch.zeros(2), torch.tensor([1.0, 3.0]))
    tensor([0.7500, 0.2500])
    """
    scaled = torch.softmax(logits, dim=0) / shifted_losses
    return scaled / scaled.sum()


@WEIGHTINGS.register("famo")
class FAMO(LearnableWeighting):
    """FAMO: Liu, Liu, Jin, Stone and Liu, NeurIPS 2023, arXiv 2306.03792.

    Task logits ξ (starting at 0) give z = softmax(ξ) over the present tasks; the step's
    weights are those of the official code's backward (see :func:`famo_weights`), summing to 1.
    After the optimizer step, :meth:`update` measures each present task's decrease of log-loss
    δ_t = log D_t(before) − log D_t(after) and takes one Adam step on ξ with gradient
    ∂(z · δ)/∂ξ = J_softmax(ξ)ᵀ δ, exactly as the official ``update``: tasks whose loss fell
    less gain weight.

    ``gamma`` is the weight decay of that Adam (``torch.optim.Adam(weight_decay=γ)``: γ ξ is
    added to the gradient, an L2 pull of the logits towards 0). Its default differs by place:
    1e-3 here, as the official ``run.sh`` for NYUv2, CelebA and QM9, LibMTL and TorchJD;
    the official ``weight_methods.py`` class defaults to 1e-5, its standalone ``famo.py``, CLI
    and Cityscapes ``run.sh`` to 0.01.
    The official code also clips the shared gradient to norm 1 inside its backward; that is
    no loss weight, and is left to the training loop here.

    ``losses_after`` are the same batch's losses after the step, which the step re-evaluates in
    its closure form (an extra forward per step, as the paper; ``needs_losses_after_step``).
    In the mapping form they are unknown, and the next step's losses stand in for them: the
    logits learn from the pair of consecutive steps (two different batches) one step late.
    A task absent from a step keeps its logit and optimizer state; the mapping form pairs a
    task's loss only with the very next step's.

    Args:
        lr: learning rate of the logits' Adam (0.025, as the paper).
        gamma: weight decay of that Adam (1e-3; see above).
        min_losses: the lower bound L_min of the losses (0), one value for all tasks or
            task → value (a task not named gets 0); every loss must stay above it.

    >>> famo = FAMO()
    >>> before, after = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 2.9])
    >>> famo(before, ["seg", "depth"])
    tensor([0.7500, 0.2500])
    >>> famo.update(before, ["seg", "depth"], losses_after=after)  # depth fell less
    >>> famo(before, ["seg", "depth"])
    tensor([0.7405, 0.2595])
    """

    name: ClassVar[str] = "famo"
    summary: ClassVar[str] = (
        "Balance the tasks' rates of log-loss decrease with learned logits (Liu et al., "
        "NeurIPS 2023)."
    )
    needs_losses_after_step: ClassVar[bool] = True
    initial_value: ClassVar[float] = 0.0
    task_buffers: ClassVar[dict[str, tuple[tuple[int, ...], torch.dtype | None, float]]] = {
        "pending_losses": ((), None, 0.0),
    }

    pending_losses: Tensor

    def __init__(
        self,
        *,
        lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: float | Mapping[str, float] = 0.0,
    ) -> None:
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(
                f"`gamma` (the logits' weight decay) must be non-negative and finite; got "
                f"{gamma}. The default is 1e-3."
            )
        super().__init__(optimizer="adam", lr=lr, weight_decay=gamma)
        bounds = min_losses.values() if isinstance(min_losses, Mapping) else [min_losses]
        for bound in bounds:
            if not math.isfinite(bound):
                raise ValueError(f"`min_losses` must be finite; got {min_losses}.")
        self.gamma = gamma
        self.min_losses = dict(min_losses) if isinstance(min_losses, Mapping) else min_losses
        # The tasks of the previous mapping-form step, whose ``pending_losses`` await the next.
        self._pending_tasks: list[str] = []

    @property
    def logits(self) -> dict[str, float]:
        """Task → its learned logit ξ_t."""
        return self.task_values()

    def _shifted(self, losses: Tensor, tasks: Sequence[str], what: str) -> Tensor:
        """[K] D = L − L_min + ε, checked positive."""
        if isinstance(self.min_losses, Mapping):
            bounds = [float(self.min_losses.get(task, 0.0)) for task in tasks]
        else:
            bounds = [float(self.min_losses)] * len(tasks)
        shifted = losses - torch.tensor(bounds, dtype=losses.dtype, device=losses.device)
        shifted = shifted + _EPSILON
        checks = zip(tasks, losses.tolist(), shifted.tolist(), bounds, strict=True)
        for task, loss, value, bound in checks:
            if not value > 0:
                raise ValueError(
                    f"FAMO takes the log of each loss minus its lower bound; task {task!r} has "
                    f"{what} {loss}, not above its `min_losses` {bound}. Set `min_losses` to a "
                    "lower bound of that loss."
                )
        return shifted

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] weights (z_t / D_t) / Σ_s (z_s / D_s), summing to 1."""
        shifted = self._shifted(losses, tasks, "loss")
        return famo_weights(self.parameter_values(tasks, losses), shifted)

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """One Adam step on the logits from the decrease of the log-losses over the step."""
        values = losses.detach()
        rows = self.register_tasks(tasks, values)
        if losses_after is not None:
            if losses_after.shape != values.shape:
                raise ValueError(
                    f"`losses_after` must have one value per task, shape {tuple(values.shape)}; "
                    f"got {tuple(losses_after.shape)}."
                )
            self._pending_tasks = []
            self._learn(rows, tasks, values, losses_after.detach().to(values))
            return
        # Mapping form: this step's losses are the "after" of the previous step's tasks.
        paired = [k for k, task in enumerate(tasks) if task in self._pending_tasks]
        if paired:
            before = self.read("pending_losses", rows[paired]).to(values)
            self._learn(rows[paired], [tasks[k] for k in paired], before, values[paired])
        self.write("pending_losses", rows, values)
        self._pending_tasks = list(tasks)

    def _learn(self, rows: Tensor, tasks: Sequence[str], before: Tensor, after: Tensor) -> None:
        decrease = torch.log(self._shifted(before, tasks, "loss")) - torch.log(
            self._shifted(after, tasks, "loss after the step")
        )

        def objective(logits: Tensor) -> Tensor:
            # Its gradient J_softmax(ξ)ᵀ δ is the official update direction.
            return (torch.softmax(logits, dim=0) * decrease.to(logits)).sum()

        self.descend(rows, objective)

    def reset(self) -> None:
        """Forget every task, its logit, the logits' Adam state and any pending loss."""
        super().reset()
        self._pending_tasks = []

    def get_extra_state(self) -> dict[str, Any]:
        """The task order, Adam's state and the tasks whose losses await the next step."""
        return {**super().get_extra_state(), "pending_tasks": list(self._pending_tasks)}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        super().set_extra_state(state)
        self._pending_tasks = [str(task) for task in state["pending_tasks"]]

    def extra_repr(self) -> str:
        """The options."""
        bounds = "" if self.min_losses == 0.0 else f", min_losses={self.min_losses}"
        return f"lr={self.lr}, gamma={self.gamma}{bounds}"
