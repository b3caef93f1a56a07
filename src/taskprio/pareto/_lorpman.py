"""LORPMAN: a main network plus one low-rank matrix per task and layer (Chen & Kwok, ICML 2024).

"Efficient Pareto Manifold Learning with Low-Rank Structure" (arXiv 2407.20734) learns the
network W_l(α) = W0_l + s Σ_i α_i B_{i,l} A_{i,l} for every preference α at once. Training
draws α ~ Dir(p), minimizes the α-weighted loss with PaMaL's multi-forward regularizer, pushes
the low-rank products of different tasks towards orthogonality (3 random tasks per step when
there are more) and, from a freeze epoch on, trains the low-rank matrices only.

No official code was found; the reconstructed choices (which layers are adapted, the
initialization, the exact orthogonality term, freezing the BatchNorm statistics) are options
and are listed in ``docs/pareto.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from taskprio.pareto._layers import (
    ADAPTABLE_TYPES,
    LowRankInit,
    LowRankLayer,
    add_low_rank,
    using_preference,
)
from taskprio.pareto._method import PARETO_METHODS, MultiForwardMethod
from taskprio.pareto._model import ParameterCount, ParetoModel, check_preference
from taskprio.pareto._regularizers import low_rank_cosines, orthogonality_penalty

logger = logging.getLogger(__name__)

# The spec's default freeze epoch, as a fraction of the epochs (the UTKFace ablation: 80 of 100).
DEFAULT_FREEZE_FRACTION = 0.8


class LowRankParetoModel(ParetoModel):
    """A network with preference-conditioned Linear/Conv layers: W(α) = W0 + s Σ α_i B_i A_i.

    ``model`` is converted in place (:func:`~taskprio.pareto.add_low_rank`); its own
    parameters (weights W0, biases, norms) form the *main network*, shared by every α.

    Args:
        model: the multi-task network, ``forward(x) -> {task: output}``.
        tasks: the task names, in preference order (m = ``len(tasks)``).
        rank: r, clipped per layer to ``min(d_out, d_in)`` (a logged warning says where).
        scale: s ≥ 0; 0 (or rank 0) makes every θ(α) the main network.
        init: ``"kaiming"`` (A, B Kaiming-uniform ×1e-2) or ``"lora"`` (B = 0).
        include: ``(name, module) -> bool`` choosing the adapted layers; None: every Linear
            and Conv, heads included.
        generator: draws the initial factors; None: torch's global generator.
        freeze_norm_statistics: once :meth:`freeze_main` is called, keep the main network's
            BatchNorm layers in eval mode (running statistics fixed).

    Attributes:
        model: the converted network (a bare Linear/Conv is first put in ``nn.Sequential``).
        is_main_frozen: whether :meth:`freeze_main` was called.

    >>> from taskprio.models import MultiTaskMLP
    >>> net = LowRankParetoModel(MultiTaskMLP(5, {"a": 1, "b": 1}, hidden_sizes=(8,),
    ...                                       head_hidden=0), ["a", "b"], rank=2)
    >>> net.parameter_count()
    ParameterCount(main=74, extra=88)
    >>> sorted(net(torch.zeros(3, 5), torch.tensor([0.3, 0.7])))
    ['a', 'b']
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[str],
        *,
        rank: int = 8,
        scale: float = 1.0,
        init: LowRankInit = "kaiming",
        include: Callable[[str, nn.Module], bool] | None = None,
        generator: torch.Generator | None = None,
        freeze_norm_statistics: bool = True,
    ) -> None:
        super().__init__(tasks)
        # A bare layer cannot be replaced inside itself: put it in a container.
        container = nn.Sequential(model) if type(model) in ADAPTABLE_TYPES else model
        add_low_rank(
            container,
            self.num_tasks,
            rank=rank,
            scale=scale,
            init=init,
            include=include,
            generator=generator,
        )
        self.model = container
        self.rank = rank
        self.scale = scale
        self.is_main_frozen = False
        self.freeze_norm_statistics = freeze_norm_statistics

    @property
    def layers(self) -> list[LowRankLayer]:
        """The adapted layers, in module order."""
        return [module for module in self.model.modules() if isinstance(module, LowRankLayer)]

    def low_rank_parameters(self) -> Iterator[nn.Parameter]:
        """Every A and B."""
        for layer in self.layers:
            yield layer.lora_a
            yield layer.lora_b

    def main_parameters(self) -> Iterator[nn.Parameter]:
        """The main network's parameters: all but the low-rank factors."""
        low_rank = {id(parameter) for parameter in self.low_rank_parameters()}
        for parameter in self.model.parameters():
            if id(parameter) not in low_rank:
                yield parameter

    def parameter_count(self) -> ParameterCount:
        """Main = the network, extra = m·Σ_l r_l·(d_out + d_in)."""
        return ParameterCount(
            main=sum(parameter.numel() for parameter in self.main_parameters()),
            extra=sum(parameter.numel() for parameter in self.low_rank_parameters()),
        )

    def forward(self, x: Tensor, preference: Tensor) -> dict[str, Tensor]:
        """The outputs of W(α): one forward of the network with merged weights.

        Args:
            x: [B, ...] inputs.
            preference: [m] α on the simplex.

        Returns:
            Whatever the network returns: per task, its output for the batch.
        """
        check_preference(preference, self.num_tasks)
        with using_preference(self.model, preference):
            outputs: dict[str, Tensor] = self.model(x)
        return outputs

    def orthogonality(self, tasks: Sequence[int] | None = None) -> Tensor:
        """R_o = mean over layers of Σ_{i<j ∈ S} cos²(B_iA_i, B_jA_j).

        Args:
            tasks: the task indices S; None: all tasks.

        Returns:
            A scalar ≥ 0; exactly 0 with rank 0 or scale 0 (no low-rank part exists then).
        """
        layers = [layer for layer in self.layers if not layer.is_identity]
        if not layers:
            return next(self.model.parameters()).new_zeros(())
        penalties = []
        for layer in layers:
            a: Tensor = layer.lora_a  # [m, r, d_in]
            b: Tensor = layer.lora_b  # [m, d_out, r]
            if tasks is not None:
                index = torch.as_tensor(list(tasks), device=a.device)
                a, b = a.index_select(0, index), b.index_select(0, index)
            penalties.append(orthogonality_penalty(low_rank_cosines(a, b)))
        return torch.stack(penalties).mean()

    def freeze_main(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Fix the main network: no gradient, out of ``optimizer``, norm statistics frozen.

        Afterwards only the low-rank factors train; the main parameters and (with
        :attr:`freeze_norm_statistics`) the norms' running statistics stay bit-identical.

        Args:
            optimizer: the optimizer to remove the main parameters (and their state) from.
        """
        main = list(self.main_parameters())
        for parameter in main:
            parameter.requires_grad_(False)
            parameter.grad = None
        if optimizer is not None:
            remove_from_optimizer(optimizer, main)
        self.is_main_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> LowRankParetoModel:
        """Set train/eval mode; the main network's norms stay in eval once frozen."""
        super().train(mode)
        if self.is_main_frozen and self.freeze_norm_statistics:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.train(False)
        return self


def remove_from_optimizer(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> None:
    """Drop ``parameters`` (and their state) from every parameter group of ``optimizer``.

    >>> weight, bias = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    >>> optimizer = torch.optim.Adam([weight, bias])
    >>> remove_from_optimizer(optimizer, [bias])
    >>> [tuple(p.shape) for p in optimizer.param_groups[0]["params"]]
    [(2,)]
    """
    removed = {id(parameter) for parameter in parameters}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in removed]
    for parameter in parameters:
        optimizer.state.pop(parameter, None)


def choose_task_subset(num_tasks: int, size: int, generator: torch.Generator) -> list[int] | None:
    """``size`` distinct task indices drawn from ``generator``, sorted; None when m ≤ size.

    >>> choose_task_subset(40, 3, torch.Generator().manual_seed(0))
    [4, 16, 21]
    >>> choose_task_subset(3, 3, torch.Generator()) is None
    True
    """
    if size < 2:
        raise ValueError(f"`size` must be at least 2 (one pair of tasks), but got {size}.")
    if num_tasks <= size:
        return None
    return sorted(torch.randperm(num_tasks, generator=generator)[:size].tolist())


@PARETO_METHODS.register("lorpman")
class LORPMAN(MultiForwardMethod):
    """LORPMAN training: α-weighted loss, multi-forward and orthogonality terms, late freeze.

    ``loss = Σ_w α^w·ℓ^w + λ_p R_p + λ_o R_o`` with α^w ~ Dir(p·1_m), w = 1..W; R_o over a
    random subset of ``orthogonality_tasks`` tasks per step when there are more tasks. From
    the freeze epoch on, the main network is fixed.

    Args:
        rank: r of every adapted layer (clipped to ``min(d_out, d_in)``).
        scale: s ≥ 0.
        init: ``"kaiming"`` or ``"lora"``.
        window: W, forwards per step.
        concentration: p.
        multi_forward_weight: λ_p (the paper: 0 on MultiMNIST, 5 Census, 1 UTKFace/CIFAR-100).
        tau: τ of R_p.
        gate: add λ_p R_p only when it is below the weighted loss (PaMaL's trainer).
        orthogonality_weight: λ_o ≥ 0.
        orthogonality_tasks: the subset size for R_o (3 in the paper).
        freeze_epoch: the first epoch with a frozen main network; ``"auto"`` = ⌈0.8·E⌉;
            None or ≥ E: never; 0: frozen from the start (a logged warning).
        freeze_norm_statistics: freeze the main network's BatchNorm statistics too.

    >>> LORPMAN(rank=4).resolve_freeze_epoch(10)
    8
    """

    name = "lorpman"

    def __init__(
        self,
        *,
        rank: int = 8,
        scale: float = 1.0,
        init: LowRankInit = "kaiming",
        window: int = 3,
        concentration: float = 1.0,
        multi_forward_weight: float = 1.0,
        tau: float = 1.0,
        gate: bool = True,
        orthogonality_weight: float = 1.0,
        orthogonality_tasks: int = 3,
        freeze_epoch: int | Literal["auto"] | None = "auto",
        freeze_norm_statistics: bool = True,
    ) -> None:
        super().__init__(
            window=window,
            concentration=concentration,
            multi_forward_weight=multi_forward_weight,
            tau=tau,
            gate=gate,
        )
        if rank < 0:
            raise ValueError(f"`rank` must be non-negative, but got {rank}.")
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"`scale` must be non-negative, but got {scale}.")
        if not (math.isfinite(orthogonality_weight) and orthogonality_weight >= 0):
            raise ValueError(
                f"`orthogonality_weight` must be non-negative, but got {orthogonality_weight}."
            )
        if orthogonality_tasks < 2:
            raise ValueError(
                f"`orthogonality_tasks` must be at least 2, but got {orthogonality_tasks}."
            )
        if (
            freeze_epoch != "auto"
            and freeze_epoch is not None
            and (not isinstance(freeze_epoch, int) or freeze_epoch < 0)
        ):
            raise ValueError(
                f"`freeze_epoch` must be a non-negative int, 'auto' or None; got {freeze_epoch!r}."
            )
        self.rank = rank
        self.scale = scale
        self.init: LowRankInit = init
        self.orthogonality_weight = orthogonality_weight
        self.orthogonality_tasks = orthogonality_tasks
        self.freeze_epoch = freeze_epoch
        self.freeze_norm_statistics = freeze_norm_statistics

    def build(
        self, make_model: Callable[[], nn.Module], tasks: Sequence[str]
    ) -> LowRankParetoModel:
        """One network from ``make_model``, converted to low-rank layers."""
        return LowRankParetoModel(
            make_model(),
            tasks,
            rank=self.rank,
            scale=self.scale,
            init=self.init,
            freeze_norm_statistics=self.freeze_norm_statistics,
        )

    def resolve_freeze_epoch(self, epochs: int) -> int | None:
        """The epoch the main network freezes at, for a run of ``epochs``; None: never."""
        freeze_epoch: int | None
        if self.freeze_epoch == "auto":
            freeze_epoch = math.ceil(DEFAULT_FREEZE_FRACTION * epochs)
        else:
            freeze_epoch = self.freeze_epoch
        if freeze_epoch is None or freeze_epoch >= epochs:
            return None
        return freeze_epoch

    def on_epoch_start(
        self,
        model: ParetoModel,
        optimizer: torch.optim.Optimizer,
        *,
        epoch: int,
        epochs: int,
    ) -> None:
        """Freeze the main network when ``epoch`` reaches the freeze epoch."""
        freeze_epoch = self.resolve_freeze_epoch(epochs)
        if freeze_epoch is None or epoch < freeze_epoch:
            return
        low_rank_model = _as_low_rank(model)
        if low_rank_model.is_main_frozen:
            return
        if freeze_epoch == 0:
            logger.warning(
                "freeze_epoch=0: the main network stays at its initialization; only the "
                "low-rank matrices train."
            )
        low_rank_model.freeze_main(optimizer)

    def extra_terms(self, model: ParetoModel, *, generator: torch.Generator) -> dict[str, Tensor]:
        """``{"orthogonality": λ_o R_o}`` over a random task subset."""
        if self.orthogonality_weight == 0:
            return {}
        subset = choose_task_subset(model.num_tasks, self.orthogonality_tasks, generator)
        return {
            "orthogonality": self.orthogonality_weight * _as_low_rank(model).orthogonality(subset)
        }

    def options(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {
            "rank": self.rank,
            "scale": self.scale,
            "init": self.init,
            **super().options(),
            "orthogonality_weight": self.orthogonality_weight,
            "orthogonality_tasks": self.orthogonality_tasks,
            "freeze_epoch": self.freeze_epoch,
            "freeze_norm_statistics": self.freeze_norm_statistics,
        }


def _as_low_rank(model: ParetoModel) -> LowRankParetoModel:
    if not isinstance(model, LowRankParetoModel):
        raise TypeError(
            f"LORPMAN trains a LowRankParetoModel (from LORPMAN.build); got {type(model).__name__}."
        )
    return model
