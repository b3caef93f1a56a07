"""The base class of loss weightings and their registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from taskprio._registry import Registry


class Weighting(nn.Module, ABC):
    """Maps the K task losses of a step to K loss weights w_t.

    The step API scales task t's gradient by w_t before the method combines the gradients, so
    any weighting composes with any method. State lives in buffers or ``get_extra_state``.

    Class attributes:
        name: the registry key.
        summary: one line for ``taskprio methods``.
        needs_grad_norms: the step passes ``grad_norms`` (the norm of each task's unweighted
            gradient on the shared parameters) to :meth:`update` (GradNorm).
        needs_losses_after_step: the step passes ``losses_after`` (the same batch's losses
            re-evaluated after the optimizer step; closure form only) to :meth:`update` (FAMO).

    Stateful weightings learn in :meth:`update`, called once per step after the optimizer
    step, with the tasks present in that step only: a task without labels in a step keeps its
    state. A weighting with learnable parameters owns its own optimizer over them.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_grad_norms: ClassVar[bool] = False
    needs_losses_after_step: ClassVar[bool] = False

    def __call__(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """Check the input, then compute the weights.

        Args:
            losses: [K] detached loss values of the tasks present in this step.
            tasks: the K task names, in the order of ``losses``.
            epoch: the 0-based epoch, for weightings that change per epoch.

        Returns:
            [K] the loss weights, on the losses' device and dtype.
        """
        if losses.ndim != 1 or losses.shape[0] != len(tasks):
            raise ValueError(
                f"`losses` must be 1-D with one value per task ({len(tasks)}); "
                f"got shape {tuple(losses.shape)}."
            )
        weights: Tensor = super().__call__(losses.detach(), tasks, epoch=epoch)
        return weights

    @abstractmethod
    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] weights."""

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """Learn from the step that just ran; a no-op for stateless weightings.

        Args:
            losses: [K] this step's detached losses of the present tasks.
            tasks: the K present tasks, in the order of ``losses``.
            epoch: the 0-based epoch.
            grad_norms: [K] (``needs_grad_norms``) ‖∇ L_t‖ over the shared parameters, or None
                where the step formed no per-task gradients (CSO's Phase 1).
            losses_after: [K] (``needs_losses_after_step``) the losses after the step, or None
                where they could not be re-evaluated (mapping form).
        """


WEIGHTINGS: Registry[Weighting] = Registry("weighting")


def available() -> list[str]:
    """The registry keys of every loss weighting.

    >>> "equal" in available() and "manual" in available()
    True
    """
    return WEIGHTINGS.names()


def create(name: str, **options: Any) -> Weighting:
    """Build the weighting registered as ``name`` with its options.

    >>> create("manual", weights={"a": 2.0})
    Manual(weights={'a': 2.0})
    """
    return WEIGHTINGS.create(name, **options)
