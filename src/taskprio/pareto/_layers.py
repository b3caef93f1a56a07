"""Preference-conditioned Linear and Conv layers: W(α) = W0 + s·Σ_i α_i B_i A_i (LORPMAN).

A :class:`LowRankLayer` wraps an existing ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (the *main*
layer, which keeps its weight W0 and bias) and adds, for each of the m tasks, a rank-r pair
B_i [d_out, r], A_i [r, d_in]. A conv kernel [C_out, C_in/groups, k, ...] is read as the matrix
[C_out, C_in/groups·k·…] (d_out = C_out), so the merged kernel has W0's shape and the forward
costs what the main layer's does. The preference α is set on the layers of a model by
:func:`using_preference` (what :class:`~taskprio.pareto.LowRankParetoModel` does per forward).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

logger = logging.getLogger(__name__)

AdaptableLayer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
ADAPTABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LowRankInit = Literal["kaiming", "lora"]

# The default initialization shrinks Kaiming-uniform draws by this factor, so that every
# low-rank product is non-zero (the orthogonality penalty sees a direction at once) while
# W(α) starts next to W0 (spec "Algorithm", step 2).
KAIMING_SHRINK = 1e-2


def _kaiming_uniform(tensor: Tensor, generator: torch.Generator | None) -> None:
    # The default of nn.Linear / nn.Conv (a = √5), applied per task slice so that the fan-in
    # is the matrix's own (d_in for A_i, r for B_i), not the stacked tensor's.
    if tensor.numel() == 0:
        return  # rank 0: nothing to draw (torch warns on empty tensors)
    for task_slice in tensor:
        nn.init.kaiming_uniform_(task_slice, a=math.sqrt(5), generator=generator)


def _init_kaiming(a: Tensor, b: Tensor, generator: torch.Generator | None) -> None:
    _kaiming_uniform(a, generator)
    _kaiming_uniform(b, generator)
    a.mul_(KAIMING_SHRINK)
    b.mul_(KAIMING_SHRINK)


def _init_lora(a: Tensor, b: Tensor, generator: torch.Generator | None) -> None:
    # LoRA's choice: W(α) = W0 exactly at the start; the orthogonality term is 0 until B moves.
    _kaiming_uniform(a, generator)
    b.zero_()


LOW_RANK_INITS: dict[str, Callable[[Tensor, Tensor, torch.Generator | None], None]] = {
    "kaiming": _init_kaiming,
    "lora": _init_lora,
}
"""Initializations of the low-rank factors by name: ``kaiming`` (A and B Kaiming-uniform
×1e-2) and ``lora`` (A Kaiming-uniform, B = 0)."""


class LowRankLayer(nn.Module):
    """A Linear or Conv layer whose weight depends on the preference: W0 + s·Σ_i α_i B_i A_i.

    The main layer keeps its weight W0 and bias (biases are not adapted). With rank 0 or
    scale 0 the forward uses W0 itself, so the layer is exactly the main layer.

    Args:
        base: the main layer (``nn.Linear`` or ``nn.Conv1d/2d/3d``), used as is.
        num_tasks: m, one low-rank pair per task.
        rank: r, at most ``min(d_out, d_in)``.
        scale: s ≥ 0, the factor on the low-rank sum.
        init: ``"kaiming"`` or ``"lora"`` (see :data:`LOW_RANK_INITS`).
        generator: draws the initial factors; None uses torch's global generator.

    Attributes:
        lora_a: [m, r, d_in] the A_i.
        lora_b: [m, d_out, r] the B_i.
        preference: the α of the next forward ([m]), set by :func:`using_preference`.

    >>> layer = LowRankLayer(nn.Linear(4, 3), 2, rank=2)
    >>> tuple(layer.lora_a.shape), tuple(layer.lora_b.shape), layer.num_low_rank_parameters
    ((2, 2, 4), (2, 3, 2), 28)
    >>> with using_preference(layer, torch.tensor([0.5, 0.5])):
    ...     layer(torch.zeros(5, 4)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        base: AdaptableLayer,
        num_tasks: int,
        *,
        rank: int,
        scale: float = 1.0,
        init: LowRankInit = "kaiming",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, ADAPTABLE_TYPES):
            raise TypeError(
                f"`base` must be an nn.Linear or nn.Conv1d/2d/3d; got {type(base).__name__}."
            )
        if num_tasks < 1:
            raise ValueError(f"`num_tasks` must be positive, but got {num_tasks}.")
        weight = base.weight
        d_out, d_in = weight.shape[0], weight[0].numel()
        if rank < 0 or rank > min(d_out, d_in):
            raise ValueError(
                f"`rank` must be in [0, min(d_out, d_in)] = [0, {min(d_out, d_in)}] for a "
                f"weight of shape {tuple(weight.shape)}; got {rank}."
            )
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"`scale` must be finite and non-negative, but got {scale}.")
        if init not in LOW_RANK_INITS:
            raise ValueError(f"`init` must be one of {sorted(LOW_RANK_INITS)}, but got {init!r}.")
        self.base = base
        self.num_tasks = num_tasks
        self.rank = rank
        self.scale = scale
        self.init = init
        self.lora_a = nn.Parameter(weight.new_empty(num_tasks, rank, d_in))  # [m, r, d_in]
        self.lora_b = nn.Parameter(weight.new_empty(num_tasks, d_out, rank))  # [m, d_out, r]
        with torch.no_grad():
            LOW_RANK_INITS[init](self.lora_a, self.lora_b, generator)
        self.preference: Tensor | None = None

    @property
    def is_identity(self) -> bool:
        """Whether the low-rank part vanishes (rank 0 or scale 0): W(α) = W0 for every α."""
        return self.rank == 0 or self.scale == 0

    @property
    def num_low_rank_parameters(self) -> int:
        """m·r·(d_out + d_in)."""
        return self.lora_a.numel() + self.lora_b.numel()

    def low_rank_product(self, task: int) -> Tensor:
        """B_i A_i of task index ``task``: [d_out, d_in] (without the scale)."""
        return self.lora_b[task] @ self.lora_a[task]

    def delta(self, preference: Tensor) -> Tensor:
        """s·Σ_i α_i B_i A_i as one [d_out, d_in] matrix.

        Args:
            preference: [m] α.

        Returns:
            [d_out, d_in], on the weight's device and dtype.
        """
        alpha = preference.to(device=self.lora_b.device, dtype=self.lora_b.dtype)  # [m]
        num_tasks, d_out, rank = self.lora_b.shape
        # One matmul: [d_out, m·r] (B_i scaled by α_i, side by side) @ [m·r, d_in] (A_i stacked).
        weighted_b = (self.lora_b * alpha[:, None, None]).permute(1, 0, 2)  # [d_out, m, r]
        stacked_a = self.lora_a.reshape(num_tasks * rank, -1)  # [m·r, d_in]
        return self.scale * (weighted_b.reshape(d_out, num_tasks * rank) @ stacked_a)

    def merged_weight(self, preference: Tensor) -> Tensor:
        """W(α) in the main weight's shape ([d_out, d_in], or the conv kernel's shape)."""
        if self.is_identity:
            return self.base.weight
        return self.base.weight + self.delta(preference).view_as(self.base.weight)

    def forward(self, x: Tensor) -> Tensor:
        """The main layer's operation with the weight W(α) of the current preference."""
        if self.preference is None:
            raise RuntimeError(
                "LowRankLayer has no preference set; call it under "
                "`taskprio.pareto.using_preference(model, preference)` or through "
                "`LowRankParetoModel(x, preference)`."
            )
        weight = self.merged_weight(self.preference)
        if isinstance(self.base, nn.Linear):
            return functional.linear(x, weight, self.base.bias)
        output: Tensor = self.base._conv_forward(x, weight, self.base.bias)
        return output

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, rank={self.rank}, scale={self.scale}"


def low_rank_layers(model: nn.Module) -> list[LowRankLayer]:
    """Every :class:`LowRankLayer` of ``model``, in module order.

    >>> len(low_rank_layers(nn.Sequential(LowRankLayer(nn.Linear(2, 2), 1, rank=1))))
    1
    """
    return [module for module in model.modules() if isinstance(module, LowRankLayer)]


def add_low_rank(
    model: nn.Module,
    num_tasks: int,
    *,
    rank: int = 8,
    scale: float = 1.0,
    init: LowRankInit = "kaiming",
    include: Callable[[str, nn.Module], bool] | None = None,
    generator: torch.Generator | None = None,
) -> list[LowRankLayer]:
    """Replace, in place, each Linear and Conv1d/2d/3d of ``model`` by a :class:`LowRankLayer`.

    Every adapted layer gets rank ``min(rank, d_out, d_in)``; layers where that clips the
    requested rank are reported once, as a logged warning. Call it before building the
    optimizer: the factors are new parameters.

    Args:
        model: the network (not itself a Linear or Conv: wrap it in a container).
        num_tasks: m.
        rank: the requested rank r ≥ 0.
        scale: s ≥ 0.
        init: the factors' initialization (:data:`LOW_RANK_INITS`).
        include: ``(qualified name, module) -> bool`` choosing the layers to adapt; None
            adapts every Linear and Conv (task heads included).
        generator: draws the initial factors.

    Returns:
        The new layers, in module order.

    Raises:
        ValueError: ``model`` already holds low-rank layers, or nothing was adapted.

    >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> [layer.rank for layer in add_low_rank(net, 2, rank=4)]
    [3, 1]
    """
    if rank < 0:
        raise ValueError(f"`rank` must be non-negative, but got {rank}.")
    if low_rank_layers(model):
        raise ValueError("`model` already holds LowRankLayer modules; adapt it only once.")
    targets: list[tuple[str, AdaptableLayer]] = []
    for name, module in model.named_modules():
        # Exact types: a subclass may change forward in ways a merged weight would not follow.
        if type(module) not in ADAPTABLE_TYPES or (
            include is not None and not include(name, module)
        ):
            continue
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            targets.append((name, module))
    if not targets:
        raise ValueError(
            "`model` has no nn.Linear or nn.Conv1d/2d/3d to adapt (or `include` rejected them "
            "all); LORPMAN needs at least one."
        )
    if any(name == "" for name, _ in targets):
        raise ValueError(
            "`model` is itself a Linear or Conv; wrap it, e.g. nn.Sequential(model), so that "
            "the layer can be replaced inside it."
        )
    layers = []
    clipped = []
    for name, module in targets:
        limit = min(module.weight.shape[0], module.weight[0].numel())
        if rank > limit:
            clipped.append(f"{name} (rank {limit})")
        layer = LowRankLayer(
            module, num_tasks, rank=min(rank, limit), scale=scale, init=init, generator=generator
        )
        model.set_submodule(name, layer)
        layers.append(layer)
    if clipped:
        logger.warning(
            "rank %d exceeds min(d_out, d_in) of %d layer(s), clipped: %s.",
            rank,
            len(clipped),
            ", ".join(clipped),
        )
    return layers


@contextlib.contextmanager
def using_preference(model: nn.Module, preference: Tensor) -> Iterator[None]:
    """Within the block, every :class:`LowRankLayer` of ``model`` uses ``preference``.

    The previous preferences are restored on exit, so contexts nest.

    Args:
        model: a module holding low-rank layers (or one such layer).
        preference: [m] α.

    >>> layer = LowRankLayer(nn.Linear(2, 2), 2, rank=1)
    >>> with using_preference(layer, torch.tensor([1.0, 0.0])):
    ...     layer.preference
    tensor([1., 0.])
    >>> layer.preference is None
    True
    """
    layers = low_rank_layers(model)
    previous = [layer.preference for layer in layers]
    for layer in layers:
        layer.preference = preference
    try:
        yield
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.preference = old
