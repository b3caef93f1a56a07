"""MGDA (Désidéri 2012; Sener & Koltun, arXiv 1810.04650) and its upper-bound variant MGDA-UB."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod


def mgda_weights(gramian: Tensor, *, epsilon: float = 1e-3, max_iters: int = 100) -> Tensor:
    """The min-norm point of the convex hull of the rows, by Frank–Wolfe on their Gramian.

    torchjd's ``MGDAWeighting`` (Algorithm 2 of Sener & Koltun): start at 1/K, move towards the
    row with the smallest (Gw)ᵢ with the exact line search, stop when the step γ < ``epsilon``
    or after ``max_iters`` steps. The same iterations as torchjd's, run in float64 on the CPU
    with numpy (a K-vector per step: torch's per-operation overhead made the loop cost
    milliseconds), so the weights agree with torchjd's to rounding on a float64 Gramian.

    Args:
        gramian: [K, K] G = J Jᵀ.
        epsilon: step size below which the iteration stops.
        max_iters: cap on the iterations.

    Returns:
        [K] weights on the simplex (they sum to 1), on ``gramian``'s device and dtype.

    >>> import torch
    >>> mgda_weights(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.6000, 0.4000])
    """
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = gram.shape[0]
    alpha = np.full(num_tasks, 1.0 / num_tasks)
    for _ in range(max_iters):
        products = gram @ alpha  # [K] (Gα)ᵢ
        t = int(np.argmin(products))
        a = float(alpha @ gram[:, t])  # αᵀ G e_t
        b = float(alpha @ products)  # αᵀ G α
        c = float(gram[t, t])  # e_tᵀ G e_t
        if c <= a:
            gamma = 1.0
        elif b <= a:
            gamma = 0.0
        else:
            gamma = (b - a) / (b + c - 2.0 * a)
        alpha = (1.0 - gamma) * alpha
        alpha[t] += gamma
        if gamma < epsilon:
            break
    return torch.from_numpy(alpha).to(device=gramian.device, dtype=gramian.dtype)


@METHODS.register("mgda")
class MGDA(WeightedMethod):
    """MGDA: the minimum-norm convex combination of the task gradients.

    d = Σ_t α_t g_t with α on the simplex minimizing ‖d‖ (Désidéri 2012; Sener & Koltun,
    NeurIPS 2018, arXiv 1810.04650): a direction that decreases every task when one exists.

    Conventions:
        - The weights sum to 1, as torchjd and LibMTL; Nash-MTL's code scales them to sum to
          K ("make sure it sums to n_tasks"), a K times larger step.
        - No gradient normalization (Nash-MTL's and LibMTL's ``normalization="none"``): the
          rows are taken as given, i.e. already multiplied by the loss weights.
        - Solver: torchjd's Frank–Wolfe (``epsilon``, ``max_iters``), exact for two tasks; run
          in float64 with numpy, on the Gramian the step shares with its statistics.

    Args:
        epsilon: Frank–Wolfe step size below which it stops (default 1e-3, as torchjd).
        max_iters: cap on the Frank–Wolfe iterations (default 100).

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values; weights 0.6 and 0.4):

    >>> import torch
    >>> method = MGDA()
    >>> method(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0., 1., 1.])
    >>> [round(w, 4) for w in method.diagnostics()["task_weights"]]
    [0.6, 0.4]
    """

    name: ClassVar[str] = "mgda"
    summary: ClassVar[str] = (
        "MGDA: minimum-norm convex combination of the task gradients (weights sum to 1)."
    )

    def __init__(self, *, epsilon: float = 1e-3, max_iters: int = 100) -> None:
        super().__init__()
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"`epsilon` must be a positive number; got {epsilon!r}.")
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"`max_iters` must be a positive integer; got {max_iters!r}.")
        self.epsilon = float(epsilon)
        self.max_iters = max_iters

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] the min-norm weights (summing to 1)."""
        return mgda_weights(
            self.gramian(per_task_grads), epsilon=self.epsilon, max_iters=self.max_iters
        )

    def extra_repr(self) -> str:
        """The options."""
        return f"epsilon={self.epsilon}, max_iters={self.max_iters}"


@METHODS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB: MGDA's weights from the gradients of the shared representation.

    The "upper bound" variant of Sener & Koltun (§3.3): the weights α are computed on the
    [K, B·d] matrix of ∇_z L_t for the shared features z (one backward per task through the
    heads only), then one backward of Σ_t α_t L_t gives the trunk J_zᵀ Σ_t α_t ∇_z L_t. This is
    Nash-MTL's ``params="rep"``, LibMTL's ``rep_grad=True`` and Samsung's ``mgdaub``.

    Call the step with the representation: ``step({task: loss}, features=z)``. On a plain
    matrix it behaves as :class:`MGDA`.

    >>> import torch
    >>> import taskprio
    >>> trunk = torch.nn.Linear(3, 4)
    >>> heads = torch.nn.ModuleList([torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)])
    >>> model = torch.nn.ModuleDict({"trunk": trunk, "heads": heads})
    >>> step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1),
    ...                               ["a", "b"], method="mgda_ub")
    >>> z = trunk(torch.ones(2, 3))
    >>> record = step({"a": heads[0](z).mean(), "b": -heads[1](z).mean()}, features=z)
    >>> len(record.diagnostics["task_weights"])
    2
    """

    name: ClassVar[str] = "mgda_ub"
    summary: ClassVar[str] = (
        "MGDA-UB: MGDA weights from the gradients of the shared representation (one backward)."
    )
    uses_representation: ClassVar[bool] = True
