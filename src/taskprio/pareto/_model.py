"""The interface every Pareto-front model shares: one network per preference α on the simplex."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from taskprio.nn._task_norm import check_tasks

# How far the entries of a preference may sum from 1 (float32 rounding of grid points and
# Dirichlet draws stays far below it).
SIMPLEX_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParameterCount:
    """The trainable size of a Pareto-front model.

    Attributes:
        main: the parameters of the underlying network (one network's worth).
        extra: what the method adds on top: low-rank matrices (LORPMAN), the other m − 1
            networks (PaMaL), the preference inputs of the first layer (COSMOS).

    >>> ParameterCount(main=100, extra=20).total
    120
    """

    main: int
    extra: int

    @property
    def total(self) -> int:
        """``main + extra``."""
        return self.main + self.extra


def check_preference(preference: Tensor, num_tasks: int) -> Tensor:
    """Check that ``preference`` is one point α of the simplex over ``num_tasks`` tasks.

    Args:
        preference: [m] floating, non-negative entries summing to 1.
        num_tasks: m.

    Returns:
        ``preference`` unchanged.

    Raises:
        ValueError: wrong shape or dtype, a negative or non-finite entry, or a sum away from 1.

    >>> check_preference(torch.tensor([0.25, 0.75]), 2)
    tensor([0.2500, 0.7500])
    """
    if preference.shape != (num_tasks,) or not preference.is_floating_point():
        raise ValueError(
            f"`preference` must be a floating tensor of shape ({num_tasks},), one weight per "
            f"task; got {preference.dtype} of shape {tuple(preference.shape)}."
        )
    values = preference.detach().to(torch.float64)
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(
            f"`preference` must be finite and non-negative; got {preference.tolist()}."
        )
    if abs(float(values.sum()) - 1.0) > SIMPLEX_TOLERANCE:
        raise ValueError(
            f"`preference` must sum to 1 (a point of the simplex); got {preference.tolist()} "
            f"summing to {float(values.sum()):.6g}. Divide it by its sum."
        )
    return preference


class ParetoModel(nn.Module):
    """A network θ(α) for every preference α in the simplex over the tasks.

    Subclasses implement :meth:`forward` (the outputs of θ(α)) and :meth:`parameter_count`;
    :meth:`regularizer` adds a method-specific term to the training objective (zero here).

    Args:
        tasks: the task names, in the order of the preference's entries.

    Attributes:
        tasks: the task names; ``preference[i]`` weights ``tasks[i]``.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks)

    @property
    def num_tasks(self) -> int:
        """m, the number of tasks (and of preference entries)."""
        return len(self.tasks)

    def forward(self, x: Tensor, preference: Tensor) -> dict[str, Tensor]:
        """The outputs of the network θ(α) at ``preference``.

        Args:
            x: [B, ...] inputs.
            preference: [m] α on the simplex.

        Returns:
            Per task, the output of θ(α) for the batch.
        """
        raise NotImplementedError

    def parameter_count(self) -> ParameterCount:
        """The main network's parameters and the ones the method adds."""
        raise NotImplementedError


class AtPreference(nn.Module):
    """A :class:`ParetoModel` fixed at one preference: ``forward(x) -> {task: output}``.

    Lets code written for ordinary multi-task models (such as
    :func:`taskprio.data.evaluate`) run the network θ(α).

    Args:
        model: the Pareto-front model.
        preference: [m] α on the simplex.

    >>> from taskprio.models import MultiTaskMLP
    >>> from taskprio.pareto import LowRankParetoModel
    >>> mlp = MultiTaskMLP(3, {"a": 1, "b": 1}, hidden_sizes=(4,), head_hidden=0)
    >>> model = LowRankParetoModel(mlp, ["a", "b"], rank=1)
    >>> fixed = AtPreference(model, torch.tensor([1.0, 0.0]))
    >>> fixed(torch.zeros(4, 3))["a"].shape
    torch.Size([4, 1])
    """

    def __init__(self, model: ParetoModel, preference: Tensor) -> None:
        super().__init__()
        self.model = model
        self.preference = check_preference(preference, model.num_tasks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``model(x, preference)``."""
        outputs: dict[str, Tensor] = self.model(x, self.preference)
        return outputs
