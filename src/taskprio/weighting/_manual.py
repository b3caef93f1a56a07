"""Manual weighting: fixed, user-stated loss weights per task."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("manual")
class Manual(Weighting):
    """Fixed loss weights stated by the user: the simplest statement of task priority.

    Args:
        weights: task → weight (finite, ≥ 0). A task not named gets ``default``.
        default: the weight of tasks missing from ``weights``; None makes a missing task an error.

    >>> Manual(weights={"seg": 1.0, "normal": 10.0})(torch.tensor([0.3, 0.2]), ["seg", "normal"])
    tensor([ 1., 10.])
    """

    name: ClassVar[str] = "manual"
    summary: ClassVar[str] = "Fixed user-stated loss weights per task."

    def __init__(self, *, weights: Mapping[str, float], default: float | None = 1.0) -> None:
        super().__init__()
        for task, weight in weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"`weights[{task!r}]` must be finite and non-negative; got {weight}."
                )
        if default is not None and (not math.isfinite(default) or default < 0):
            raise ValueError(f"`default` must be finite and non-negative; got {default}.")
        self.weights = dict(weights)
        self.default = default

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] the stated weights in task order."""
        values = []
        for task in tasks:
            if task in self.weights:
                values.append(float(self.weights[task]))
            elif self.default is not None:
                values.append(self.default)
            else:
                raise KeyError(
                    f"Manual weighting has no weight for task {task!r}; it knows "
                    f"{sorted(self.weights)}. Add it to `weights` or set `default`."
                )
        return torch.tensor(values, dtype=losses.dtype, device=losses.device)

    def extra_repr(self) -> str:
        """Shows the stated weights."""
        return f"weights={self.weights}" + (
            "" if self.default == 1.0 else f", default={self.default}"
        )
