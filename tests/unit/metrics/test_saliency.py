"""Saliency: a hand-worked mIoU and maxF, MTI-Net's mIoU and torchmetrics' F-β as references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryFBetaScore

from taskprio.metrics import SaliencyMetrics


def test_hand_worked():
    # Thresholds 0.3 and 0.6.
    # Image A, target (0, 1, 1, 0): τ=0.3 predicts (0, 1, 1, 1): TP 2, FP 1, FN 0, IoU 2/3;
    #   τ=0.6 predicts (0, 0, 1, 1): TP 1, FP 1, FN 1, IoU 1/3.
    # Image B, nothing salient, pixel 3 ignored (255): τ=0.3 predicts pixel 2: FP 1, IoU 0;
    #   τ=0.6 predicts nothing labelled: empty union, IoU 1 (MTI-Net's convention).
    # Image C is masked out: it would add TP 4.
    # mIoU: τ=0.3 (2/3 + 0) / 2 = 1/3, τ=0.6 (1/3 + 1) / 2 = 2/3 → 66.67.
    # maxF: τ=0.3 TP 2, FP 2, FN 0: P 1/2, R 1, F = 1.3 · 0.5 / (0.3 · 0.5 + 1) = 0.5652;
    #   τ=0.6 TP 1, FP 1, FN 1: P = R = 1/2, F = 1/2 → 56.52.
    prediction = torch.tensor([[0.1, 0.4, 0.7, 0.8], [0.2, 0.5, 0.1, 0.9], [0.9, 0.9, 0.9, 0.9]])
    target = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 255], [1, 1, 1, 1]])
    metric = SaliencyMetrics(thresholds=[0.3, 0.6])
    metric.update(prediction, target, mask=torch.tensor([True, True, False]))
    assert metric.compute() == pytest.approx({"mIoU": 200 / 3, "maxF": 0.65 / 1.15 * 100})


def _mti_net_miou(prediction, target, thresholds):
    # MTI-Net's eval_sal: per-image jaccard (1 when both empty) at each threshold, averaged
    # over images, maximum over thresholds.
    jaccards = np.zeros((len(prediction), len(thresholds)))
    for i, (mask, gt) in enumerate(zip(prediction, target, strict=True)):
        gt = gt.astype(bool)
        for j, threshold in enumerate(thresholds):
            predicted = mask > threshold
            union = np.sum(gt | predicted)
            jaccards[i, j] = 1.0 if union == 0 else np.sum(gt & predicted) / union
    return np.max(np.mean(jaccards, axis=0)) * 100


def test_miou_matches_mti_net_and_max_f_matches_torchmetrics():
    generator = torch.Generator().manual_seed(5)
    target = (torch.rand(6, 8, 8, generator=generator) > 0.7).long()
    target[0] = 0  # an image without salient pixels
    prediction = (0.5 * target + 0.6 * torch.rand(target.shape, generator=generator)).clamp(0, 1)
    metric = SaliencyMetrics()
    metric.update(prediction, target)
    result = metric.compute()
    thresholds = np.linspace(0.2, 0.9, 15)
    assert result["mIoU"] == pytest.approx(
        _mti_net_miou(prediction.numpy(), target.numpy(), thresholds), rel=1e-9
    )
    best = 0.0
    for threshold in metric.thresholds:
        f_beta = BinaryFBetaScore(beta=0.3**0.5, threshold=threshold)
        best = max(best, float(f_beta(prediction, target)))
    assert result["maxF"] == pytest.approx(best * 100, rel=1e-5)


def test_default_grid_is_mti_nets():
    assert SaliencyMetrics().thresholds == pytest.approx(np.linspace(0.2, 0.9, 15).tolist())


def test_rejects_non_binary_targets_and_bad_options():
    with pytest.raises(ValueError, match="Binarise the saliency map first"):
        SaliencyMetrics().update(torch.rand(1, 2, 2), torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))
    with pytest.raises(ValueError, match="`beta_squared` must be positive"):
        SaliencyMetrics(beta_squared=0.0)
    with pytest.raises(ValueError, match="`thresholds` must be a non-empty"):
        SaliencyMetrics(thresholds=[])
