"""Per-pixel losses of the dense benchmarks, over labelled pixels of labelled samples only.

Every loss has the signature of :data:`~taskprio.data.TaskSpec` losses, ``(prediction, target,
mask) -> scalar``: ``mask`` is [B] bool (False: the sample carries no label for the task) and
the pixels a target marks as unknown (label 255, depth 0, normal (0, 0, 0)) do not count
either. Each is the mean over the counted pixels of the batch (pooled, not a mean of per-image
means, as MTI-Net's losses), and an exact 0 with a zero gradient when no pixel counts.

The choices follow MTI-Net (SimonVandenhende/Multi-Task-Learning-PyTorch), on which the CSO
paper's NYUD-v2 and PASCAL-Context experiments are built:

- semantic segmentation and human parts: cross-entropy, ignore index 255;
- depth: L1 over pixels with a known (positive) depth;
- surface normals: L1 between the L2-normalised prediction and the unit target, over pixels
  with a known normal;
- edges: binary cross-entropy with a fixed positive weight of 0.95 (edges are a few percent of
  the pixels, so unweighted BCE would learn to predict no edge);
- saliency: binary cross-entropy balanced per batch (positive weight = the share of negative
  pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

from taskprio.data._dense import IGNORE_INDEX

# MTI-Net's `edge_w`: the weight of edge pixels in the edge BCE (the others get 1 - 0.95).
EDGE_POSITIVE_WEIGHT = 0.95


def _sample_mask(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """[B] per-sample flags as a tensor broadcastable to ``like`` [B, ...]; None stays None."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.shape != like.shape[:1]:
        raise ValueError(
            f"`mask` must be bool of shape ({like.shape[0]},), one flag per sample; got "
            f"{mask.dtype} of shape {tuple(mask.shape)}."
        )
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _check_shapes(prediction: Tensor, target: Tensor, what: str) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"`prediction` and `target` of a {what} task must have one shape [B, C, H, W]; got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}."
        )


def _mean_over(values: Tensor, valid: Tensor) -> Tensor:
    """The mean of ``values`` where ``valid`` (same shape); an exact 0 when none is valid.

    ``torch.where`` rather than a product, so a non-finite value at an unknown pixel neither
    leaks into the sum nor into the gradient.
    """
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    count = valid.sum().clamp_min(1).to(values.dtype)
    return total / count


def dense_cross_entropy(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy over the labelled pixels (semantic segmentation, human parts).

    Args:
        prediction: [B, C, H, W] logits.
        target: [B, H, W] int64 classes, 255 (:data:`~taskprio.data.IGNORE_INDEX`) unlabelled.
        mask: [B] bool, False for a sample without this task's labels; None: all labelled.

    Returns:
        The mean over labelled pixels of the batch; an exact 0 (zero gradient) if none.

    >>> logits = torch.zeros(1, 2, 1, 2)
    >>> dense_cross_entropy(logits, torch.tensor([[[0, 255]]]))  # log 2 on the one pixel
    tensor(0.6931)
    """
    if prediction.ndim != target.ndim + 1 or prediction.shape[2:] != target.shape[1:]:
        raise ValueError(
            "`prediction` must be [B, C, H, W] logits and `target` [B, H, W] classes; got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}."
        )
    sample_mask = _sample_mask(mask, target)
    labels = target if sample_mask is None else target.masked_fill(~sample_mask, IGNORE_INDEX)
    total = functional.cross_entropy(prediction, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum().clamp_min(1).to(total.dtype)
    return total / count


def depth_l1(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute depth error over the pixels with a known depth (target finite and > 0).

    L1 rather than L2, as MTI-Net and MTAN: robust to the large errors of far or noisy pixels.

    Args:
        prediction: [B, 1, H, W].
        target: [B, 1, H, W], 0 where the depth is unknown.
        mask: [B] bool, False for a sample without depth; None: all labelled.

    Returns:
        The mean over known pixels; an exact 0 (zero gradient) if none.

    >>> depth_l1(torch.tensor([[[[1.0, 5.0, 9.0]]]]), torch.tensor([[[[2.0, 4.0, 0.0]]]]))
    tensor(1.)
    """
    _check_shapes(prediction, target, "depth")
    valid = torch.isfinite(target) & (target > 0)
    sample_mask = _sample_mask(mask, target)
    if sample_mask is not None:
        valid = valid & sample_mask
    known = torch.where(valid, target, torch.zeros_like(target)).to(prediction.dtype)
    return _mean_over((prediction - known).abs(), valid)


def normals_l1(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """L1 between the L2-normalised prediction and the unit target, over pixels with a normal.

    MTI-Net's normals loss: the prediction is scaled to unit length first, so the loss acts on
    the direction only, and the absolute differences are averaged over the 3 components of the
    known pixels. (MTAN's 1 − cos is the other common choice; both vanish for a perfect
    direction.)

    Args:
        prediction: [B, 3, H, W] raw normals (any length).
        target: [B, 3, H, W] unit normals, (0, 0, 0) where unknown.
        mask: [B] bool, False for a sample without normals; None: all labelled.

    Returns:
        The mean over known pixels and components; an exact 0 (zero gradient) if none.

    >>> up = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    >>> normals_l1(2 * up, up), normals_l1(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1), up)
    (tensor(0.), tensor(0.6667))
    """
    _check_shapes(prediction, target, "normals")
    if target.ndim < 2 or target.shape[1] != 3:
        raise ValueError(f"normals must be [B, 3, H, W]; got {tuple(target.shape)}.")
    valid = (torch.isfinite(target).all(dim=1, keepdim=True)) & (target != 0).any(
        dim=1, keepdim=True
    )  # [B, 1, H, W]
    sample_mask = _sample_mask(mask, target)
    if sample_mask is not None:
        valid = valid & sample_mask
    unit = functional.normalize(prediction, dim=1)
    known = torch.where(valid, target, torch.zeros_like(target)).to(prediction.dtype)
    return _mean_over((unit - known).abs(), valid.expand_as(target))


def balanced_bce(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    positive_weight: float | None = None,
) -> Tensor:
    """Binary cross-entropy on logits with weight w on positives and 1 − w on negatives.

    Per pixel: −w·y·log σ(x) − (1 − w)·(1 − y)·log(1 − σ(x)), averaged over the labelled
    pixels. With ``positive_weight`` None, w is the share of negative pixels among the
    labelled pixels of the batch (no gradient through it), which balances the two classes:
    MTI-Net's saliency loss.

    Args:
        prediction: [B, 1, H, W] logits.
        target: [B, 1, H, W] in [0, 1] (edge or saliency maps).
        mask: [B] bool, False for a sample without this task's labels; None: all labelled.
        positive_weight: w in [0, 1]; None: balanced per batch.

    Returns:
        The mean over labelled pixels; an exact 0 (zero gradient) if none.

    >>> logits, target = torch.zeros(1, 1, 1, 4), torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])
    >>> balanced_bce(logits, target)  # w = 3/4: (0.75 + 3 · 0.25) · log 2 / 4
    tensor(0.2599)
    >>> balanced_bce(logits, target, positive_weight=0.5)
    tensor(0.3466)
    """
    _check_shapes(prediction, target, "binary")
    if positive_weight is not None and not 0.0 <= positive_weight <= 1.0:
        raise ValueError(f"`positive_weight` must be in [0, 1]; got {positive_weight}.")
    valid = torch.isfinite(target)
    sample_mask = _sample_mask(mask, target)
    if sample_mask is not None:
        valid = valid & sample_mask
    labels = torch.where(valid, target, torch.zeros_like(target)).to(prediction.dtype)
    if positive_weight is None:
        num_valid = valid.sum().clamp_min(1)
        weight = 1.0 - torch.where(valid, labels, torch.zeros_like(labels)).sum() / num_valid
        weight = weight.detach()
    else:
        weight = prediction.new_tensor(positive_weight)
    # softplus(-x) = -log σ(x) and softplus(x) = -log(1 - σ(x)), stable for large |x|.
    per_pixel = weight * labels * functional.softplus(-prediction) + (1 - weight) * (
        1 - labels
    ) * functional.softplus(prediction)
    return _mean_over(per_pixel, valid)


def edge_bce(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """:func:`balanced_bce` with MTI-Net's fixed positive weight 0.95 for edge maps.

    >>> edge_bce(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]]))  # (0.95 + 0.05) log 2 / 2
    tensor(0.3466)
    """
    return balanced_bce(prediction, target, mask, positive_weight=EDGE_POSITIVE_WEIGHT)
