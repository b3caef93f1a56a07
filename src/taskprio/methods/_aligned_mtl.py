"""Aligned-MTL (Senushkin et al., CVPR 2023, arXiv 2305.19000) and its upper-bound variant."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod
from taskprio.methods._upgrad import check_pref_vector, preference_weights

ScaleMode = Literal["min", "median", "rmse"]


def aligned_mtl_weights(
    gramian: Tensor, preference: Tensor, *, scale_mode: ScaleMode = "min"
) -> Tensor:
    """Aligned-MTL's weights B u, with B = √σ V Λ^{-1/2} Vᵀ from G = V Λ Vᵀ.

    The aligned rows BJ are orthogonal with equal norms √σ ((BJ)(BJ)ᵀ = BGB = σVVᵀ), so their
    system has condition number 1; σ is the smallest (``"min"``), median (``"median"``) or
    mean (``"rmse"``) kept eigenvalue, and eigenvalues at most K·eps·λ_max are dropped. The
    update uᵀBJ has weights Bu. torchjd's ``AlignedMTLWeighting``, computed in float64.

    Args:
        gramian: [K, K] G = J Jᵀ.
        preference: [K] u, the weights of the aligned rows.
        scale_mode: σ, as above.

    Returns:
        [K] weights, on ``gramian``'s device and dtype.

    >>> G = torch.tensor([[18.0, -22.0], [-22.0, 38.0]])
    >>> aligned_mtl_weights(G, torch.tensor([0.5, 0.5]))
    tensor([0.5591, 0.4083])
    """
    # torchjd's computation, in float64 numpy on the CPU (a K×K eigendecomposition costs less
    # than torch's per-operation overhead around it); eigenvalues up to K·eps·λ_max of the
    # Gramian's own dtype count as zero, as there.
    num_tasks = gramian.shape[0]
    eps = torch.finfo(torch.promote_types(gramian.dtype, torch.float32)).eps
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    weights = preference.detach().to(device="cpu", dtype=torch.float64).numpy()
    eigenvalues, vectors = np.linalg.eigh(gram, UPLO="U")
    is_kept = eigenvalues > eigenvalues.max() * num_tasks * eps
    if is_kept.any():  # otherwise B is the identity
        order = np.argsort(-eigenvalues, kind="stable")[: int(is_kept.sum())]
        kept, basis = eigenvalues[order], vectors[:, order]  # descending
        if scale_mode == "min":
            scale = kept[-1]
        elif scale_mode == "median":
            scale = np.sort(kept)[(kept.size - 1) // 2]  # the lower median, as torch.median
        else:
            scale = kept.mean()
        balance = math.sqrt(scale) * (basis / np.sqrt(kept)) @ basis.T  # B
        weights = balance @ weights
    return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)


@METHODS.register("aligned_mtl")
class AlignedMTL(WeightedMethod):
    """Aligned-MTL: align the task gradients into an orthogonal system of equal norms, combine.

    Eigendecomposes the Gramian and rescales the principal components of the task gradients
    to a common norm (the smallest singular value by default), which makes the linear system
    of gradients perfectly conditioned (Algorithm 1 of Senushkin et al., CVPR 2023, arXiv
    2305.19000); see :func:`aligned_mtl_weights`.

    Conventions:
        - torchjd's ``AlignedMTL``: the aligned rows are *averaged* (preference 1/K). The
          official code and LibMTL sum them (``weights.sum(-1)``): K times larger; pass
          ``pref_vector=[1.0] * K`` for their scale.
        - ``scale_mode="min"`` by default, as the official code; eigenvalues below
          K·eps(dtype)·λ_max are dropped (the official code uses the float32 eps).

    Args:
        pref_vector: the weights u of the aligned rows; None (default) for 1/K each.
        scale_mode: ``"min"``, ``"median"`` or ``"rmse"``: the scale σ.

    Values on J = [[-4, 1, 1], [6, 1, 1]] (torchjd's pinned values):

    >>> import torch
    >>> AlignedMTL()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.2133, 0.9673, 0.9673])
    """

    name: ClassVar[str] = "aligned_mtl"
    summary: ClassVar[str] = (
        "Aligned-MTL: align the task gradients to a well-conditioned system, then average "
        "(Senushkin et al. 2023)."
    )

    def __init__(
        self, *, pref_vector: Sequence[float] | None = None, scale_mode: ScaleMode = "min"
    ) -> None:
        super().__init__()
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(
                f"`scale_mode` must be 'min' (the default), 'median' or 'rmse'; got {scale_mode!r}."
            )
        self.pref_vector = check_pref_vector(pref_vector)
        self.scale_mode: ScaleMode = scale_mode

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] Aligned-MTL's weights."""
        preference = preference_weights(
            self.pref_vector, per_task_grads, 1.0 / per_task_grads.shape[0]
        )
        return aligned_mtl_weights(
            self.gramian(per_task_grads), preference, scale_mode=self.scale_mode
        )

    def extra_repr(self) -> str:
        """The options."""
        return f"pref_vector={self.pref_vector}, scale_mode={self.scale_mode!r}"


@METHODS.register("aligned_mtl_ub")
class AlignedMTLUB(AlignedMTL):
    """Aligned-MTL-UB: Aligned-MTL's weights from the gradients of the shared representation.

    The weights are computed on the [K, B·d] matrix of ∇_z L_t for the shared features z, then
    one backward of Σ_t w_t L_t gives the trunk J_zᵀ Σ_t w_t ∇_z L_t (the official ``amtlub``
    balancer). Call the step as ``step({task: loss}, features=z)``; on a plain matrix it
    behaves as :class:`AlignedMTL`.

    >>> import taskprio
    >>> trunk = torch.nn.Linear(3, 4)
    >>> heads = torch.nn.ModuleList([torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)])
    >>> model = torch.nn.ModuleDict({"trunk": trunk, "heads": heads})
    >>> step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1),
    ...                               ["a", "b"], method=AlignedMTLUB())
    >>> z = trunk(torch.ones(2, 3))
    >>> record = step({"a": heads[0](z).mean(), "b": -heads[1](z).mean()}, features=z)
    >>> record.method, len(record.diagnostics["task_weights"])
    ('aligned_mtl_ub', 2)
    """

    name: ClassVar[str] = "aligned_mtl_ub"
    summary: ClassVar[str] = (
        "Aligned-MTL-UB: Aligned-MTL weights from the gradients of the shared representation."
    )
    uses_representation: ClassVar[bool] = True
