"""PaMaL: Pareto Manifold Learning with an ensemble of m networks, θ(α) = Σ_i α_i θ_i.

Dimitriadis et al., "Pareto Manifold Learning: Tackling multiple tasks via ensembles of
single-task models" (ICML 2023, arXiv 2210.09759). One full network per task; the network at
α has every parameter (norm weights and biases included) the α-weighted sum of the members'.
Training is the same as LORPMAN's without the low-rank terms: α ~ Dir(p), α-weighted losses
over a window of forwards, and the multi-forward regularizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from taskprio.pareto._method import PARETO_METHODS, MultiForwardMethod
from taskprio.pareto._model import ParameterCount, ParetoModel, check_preference


class PaMaLModel(ParetoModel):
    """m networks of one architecture; θ(α) = Σ_i α_i θ_i, so θ(e_i) is member i exactly.

    The forward runs the first member's modules with the merged parameters
    (``torch.func.functional_call``). Buffers are not merged: the norms' running statistics
    are the first member's, shared by every α and updated by every training forward, as the
    statistics of LORPMAN's main network are.

    Args:
        members: m networks with the same parameter names and shapes, one per task, each
            ``forward(x) -> {task: output}``; distinct objects (their initializations may
            differ).
        tasks: the task names; ``members[i]`` is the network of ``tasks[i]``.

    >>> from taskprio.models import MultiTaskMLP
    >>> members = [MultiTaskMLP(5, {"a": 1, "b": 1}, hidden_sizes=(8,), head_hidden=0)
    ...            for _ in range(2)]
    >>> model = PaMaLModel(members, ["a", "b"])
    >>> model.parameter_count()
    ParameterCount(main=74, extra=74)
    >>> x = torch.randn(3, 5)
    >>> torch.equal(model.eval()(x, torch.tensor([0.0, 1.0]))["a"], members[1](x)["a"])
    True
    """

    def __init__(self, members: Sequence[nn.Module], tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        if len(members) != self.num_tasks:
            raise ValueError(
                f"`members` must hold one network per task ({self.num_tasks}); got {len(members)}."
            )
        if len({id(member) for member in members}) != len(members):
            raise ValueError("`members` must be distinct networks; the same one is repeated.")
        shapes = [
            [(name, tuple(p.shape)) for name, p in member.named_parameters()] for member in members
        ]
        for index, member_shapes in enumerate(shapes[1:], start=1):
            if member_shapes != shapes[0]:
                raise ValueError(
                    f"`members[{index}]` differs from `members[0]` in its parameter names or "
                    "shapes; PaMaL merges networks of one architecture."
                )
        self.members = nn.ModuleList(members)
        self.parameter_names = [name for name, _ in shapes[0]]

    def merged_parameters(self, preference: Tensor) -> dict[str, Tensor]:
        """Name → Σ_i α_i θ_i[name], for every parameter of the architecture.

        Args:
            preference: [m] α.
        """
        member_parameters = [dict(member.named_parameters()) for member in self.members]
        merged = {}
        for name in self.parameter_names:
            stacked = torch.stack([parameters[name] for parameters in member_parameters])
            alpha = preference.to(device=stacked.device, dtype=stacked.dtype)  # [m]
            merged[name] = torch.tensordot(alpha, stacked, dims=1)  # [*shape]
        return merged

    def forward(self, x: Tensor, preference: Tensor) -> dict[str, Tensor]:
        """The outputs of θ(α) = Σ_i α_i θ_i.

        Args:
            x: [B, ...] inputs.
            preference: [m] α on the simplex.

        Returns:
            Per task, the output of θ(α) for the batch.
        """
        check_preference(preference, self.num_tasks)
        outputs: dict[str, Tensor] = functional_call(
            self.members[0], self.merged_parameters(preference), (x,)
        )
        return outputs

    def parameter_count(self) -> ParameterCount:
        """Main = one member, extra = the m − 1 others (m·|θ| in all)."""
        sizes = [sum(p.numel() for p in member.parameters()) for member in self.members]
        return ParameterCount(main=sizes[0], extra=sum(sizes[1:]))


@PARETO_METHODS.register("pamal")
class PaMaL(MultiForwardMethod):
    """PaMaL training: m networks, α ~ Dir(p), α-weighted losses and the multi-forward term.

    Args:
        window: W, forwards per step (PaMaL: 4 MultiMNIST, 2 Census, 3 UTKFace).
        concentration: p (PaMaL: 1 MultiMNIST/Census, 2 UTKFace).
        multi_forward_weight: λ_p.
        tau: τ of R_p.
        gate: add λ_p R_p only when it is below the weighted loss.

    >>> PaMaL(window=4)
    PaMaL(window=4, concentration=1.0, multi_forward_weight=1.0, tau=1.0, gate=True)
    """

    name = "pamal"

    def __init__(
        self,
        *,
        window: int = 3,
        concentration: float = 1.0,
        multi_forward_weight: float = 1.0,
        tau: float = 1.0,
        gate: bool = True,
    ) -> None:
        super().__init__(
            window=window,
            concentration=concentration,
            multi_forward_weight=multi_forward_weight,
            tau=tau,
            gate=gate,
        )

    def build(self, make_model: Callable[[], nn.Module], tasks: Sequence[str]) -> PaMaLModel:
        """M networks from ``make_model`` (each its own initialization)."""
        return PaMaLModel([make_model() for _ in tasks], tasks)
