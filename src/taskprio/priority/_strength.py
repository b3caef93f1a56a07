"""Connection strength, normalized shares and channel owners (Eqs. 4–7 and 10 of the CSO paper).

Pure functions over tensors. Symbols: K tasks, N output channels of one shared layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONNECTED_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def layer_weight(layer: nn.Module) -> Tensor:
    """The ``weight`` tensor of a Conv/ConvTranspose/Linear module."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor; it cannot be a connection.")
    return weight


def channel_rows(tensor: Tensor, layer: nn.Module) -> Tensor:
    """View a weight-shaped tensor with one row per output channel of ``layer``.

    A convolution's output channel p is ``W[p]``; a linear layer's output feature p is ``W[p]``;
    a transposed convolution's weight is ``[C_in, C_out / groups, *kernel]``, and its output
    channel ``p = g · (C_out / groups) + j`` reads ``W[g·C_in/groups : (g+1)·C_in/groups, j]``.

    Args:
        tensor: [*lead, *weight_shape], e.g. [K, *weight_shape] per-task gradients.
        layer: the Conv/ConvTranspose/Linear module the weight belongs to.

    Returns:
        [*lead, N, m] with N output channels and m weight entries per channel (a copy for
        transposed convolutions, a view otherwise).

    >>> conv = nn.ConvTranspose2d(4, 6, 3, groups=2)
    >>> channel_rows(conv.weight, conv).shape
    torch.Size([6, 18])
    """
    weight_ndim = layer_weight(layer).ndim
    lead = tensor.shape[: tensor.ndim - weight_ndim]
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        in_channels, per_group_out, *kernel = tensor.shape[len(lead) :]
        groups = layer.groups
        grouped = tensor.reshape(*lead, groups, in_channels // groups, per_group_out, *kernel)
        # [*lead, groups, C_in/g, C_out/g, *kernel] → [*lead, groups, C_out/g, C_in/g, *kernel]
        grouped = grouped.transpose(len(lead) + 1, len(lead) + 2)
        return grouped.reshape(*lead, groups * per_group_out, -1)
    return tensor.reshape(*lead, tensor.shape[len(lead)], -1)


def rows_to_weight(rows: Tensor, layer: nn.Module) -> Tensor:
    """The inverse of :func:`channel_rows`: [*lead, N, m] back to [*lead, *weight_shape].

    >>> conv = nn.ConvTranspose2d(4, 6, 3, groups=2)
    >>> torch.equal(rows_to_weight(channel_rows(conv.weight, conv), conv), conv.weight)
    True
    """
    weight_shape = tuple(layer_weight(layer).shape)
    lead = rows.shape[:-2]
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        in_channels, per_group_out, *kernel = weight_shape
        groups = layer.groups
        grouped = rows.reshape(*lead, groups, per_group_out, in_channels // groups, *kernel)
        grouped = grouped.transpose(len(lead) + 1, len(lead) + 2)
        return grouped.reshape(*lead, *weight_shape)
    return rows.reshape(*lead, *weight_shape)


def channel_energy(weight: Tensor, layer: nn.Module) -> Tensor:
    """r_p = Σ of the squared weights feeding output channel p (Eq. 4 without its 1/k²).

    The 1/k² factor of the paper cancels in the normalized shares.

    Args:
        weight: the layer's weight.
        layer: the module it belongs to (for the output-channel layout).

    Returns:
        [N] float64.

    >>> linear = nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = linear.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 3.0]]))
    >>> channel_energy(linear.weight, linear)
    tensor([5., 9.], dtype=torch.float64)
    """
    return channel_rows(weight.detach().to(torch.float64), layer).pow(2).sum(dim=-1)


def connection_strength(energy: Tensor, scale: Tensor, var_plus_eps: Tensor) -> Tensor:
    """S[t, p] = γ_{t,p}² / (v_{t,p} + ε_t) · r_p (Eq. 6).

    Args:
        energy: [N] r_p from :func:`channel_energy`.
        scale: [K, N] each task norm's γ (ones for a norm without affine weight).
        var_plus_eps: [K, N] each task's running variance plus eps (ones without statistics).

    Returns:
        [K, N] float64.

    >>> connection_strength(torch.tensor([1.0, 4.0]), torch.tensor([[2.0, 1.0]]),
    ...                     torch.tensor([[1.0, 2.0]]))
    tensor([[4., 2.]], dtype=torch.float64)
    """
    scale = scale.detach().to(torch.float64)
    return scale.pow(2) / var_plus_eps.detach().to(torch.float64) * energy.to(torch.float64)


def normalized_shares(strength: Tensor) -> Tensor:
    """Ŝ[t, p] = S[t, p] / Σ_p' S[t, p'] (Eq. 7); a row that sums to 0 stays all zero (no NaN).

    Args:
        strength: [K, N] connection strengths.

    Returns:
        [K, N]; every non-zero row sums to 1.

    >>> normalized_shares(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
    tensor([[0.2500, 0.7500],
            [0.0000, 0.0000]])
    """
    total = strength.sum(dim=1, keepdim=True)
    return torch.where(total > 0, strength / torch.where(total > 0, total, 1), 0)


def channel_owner(shares: Tensor) -> Tensor:
    """ν_p = argmax_t Ŝ[t, p] (Eq. 10); ties go to the lowest task index.

    Args:
        shares: [K, N] normalized shares.

    Returns:
        [N] int64 task indices.

    >>> channel_owner(torch.tensor([[0.5, 0.2, 0.3], [0.5, 0.1, 0.4]]))
    tensor([0, 0, 1])
    """
    # torch.argmax returns the first maximal index, which is the tie rule we want.
    return shares.argmax(dim=0)


def owner_shares(owner: Tensor, num_tasks: int) -> Tensor:
    """The fraction of channels each task owns.

    Args:
        owner: [N] task index per channel.
        num_tasks: K.

    Returns:
        [K] float64 fractions summing to 1.

    >>> owner_shares(torch.tensor([0, 0, 1, 2]), 3)
    tensor([0.5000, 0.2500, 0.2500], dtype=torch.float64)
    """
    counts = torch.bincount(owner, minlength=num_tasks).to(torch.float64)
    return counts / max(owner.numel(), 1)
