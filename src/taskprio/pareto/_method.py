"""What a Pareto-front learning method is: a model builder, a preference sampler, an objective.

Methods are registered by name in :data:`PARETO_METHODS` (``lorpman``, ``pamal``, ``cosmos``);
their constructor arguments are their options. The training loop
(:func:`~taskprio.pareto.train_pareto`) only calls the hooks of :class:`ParetoMethod`, so it
never tests a method's name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from taskprio._registry import Registry
from taskprio.pareto._model import ParetoModel
from taskprio.pareto._regularizers import multi_forward_regularizer


def sample_dirichlet(
    num_samples: int, num_tasks: int, *, concentration: float, generator: torch.Generator
) -> Tensor:
    """``num_samples`` preferences α ~ Dir(p·1_m), drawn from ``generator``.

    torch's Dirichlet takes no generator, so one 62-bit seed is drawn from ``generator`` and
    NumPy's (Gamma-based) Dirichlet sampler runs on it: the whole draw is a function of
    ``generator``'s state, which it advances.

    Args:
        num_samples: N.
        num_tasks: m.
        concentration: p > 0; large p concentrates α at the centroid, small p at the vertices.
        generator: a CPU generator.

    Returns:
        [N, m] float64 on the CPU, rows on the simplex.

    >>> alphas = sample_dirichlet(1000, 3, concentration=1.0,
    ...                           generator=torch.Generator().manual_seed(0))
    >>> alphas.shape, bool(torch.allclose(alphas.sum(1), torch.ones(1000, dtype=torch.float64)))
    (torch.Size([1000, 3]), True)
    """
    if num_samples < 0 or num_tasks < 1:
        raise ValueError(
            f"`num_samples` must be non-negative and `num_tasks` positive; got {num_samples} "
            f"and {num_tasks}."
        )
    if not (math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"`concentration` must be positive and finite, but got {concentration}.")
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    draws = np.random.default_rng(seed).dirichlet(np.full(num_tasks, concentration), num_samples)
    return torch.from_numpy(draws)  # [N, m] float64


@dataclass
class Objective:
    """One step's training loss and its parts.

    Attributes:
        loss: the scalar to back-propagate.
        terms: name → value of each part (``weighted_loss``, regularizers), for logging.
    """

    loss: Tensor
    terms: dict[str, float] = field(default_factory=dict)


class ParetoMethod(ABC):
    """A Pareto-front learning method: how to build the model, sample α and form the loss.

    Each step of :func:`~taskprio.pareto.train_pareto` draws W preferences
    (:meth:`sample_preferences`), runs one forward of the batch per preference, stacks the
    per-task losses into [W, m] and back-propagates :meth:`objective`. :meth:`on_epoch_start`
    may change the model or optimizer between epochs (LORPMAN freezes its main network).

    Args:
        window: W, forwards (preferences) per step.
        concentration: p of the Dirichlet the preferences are drawn from.

    Attributes:
        name: the registry key.
    """

    name: ClassVar[str]

    def __init__(self, *, window: int, concentration: float) -> None:
        if window < 1:
            raise ValueError(f"`window` must be positive, but got {window}.")
        if not (math.isfinite(concentration) and concentration > 0):
            raise ValueError(
                f"`concentration` must be positive and finite, but got {concentration}."
            )
        self.window = window
        self.concentration = concentration

    @abstractmethod
    def build(self, make_model: Callable[[], nn.Module], tasks: Sequence[str]) -> ParetoModel:
        """The Pareto-front model around fresh networks from ``make_model``.

        Args:
            make_model: returns a new network with ``forward(x) -> {task: output}``; PaMaL
                calls it once per task, the others once.
            tasks: the task names, in preference order.
        """

    def sample_preferences(self, num_tasks: int, generator: torch.Generator) -> Tensor:
        """[W, m] float64 preferences for one step, α ~ Dir(p·1_m)."""
        return sample_dirichlet(
            self.window, num_tasks, concentration=self.concentration, generator=generator
        )

    @abstractmethod
    def objective(
        self,
        model: ParetoModel,
        preferences: Tensor,
        losses: Tensor,
        *,
        generator: torch.Generator,
    ) -> Objective:
        """The step's loss from the W forwards.

        Args:
            model: the model being trained.
            preferences: [W, m] the preferences of the forwards (on the losses' device).
            losses: [W, m] their per-task losses.
            generator: for random choices (LORPMAN's task subset).
        """

    def on_epoch_start(
        self,
        model: ParetoModel,
        optimizer: torch.optim.Optimizer,
        *,
        epoch: int,
        epochs: int,
    ) -> None:
        """Called before each epoch ``epoch`` of ``epochs``; nothing by default."""
        del model, optimizer, epoch, epochs

    def options(self) -> dict[str, Any]:
        """The constructor arguments (JSON-friendly), as recorded in a run."""
        return {"window": self.window, "concentration": self.concentration}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{type(self).__name__}({arguments})"

    def __str__(self) -> str:
        return type(self).__name__


class MultiForwardMethod(ParetoMethod):
    """The PaMaL objective: J = Σ_w α^w·ℓ^w plus the multi-forward regularizer.

    ``loss = J + λ_p R_p`` (:func:`~taskprio.pareto.multi_forward_regularizer`); with ``gate``
    (PaMaL's trainer) λ_p R_p is added only when it is below J. Subclasses add their own terms
    through :meth:`extra_terms`.

    Args:
        window: W, forwards per step.
        concentration: p of Dir(p·1_m).
        multi_forward_weight: λ_p ≥ 0 (0 turns R_p off).
        tau: τ > 0 of R_p.
        gate: add λ_p R_p only when it is below J.
    """

    def __init__(
        self,
        *,
        window: int,
        concentration: float,
        multi_forward_weight: float,
        tau: float,
        gate: bool,
    ) -> None:
        super().__init__(window=window, concentration=concentration)
        if not (math.isfinite(multi_forward_weight) and multi_forward_weight >= 0):
            raise ValueError(
                f"`multi_forward_weight` must be non-negative, but got {multi_forward_weight}."
            )
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"`tau` must be positive, but got {tau}.")
        self.multi_forward_weight = multi_forward_weight
        self.tau = tau
        self.gate = gate

    def objective(
        self,
        model: ParetoModel,
        preferences: Tensor,
        losses: Tensor,
        *,
        generator: torch.Generator,
    ) -> Objective:
        """J + λ_p R_p (gated) + the subclass's terms."""
        alphas = preferences.to(device=losses.device, dtype=losses.dtype)
        weighted = (alphas * losses).sum()  # J, summed over the window as in PaMaL
        loss = weighted
        terms = {"weighted_loss": float(weighted.detach())}
        if self.multi_forward_weight > 0 and len(losses) > 1:
            penalty = self.multi_forward_weight * multi_forward_regularizer(
                alphas, losses, tau=self.tau
            )
            terms["multi_forward"] = float(penalty.detach())
            if not self.gate or terms["multi_forward"] < terms["weighted_loss"]:
                loss = loss + penalty
        for name, term in self.extra_terms(model, generator=generator).items():
            terms[name] = float(term.detach())
            loss = loss + term
        return Objective(loss, terms)

    def extra_terms(self, model: ParetoModel, *, generator: torch.Generator) -> dict[str, Tensor]:
        """Further weighted terms of the loss, by name (none here)."""
        del model, generator
        return {}

    def options(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {
            **super().options(),
            "multi_forward_weight": self.multi_forward_weight,
            "tau": self.tau,
            "gate": self.gate,
        }


PARETO_METHODS: Registry[ParetoMethod] = Registry("Pareto method")


def available_pareto_methods() -> list[str]:
    """The registry keys of the Pareto-front methods.

    >>> available_pareto_methods()
    ['cosmos', 'lorpman', 'pamal']
    """
    return PARETO_METHODS.names()


def get_pareto_method(name: str, **options: Any) -> ParetoMethod:
    """The method registered as ``name`` with ``options`` as constructor arguments.

    >>> get_pareto_method("lorpman", rank=4).rank
    4
    """
    return PARETO_METHODS.create(name, **options)
