"""Random loss weighting: fresh softmax-normal weights every step (Lin et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("rlw")
class RLW(Weighting):
    """Random loss weighting: Lin et al., TMLR 2022, arXiv 2111.10603 (Algorithm 2, RLW-N).

    Every call draws K standard normal values z from the weighting's own seeded
    ``torch.Generator`` (on the CPU, in the losses' dtype) and returns softmax(z): the weights
    are positive and **sum to 1**, as in the paper, LibMTL and ``torchjd.scalarization.Random``
    (with the same seed, the same draws). K is the number of tasks present in the step, so a
    step without some tasks draws fewer values. The generator's state is saved in
    ``state_dict()``; give every rank the same ``seed`` so all draw alike.

    Args:
        seed: seed of the generator.

    >>> rlw = RLW(seed=0)
    >>> weights = rlw(torch.tensor([0.5, 2.0, 1.0]), ["a", "b", "c"])
    >>> weights
    tensor([0.8446, 0.1349, 0.0205])
    >>> float(weights.sum())
    1.0
    """

    name: ClassVar[str] = "rlw"
    summary: ClassVar[str] = "Softmax of standard normal draws each step (Lin et al., TMLR 2022)."

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an integer; got {seed!r}.")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] softmax of K fresh standard normal draws."""
        # Drawn on the CPU so the sequence does not depend on the device.
        draws = torch.randn(len(tasks), generator=self.generator, dtype=losses.dtype)
        return torch.softmax(draws, dim=0).to(losses.device)

    def reset(self) -> None:
        """Reseed the generator: the next draws repeat those of a fresh weighting."""
        self.generator.manual_seed(self.seed)

    def get_extra_state(self) -> dict[str, Any]:
        """The generator's state, so a resumed run draws the same weights."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        """The seed."""
        return f"seed={self.seed}"
