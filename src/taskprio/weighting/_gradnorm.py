"""GradNorm: learn loss weights that equalize the tasks' training rates (Chen et al.)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS
from taskprio.weighting._per_task import LearnableWeighting, OptimizerName

logger = logging.getLogger(__name__)


def gradnorm_objective(
    weights: Tensor, grad_norms: Tensor, loss_ratios: Tensor, alpha: float
) -> Tensor:
    """The GradNorm loss L_grad = Σ_t |G_t − Ḡ · r_t^α| (Eq. 2 of the paper).

    G_t = w_t ‖∇_W L_t‖ is the norm of task t's weighted gradient, Ḡ its mean over the tasks,
    r_t = L̃_t / mean(L̃) the relative inverse training rate from the loss ratios
    L̃_t = L_t / L_t(0). The target Ḡ r_t^α is a constant (detached), as in the paper, so the
    gradient is ∂L_grad/∂w_t = sign(G_t − Ḡ r_t^α) ‖∇_W L_t‖.

    Args:
        weights: [K] the loss weights w (differentiable).
        grad_norms: [K] ‖∇_W L_t‖ of the unweighted losses.
        loss_ratios: [K] L_t / L_t(0).
        alpha: the asymmetry α.

    Returns:
        The scalar L_grad.

    >>> w = torch.ones(2, requires_grad=True)
    >>> gradnorm_objective(w, torch.tensor([1.0, 3.0]), torch.ones(2), alpha=1.5)
    tensor(2., grad_fn=<SumBackward0>)
    """
    norms = weights * grad_norms
    relative_rates = loss_ratios / loss_ratios.mean()
    target = (norms.mean() * relative_rates.pow(alpha)).detach()
    return (norms - target).abs().sum()


@WEIGHTINGS.register("gradnorm")
class GradNorm(LearnableWeighting):
    """GradNorm: Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018, arXiv 1711.02257.

    Learnable loss weights w_t, starting at 1, used as they are for the step (Algorithm 1:
    the network's update uses w(t)). After the optimizer step, :meth:`update` takes one step of
    the weighting's own optimizer on w down L_grad (see :func:`gradnorm_objective`), using
    ``grad_norms`` (‖∇L_t‖ over the shared parameters, which :class:`~taskprio.MultiTaskStep`
    passes because ``needs_grad_norms``; the paper uses the last shared layer, we use all
    shared parameters) and the loss ratios L_t / L_t(0), where L_t(0) is the first loss
    ``update`` saw for task t. Then the present tasks' weights are rescaled to keep their sum
    (so the weights **sum to K**, the number of tasks, when every step has every task) and kept
    non-negative (the paper does not say; a negative weight would ascend its loss).

    A step without per-task gradients (``grad_norms`` None, e.g. CSO's Phase 1 or a
    representation-level method) records L(0) but does not learn. Losses must be positive.
    LibMTL differs: it parametrizes w = K · softmax(ξ) and starts learning at epoch 1.

    Args:
        alpha: the asymmetry α (default 1.5): 0 equalizes the weighted gradient norms; a larger
            α pulls harder towards equal training rates.
        lr: learning rate of the optimizer over w (0.025, as the learnable weights of
            :class:`Uncertainty` and FAMO).
        optimizer: ``"adam"`` (default) or ``"sgd"``.

    >>> gradnorm = GradNorm(optimizer="sgd", lr=0.1)
    >>> losses = torch.tensor([1.0, 1.0])
    >>> gradnorm(losses, ["a", "b"])
    tensor([1., 1.])
    >>> gradnorm.update(losses, ["a", "b"], grad_norms=torch.tensor([1.0, 3.0]))
    >>> gradnorm(losses, ["a", "b"])  # b's gradient was larger: its weight shrinks
    tensor([1.2222, 0.7778])
    """

    name: ClassVar[str] = "gradnorm"
    summary: ClassVar[str] = (
        "Learn weights that equalize the tasks' training rates (Chen et al., ICML 2018)."
    )
    needs_grad_norms: ClassVar[bool] = True
    initial_value: ClassVar[float] = 1.0
    task_buffers: ClassVar[dict[str, tuple[tuple[int, ...], torch.dtype | None, float]]] = {
        "initial_losses": ((), None, 1.0),
    }

    initial_losses: Tensor

    def __init__(
        self, *, alpha: float = 1.5, lr: float = 0.025, optimizer: OptimizerName = "adam"
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(
                f"`alpha` must be non-negative and finite; got {alpha}. The default is 1.5."
            )
        self.alpha = alpha

    @property
    def weights(self) -> dict[str, float]:
        """Task → its learned loss weight w_t."""
        return self.task_values()

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] the learned weights (1 for a task not seen yet)."""
        return self.parameter_values(tasks, losses)

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """Record L(0) of new tasks, then one step of w down L_grad and the renormalization."""
        values = losses.detach()
        new = [k for k, row in enumerate(self.rows(tasks)) if row is None]
        for k in new:
            if not float(values[k]) > 0:
                raise ValueError(
                    f"GradNorm's loss ratios L_t / L_t(0) need positive losses; task "
                    f"{tasks[k]!r} starts at {float(values[k])}. Use a positive loss."
                )
        rows = self.register_tasks(tasks, values)
        if new:
            self.write("initial_losses", rows[new], values[new])
        if grad_norms is None:
            logger.debug("GradNorm: no gradient norms in this step; the weights do not learn.")
            return
        if grad_norms.shape != values.shape:
            raise ValueError(
                f"`grad_norms` must have one value per task, shape {tuple(values.shape)}; got "
                f"{tuple(grad_norms.shape)}."
            )
        ratios = values / self.read("initial_losses", rows).to(values)
        norms = grad_norms.detach()
        parameters = [self.task_parameters[int(row)] for row in rows]
        total_before = torch.stack([p.detach() for p in parameters]).sum()

        def objective(weights: Tensor) -> Tensor:
            return gradnorm_objective(
                weights, norms.to(weights), ratios.to(weights), alpha=self.alpha
            )

        self.descend(rows, objective)
        with torch.no_grad():
            stepped = torch.stack([p.detach() for p in parameters]).clamp_min(0)
            total_after = stepped.sum()
            # Renormalize (Algorithm 1, last line) so the present tasks keep their total.
            if total_after > 0:
                stepped = stepped * (total_before / total_after)
            else:
                stepped = torch.full_like(stepped, float(total_before) / len(parameters))
            for parameter, value in zip(parameters, stepped, strict=True):
                parameter.copy_(value)

    def extra_repr(self) -> str:
        """The options."""
        return f"alpha={self.alpha}, " + super().extra_repr()
