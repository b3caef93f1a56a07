"""COSMOS: the preference as an extra input, and a cosine penalty (Ruchte & Grabocka, 2021).

"Scalable Pareto Front Approximation for Deep Multi-Objective Learning" (arXiv 2103.13392).
The network sees α beside its input: m extra channels of constant value α_i for an image
[B, C, H, W], m extra features for a vector [B, F]; the first Linear or Conv is widened to take
them. The loss at α is α·ℓ − λ cos(α, ℓ): the weighted loss, minus a reward for a loss vector
pointing along α.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from taskprio.pareto._layers import AdaptableLayer
from taskprio.pareto._method import PARETO_METHODS, Objective, ParetoMethod
from taskprio.pareto._model import ParameterCount, ParetoModel, check_preference

logger = logging.getLogger(__name__)


def _find_input_layer(model: nn.Module, name: str | None) -> tuple[str, AdaptableLayer]:
    for module_name, module in model.named_modules():
        if name is not None and module_name != name:
            continue
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module_name, module
        if name is not None:
            raise ValueError(
                f"`input_layer` {name!r} is a {type(module).__name__}; it must be an nn.Linear "
                "or nn.Conv1d/2d/3d."
            )
    where = "has no nn.Linear or nn.Conv1d/2d/3d" if name is None else f"has no module {name!r}"
    raise ValueError(f"`model` {where}; COSMOS widens the layer that reads the input.")


def _warn_if_normalized(model: nn.Module, name: str) -> None:
    # A constant input channel only shifts each output channel of a layer without padding
    # (or each unit of a Linear) by a constant; a BatchNorm right after subtracts the batch
    # mean and removes it, so the network cannot see α.
    names = [module_name for module_name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    position = names.index(name)
    if position + 1 < len(names):
        following = modules[names[position + 1]]
        if isinstance(following, nn.modules.batchnorm._BatchNorm):
            logger.warning(
                "COSMOS input layer %r is followed by %s, which removes the constant offset "
                "that the preference channels add: the network will barely depend on α. Use "
                "a network without a norm after its first layer.",
                name,
                type(following).__name__,
            )


def widen_input(
    layer: AdaptableLayer, extra: int, *, generator: torch.Generator | None = None
) -> AdaptableLayer:
    """A copy of ``layer`` with ``extra`` more input features (Linear) or channels (Conv).

    The original weights and bias are copied; the new input columns are drawn like a fresh
    layer's weights (Kaiming-uniform, a = √5).

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` with ``groups=1``.
        extra: how many inputs to add.
        generator: draws the new columns.

    Returns:
        The new layer; ``layer`` is unchanged.

    >>> widen_input(nn.Conv2d(1, 4, 3), 2)
    Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
    """
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        new: AdaptableLayer = nn.Linear(
            layer.in_features + extra,
            layer.out_features,
            bias=layer.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
    else:
        if layer.groups != 1:
            raise ValueError(
                f"COSMOS cannot widen a grouped convolution (groups={layer.groups}); name an "
                "ungrouped input layer."
            )
        new = type(layer)(
            layer.in_channels + extra,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            stride=layer.stride,  # type: ignore[arg-type]
            padding=layer.padding,  # type: ignore[arg-type]
            dilation=layer.dilation,  # type: ignore[arg-type]
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
    with torch.no_grad():
        added = weight.new_empty(weight.shape[0], extra, *weight.shape[2:])
        nn.init.kaiming_uniform_(added, a=math.sqrt(5), generator=generator)
        new.weight.copy_(torch.cat([weight, added], dim=1))
        if layer.bias is not None and new.bias is not None:
            new.bias.copy_(layer.bias)
    return new


class COSMOSModel(ParetoModel):
    """A network that reads the preference with its input: ``model(concat(x, α))``.

    The first ``nn.Linear``/``nn.Conv`` of ``model`` (in module order, or ``input_layer``)
    is replaced in place by a copy with m more inputs (:func:`widen_input`); it must be the
    layer that reads the input. The preference enters as m constant channels (or features)
    appended to ``x`` along dimension 1. A BatchNorm right after that layer cancels the
    constant offset α adds (a logged warning says so): use a norm-free input layer.

    Args:
        model: the multi-task network, ``forward(x) -> {task: output}``.
        tasks: the task names, in preference order.
        input_layer: the qualified name of the layer that reads ``x``; None: the first.
        generator: draws the new input weights.

    >>> from taskprio.models import MultiTaskMLP
    >>> mlp = MultiTaskMLP(5, {"a": 1, "b": 1}, hidden_sizes=(8,), head_hidden=0,
    ...                    batch_norm=False)
    >>> net = COSMOSModel(mlp, ["a", "b"])
    >>> net.parameter_count()
    ParameterCount(main=66, extra=16)
    >>> net(torch.zeros(3, 5), torch.tensor([0.5, 0.5]))["a"].shape
    torch.Size([3, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[str],
        *,
        input_layer: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(tasks)
        name, layer = _find_input_layer(model, input_layer)
        if name == "":
            raise ValueError(
                "`model` is itself a Linear or Conv; wrap it, e.g. nn.Sequential(model)."
            )
        _warn_if_normalized(model, name)
        model.set_submodule(name, widen_input(layer, self.num_tasks, generator=generator))
        self.model = model
        self.input_layer = name
        spatial = layer.weight.shape[2:]
        self.num_extra_parameters = layer.weight.shape[0] * self.num_tasks * math.prod(spatial)

    def forward(self, x: Tensor, preference: Tensor) -> dict[str, Tensor]:
        """The outputs of the network on ``[x, α]``.

        Args:
            x: [B, C, ...] or [B, F] inputs.
            preference: [m] α on the simplex.

        Returns:
            Per task, the network's output.
        """
        check_preference(preference, self.num_tasks)
        alpha = preference.to(device=x.device, dtype=x.dtype)
        # [B, m, *spatial]: α_i repeated over the batch and every position.
        channels = alpha.view(1, -1, *([1] * (x.ndim - 2))).expand(x.shape[0], -1, *x.shape[2:])
        outputs: dict[str, Tensor] = self.model(torch.cat([x, channels], dim=1))
        return outputs

    def parameter_count(self) -> ParameterCount:
        """Main = the network, extra = the input layer's weights on the m preference inputs."""
        total = sum(p.numel() for p in self.model.parameters())
        return ParameterCount(
            main=total - self.num_extra_parameters, extra=self.num_extra_parameters
        )


def cosmos_loss(preferences: Tensor, losses: Tensor, *, cosine_weight: float) -> Tensor:
    """Σ_w [α^w·ℓ^w − λ cos(α^w, ℓ^w)].

    Args:
        preferences: [W, m].
        losses: [W, m].
        cosine_weight: λ ≥ 0.

    Returns:
        The scalar loss.

    >>> cosmos_loss(torch.tensor([[0.6, 0.8]]), torch.tensor([[3.0, 4.0]]), cosine_weight=2.0)
    tensor(3.)
    """
    alphas = preferences.to(device=losses.device, dtype=losses.dtype)
    weighted = (alphas * losses).sum(dim=1)  # [W]
    cosine = functional.cosine_similarity(alphas, losses, dim=1)  # [W]
    return (weighted - cosine_weight * cosine).sum()


@PARETO_METHODS.register("cosmos")
class COSMOS(ParetoMethod):
    """COSMOS training: α as an input, loss α·ℓ − λ cos(α, ℓ), α ~ Dir(p).

    Args:
        window: W, preferences (forwards) per step; COSMOS uses one per batch.
        concentration: p.
        cosine_weight: λ ≥ 0 (PaMaL's configs: 8 on MultiMNIST and Census, 1 on UTKFace).

    >>> COSMOS(cosine_weight=8.0)
    COSMOS(window=1, concentration=1.0, cosine_weight=8.0)
    """

    name = "cosmos"

    def __init__(
        self, *, window: int = 1, concentration: float = 1.0, cosine_weight: float = 1.0
    ) -> None:
        super().__init__(window=window, concentration=concentration)
        if not (math.isfinite(cosine_weight) and cosine_weight >= 0):
            raise ValueError(f"`cosine_weight` must be non-negative, but got {cosine_weight}.")
        self.cosine_weight = cosine_weight

    def build(self, make_model: Callable[[], nn.Module], tasks: Sequence[str]) -> COSMOSModel:
        """One network from ``make_model`` with its input layer widened by m."""
        return COSMOSModel(make_model(), tasks)

    def objective(
        self,
        model: ParetoModel,
        preferences: Tensor,
        losses: Tensor,
        *,
        generator: torch.Generator,
    ) -> Objective:
        """:func:`cosmos_loss`."""
        del model, generator
        loss = cosmos_loss(preferences, losses, cosine_weight=self.cosine_weight)
        alphas = preferences.to(device=losses.device, dtype=losses.dtype)
        weighted = float((alphas * losses).sum().detach())
        return Objective(loss, {"weighted_loss": weighted, "cosmos_loss": float(loss.detach())})

    def options(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {**super().options(), "cosine_weight": self.cosine_weight}
