"""GradVac: gradient vaccine (Wang et al., ICLR 2021, arXiv 2010.05874)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod
from taskprio.methods._pcgrad import check_seed


def gradvac_weights(
    gramian: Tensor, targets: Tensor, order: Tensor, *, beta: float, eps: float
) -> tuple[Tensor, Tensor]:
    """GradVac's task weights and updated similarity targets, from the Gramian alone.

    For each task i, g_i^PC starts at gᵢ; for j in ``order[i]``, with φ the cosine of g_i^PC
    and gⱼ and φ̂ = targets[i, j]: if φ < φ̂, add w gⱼ to g_i^PC with
    w = ‖g_i^PC‖ (φ̂√(1−φ²) − φ√(1−φ̂²)) / (‖gⱼ‖√(1−φ̂²)), which raises the cosine to φ̂; then
    (whether or not it corrected) φ̂ ← (1−β)φ̂ + βφ. The result is Σᵢ g_i^PC. This is
    torchjd's weight-space form (g_i^PC = Σₖ cᵢₖ gₖ), computed on G / tr(G) so that ``eps``
    is relative to the gradients' scale.

    Args:
        gramian: [K, K] G = J Jᵀ.
        targets: [K, K] the EMA targets φ̂ (zeros at the start).
        order: [K, K − 1] row i the other tasks in visiting order.
        beta: EMA rate β.
        eps: added to the denominators (on the trace-normalized Gramian).

    Returns:
        ``(weights [K] on gramian's device and dtype, targets [K, K] float64 on the CPU)``.

    >>> G = torch.tensor([[18.0, -22.0], [-22.0, 38.0]], dtype=torch.float64)
    >>> weights, targets = gradvac_weights(
    ...     G, torch.zeros(2, 2, dtype=torch.float64), torch.tensor([[1], [0]]), beta=0.5, eps=0.0)
    >>> weights  # targets at 0: the first call is PCGrad
    tensor([2.2222, 1.5789], dtype=torch.float64)
    >>> targets  # half of the cosine, -22/√(18·38)
    tensor([[ 0.0000, -0.4206],
            [-0.4206,  0.0000]], dtype=torch.float64)
    """
    # float64 numpy on the CPU: K(K − 1) scalar steps cost about 10 µs each as torch operations.
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    trace = float(np.trace(gram))
    if trace > 0.0:
        gram = gram / trace
    new_targets = targets.detach().to(device="cpu", dtype=torch.float64).tolist()
    num_tasks = gram.shape[0]
    norms = np.sqrt(np.clip(np.diagonal(gram), 0.0, None)).tolist()  # ‖g_j‖
    coefficients = np.eye(num_tasks)
    for i, row in enumerate(order.tolist()):
        own = coefficients[i]  # a view: g_i^PC = Σ_k own[k] g_k
        products = own @ gram  # [K] g_i^PC · g_k
        norm_i = math.sqrt(max(float(products @ own), 0.0))  # changes only with a correction
        for j in row:
            norm_j = norms[j]
            cosine = float(products[j]) / (norm_i * norm_j + eps)
            target = new_targets[i][j]
            if cosine < target:
                sine = math.sqrt(max(1.0 - cosine * cosine, 0.0))
                target_sine = math.sqrt(max(1.0 - target * target, 0.0))
                step = norm_i * (target * sine - cosine * target_sine)
                step = step / (norm_j * target_sine + eps)
                own[j] += step
                products = products + step * gram[j]
                norm_i = math.sqrt(max(float(products @ own), 0.0))
            new_targets[i][j] = (1.0 - beta) * target + beta * cosine
    weights = torch.from_numpy(coefficients.sum(axis=0))
    return weights.to(device=gramian.device, dtype=gramian.dtype), torch.tensor(
        new_targets, dtype=torch.float64
    ).reshape(num_tasks, num_tasks)


@METHODS.register("gradvac")
class GradVac(WeightedMethod):
    """GradVac: raise each pairwise gradient cosine to an EMA target, then sum.

    A generalization of PCGrad (Wang et al., ICLR 2021, arXiv 2010.05874): instead of removing
    only negative cosines, each task gradient is moved towards the other task's until their
    cosine reaches the exponential moving average φ̂ of the cosines seen so far (see
    :func:`gradvac_weights`). The first call (φ̂ = 0) is PCGrad.

    Conventions:
        - torchjd's form: sum of the corrected rows, φ̂ updated for every visited pair (LibMTL
          updates it only after a correction), one similarity per pair over the whole shared
          matrix (``parameter_groups`` of :class:`taskprio.MultiTaskStep` gives per-layer
          matrices, but they share these targets).
        - ``beta`` defaults to 0.5 and ``eps`` to 1e-8, as torchjd and LibMTL; ``eps`` acts on
          the trace-normalized Gramian, so the result does not depend on the gradients' scale
          (the 1e-8 of torchjd and LibMTL is absolute).
        - Targets are kept per pair of task *names* (positions when none are given), so a
          step where a task has no loss neither shifts nor resets the others' targets. They
          live in ``state_dict()`` with the generator of the visiting orders (``seed``);
          :meth:`reset` clears them.

    Args:
        beta: EMA rate of the targets, in [0, 1].
        eps: added to the denominators, ≥ 0.
        seed: seeds the generator of the visiting orders.

    >>> method = GradVac()
    >>> method(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))  # first call: PCGrad
    tensor([0.5848, 3.8012, 3.8012])
    """

    name: ClassVar[str] = "gradvac"
    summary: ClassVar[str] = (
        "GradVac: raise pairwise gradient cosines to their moving averages, then sum "
        "(Wang et al. 2021)."
    )

    def __init__(self, *, beta: float = 0.5, eps: float = 1e-8, seed: int = 0) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and 0 <= beta <= 1):
            raise ValueError(f"`beta` must be a number in [0, 1]; got {beta!r}.")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"`eps` must be a non-negative number; got {eps!r}.")
        self.beta = float(beta)
        self.eps = float(eps)
        self.seed = check_seed(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._task_names: list[str] = []
        self._targets = torch.zeros(0, 0, dtype=torch.float64)

    def reset(self) -> None:
        """Forget the targets (the generator goes on)."""
        self._task_names = []
        self._targets = torch.zeros(0, 0, dtype=torch.float64)

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] GradVac's weights; updates the targets of these tasks' pairs."""
        num_tasks = per_task_grads.shape[0]
        names = [str(t) for t in range(num_tasks)] if tasks is None else list(tasks)
        index = torch.tensor([self._target_index(name) for name in names])
        orders = []
        for i in range(num_tasks):
            others = [j for j in range(num_tasks) if j != i]
            permutation = torch.randperm(num_tasks - 1, generator=self.generator).tolist()
            orders.append([others[k] for k in permutation])
        order = torch.tensor(orders, dtype=torch.int64).reshape(num_tasks, num_tasks - 1)
        block = self._targets[index][:, index]
        weights, block = gradvac_weights(
            self.gramian(per_task_grads), block, order, beta=self.beta, eps=self.eps
        )
        self._targets[index.unsqueeze(1), index.unsqueeze(0)] = block
        return weights

    def _target_index(self, name: str) -> int:
        if name not in self._task_names:
            self._task_names.append(name)
            grown = torch.zeros(len(self._task_names), len(self._task_names), dtype=torch.float64)
            size = self._targets.shape[0]
            grown[:size, :size] = self._targets
            self._targets = grown
        return self._task_names.index(name)

    def targets(self) -> dict[tuple[str, str], float]:
        """The current targets φ̂ by (task, other task)."""
        return {
            (a, b): float(self._targets[i, j])
            for i, a in enumerate(self._task_names)
            for j, b in enumerate(self._task_names)
            if i != j
        }

    def get_extra_state(self) -> dict[str, Any]:
        """The generator state and the targets, so a resumed run goes on alike."""
        return {
            "generator": self.generator.get_state(),
            "tasks": list(self._task_names),
            "targets": self._targets.clone(),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self.generator.set_state(state["generator"])
        self._task_names = [str(name) for name in state["tasks"]]
        self._targets = state["targets"].to(device="cpu", dtype=torch.float64).clone()

    def extra_repr(self) -> str:
        """The options."""
        return f"beta={self.beta}, eps={self.eps}, seed={self.seed}"
