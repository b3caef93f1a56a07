"""One seeded batch sampler per task metric, with partial labels, for the shared checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from taskprio.metrics import (
    BinaryClassificationMetrics,
    ClassificationMetrics,
    DepthMetrics,
    EdgeMetrics,
    NormalMetrics,
    RegressionMetrics,
    SaliencyMetrics,
    SegmentationMetrics,
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # prediction, target, mask


@dataclass(frozen=True)
class Case:
    make: Callable[..., torch.nn.Module]  # keyword arguments go to torchmetrics.Metric
    sample: Callable[[torch.Generator, int], Batch]


def _per_sample_mask(generator: torch.Generator, batch_size: int) -> torch.Tensor:
    mask = torch.rand(batch_size, generator=generator) > 0.3
    mask[0] = True
    return mask


def _segmentation(generator, batch_size):
    scores = torch.randn(batch_size, 4, 6, 5, generator=generator)
    target = torch.randint(0, 4, (batch_size, 6, 5), generator=generator)
    # Make predictions better than chance, and leave some pixels unlabelled.
    scores.scatter_add_(1, target.unsqueeze(1), torch.full((batch_size, 1, 6, 5), 1.0))
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    return scores, target, _per_sample_mask(generator, batch_size)


def _depth(generator, batch_size):
    target = torch.rand(batch_size, 6, 5, generator=generator) * 9 + 0.5
    target[torch.rand(target.shape, generator=generator) < 0.2] = 0.0
    prediction = target + torch.randn(target.shape, generator=generator) * 0.3
    return prediction, target, torch.rand(target.shape, generator=generator) > 0.1


def _normals(generator, batch_size):
    target = torch.randn(batch_size, 3, 6, 5, generator=generator)
    target[:, :, 0, 0] = 0.0
    prediction = target + torch.randn(target.shape, generator=generator) * 0.5
    return prediction, target, _per_sample_mask(generator, batch_size)


def _saliency(generator, batch_size):
    target = (torch.rand(batch_size, 6, 5, generator=generator) > 0.6).long()
    prediction = (0.6 * target + 0.6 * torch.rand(target.shape, generator=generator)).clamp(0, 1)
    target[torch.rand(target.shape, generator=generator) < 0.05] = 255
    return prediction, target, _per_sample_mask(generator, batch_size)


def _classification(generator, batch_size):
    scores = torch.randn(batch_size, 5, generator=generator)
    target = torch.randint(0, 5, (batch_size,), generator=generator)
    scores[torch.arange(batch_size), target] += 1.0
    return scores, target, _per_sample_mask(generator, batch_size)


def _binary(generator, batch_size):
    target = torch.randint(0, 2, (batch_size, 3), generator=generator)
    prediction = (0.5 * target + 0.6 * torch.rand(target.shape, generator=generator)).clamp(0, 1)
    return prediction, target, torch.rand(target.shape, generator=generator) > 0.2


def _regression(generator, batch_size):
    target = torch.randn(batch_size, 2, generator=generator)
    prediction = target + torch.randn(target.shape, generator=generator)
    return prediction, target, _per_sample_mask(generator, batch_size)


CASES: dict[str, Case] = {
    "segmentation": Case(partial(SegmentationMetrics, num_classes=4), _segmentation),
    "depth": Case(DepthMetrics, _depth),
    "normals": Case(NormalMetrics, _normals),
    "saliency": Case(SaliencyMetrics, _saliency),
    "edge": Case(EdgeMetrics, _saliency),
    "classification": Case(partial(ClassificationMetrics, num_classes=5), _classification),
    "binary": Case(BinaryClassificationMetrics, _binary),
    "regression": Case(RegressionMetrics, _regression),
}
