"""PCGrad: gradient surgery (Yu et al., NeurIPS 2020, arXiv 2001.06782)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod


def pcgrad_weights(gramian: Tensor, order: Tensor) -> Tensor:
    """PCGrad's task weights, computed from the Gramian alone (torchjd's weight-space form).

    For each task i, g_i^PC starts at gᵢ; for j in ``order[i]`` (skipping i), if
    g_i^PC·gⱼ < 0 then g_i^PC −= (g_i^PC·gⱼ / ‖gⱼ‖²) gⱼ (projection off the *original* gⱼ).
    Writing g_i^PC = Σₖ cᵢₖ gₖ, every product is read from G, so the result is Σᵢ cᵢ.

    Args:
        gramian: [K, K] G = J Jᵀ.
        order: [K, K] row i a permutation of 0..K−1: the order in which task i visits the
            others.

    Returns:
        [K] weights w with Σᵢ g_i^PC = wᵀJ, on ``gramian``'s device and dtype.

    >>> G = torch.tensor([[18.0, -22.0], [-22.0, 38.0]])
    >>> pcgrad_weights(G, torch.tensor([[0, 1], [1, 0]]))
    tensor([2.2222, 1.5789])
    """
    # On the CPU, in float64 numpy: K² scalar steps, each a branch on a sign, cost more as
    # torch operations (about 10 µs each) or GPU launches.
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = gram.shape[0]
    weights = np.zeros(num_tasks)
    for i, row in enumerate(order.tolist()):
        coefficients = np.zeros(num_tasks)
        coefficients[i] = 1.0
        for j in row:
            if j == i:
                continue
            inner_product = float(gram[j] @ coefficients)  # g_i^PC · g_j
            # inner_product < 0 implies ‖g_j‖² > 0.
            if inner_product < 0.0:
                coefficients[j] -= inner_product / gram[j, j]
        weights += coefficients
    return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)


@METHODS.register("pcgrad")
class PCGrad(WeightedMethod):
    """PCGrad: project each task gradient off the gradients it conflicts with, then sum.

    For each task, in a random order of the other tasks, a conflicting component (negative
    inner product) is removed by projecting onto the normal plane of the other task's original
    gradient (Algorithm 1 of Yu et al., NeurIPS 2020, arXiv 2001.06782). Rows that conflict
    with no other are unchanged, so without conflict PCGrad is :class:`~taskprio.methods.Sum`.

    Conventions:
        - Sum, not mean, of the projected rows: Algorithm 1 of the paper, torchjd, LibMTL and
          Nash-MTL (``reduction="sum"``). Pytorch-PCGrad (WeiChengTseng) averages them by
          default, a K times smaller step.
        - The random orders come from the method's own generator, seeded by ``seed`` and saved
          in ``state_dict()``, so a resumed run and every DDP rank draw the same orders
          (torchjd uses the global torch generator). One ``randperm(K)`` per task per call, as
          torchjd: the same draws as torchjd's after ``torch.manual_seed(seed)``.

    Args:
        seed: seeds the generator of the projection orders.

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values; weights 2.2222, 1.5789):

    >>> PCGrad()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.5848, 3.8012, 3.8012])
    """

    name: ClassVar[str] = "pcgrad"
    summary: ClassVar[str] = (
        "PCGrad: project conflicting task gradients off each other, then sum (Yu et al. 2020)."
    )

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        self.seed = check_seed(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] PCGrad's weights, drawing K orders from the generator."""
        num_tasks = per_task_grads.shape[0]
        order = torch.stack(
            [torch.randperm(num_tasks, generator=self.generator) for _ in range(num_tasks)]
        )
        return pcgrad_weights(self.gramian(per_task_grads), order)

    def get_extra_state(self) -> dict[str, Any]:
        """The generator state, so a resumed run draws the same orders."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        """The options."""
        return f"seed={self.seed}"


def check_seed(seed: int) -> int:
    """Validate a ``seed`` option (the generators of PCGrad, GradDrop and GradVac)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63); got {seed!r}.")
    return seed
