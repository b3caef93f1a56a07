"""Segmentation: a hand-worked 3×3 confusion matrix, a float64 loop reference, conventions."""

from __future__ import annotations

import pytest
import torch

from taskprio.metrics import SegmentationMetrics

# Rows are targets, columns predictions:
#     [[3, 1, 0],
#      [0, 2, 1],
#      [1, 0, 1]]
# IoU_0 = 3 / (3 + 1 + 1) = 0.6, IoU_1 = 2 / (2 + 1 + 1) = 0.5, IoU_2 = 1 / (1 + 1 + 1) = 1/3,
# so mIoU = (0.6 + 0.5 + 1/3) / 3 = 0.47778; pixel acc = 6 / 9; mean acc = (3/4 + 2/3 + 1/2) / 3.
PAIRS = [(0, 0)] * 3 + [(0, 1), (1, 1), (1, 1), (1, 2), (2, 0), (2, 2)]
EXPECTED = {
    "mIoU": (0.6 + 0.5 + 1 / 3) / 3 * 100,
    "pixel_acc": 6 / 9 * 100,
    "mean_acc": (3 / 4 + 2 / 3 + 1 / 2) / 3 * 100,
}


def _hand_batch():
    target = [t for t, _ in PAIRS] + [255, 1]  # one ignored pixel, one masked one
    prediction = [p for _, p in PAIRS] + [0, 0]
    mask = [True] * len(PAIRS) + [True, False]
    return (torch.tensor([prediction]), torch.tensor([target]), torch.tensor([mask]))


def test_hand_worked_confusion_matrix():
    metric = SegmentationMetrics(num_classes=3)
    metric.update(*_hand_batch())
    assert metric.compute() == pytest.approx(EXPECTED, rel=1e-6)


def test_scores_and_float_labels_give_the_same_result():
    prediction, target, mask = _hand_batch()
    scores = torch.nn.functional.one_hot(prediction, 3).movedim(-1, 1).float()  # [B, C, H, W]
    metric = SegmentationMetrics(num_classes=3)
    metric.update(scores.unsqueeze(-1), target.float().unsqueeze(-1), mask.unsqueeze(-1))
    assert metric.compute() == pytest.approx(EXPECTED, rel=1e-6)


def _reference(prediction, target, num_classes, ignore_index=255):
    # Per-class TP/FP/FN loops over the labelled pixels, in float64 (MTI-Net's SemsegMeter),
    # keeping only classes present in targets or predictions (torchmetrics' rule).
    valid = target != ignore_index
    ious, recalls = [], []
    for c in range(num_classes):
        tp = float(((prediction == c) & (target == c) & valid).sum())
        fp = float(((prediction == c) & (target != c) & valid).sum())
        fn = float(((prediction != c) & (target == c) & valid).sum())
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
            recalls.append(tp / (tp + fn) if tp + fn > 0 else 0.0)
    correct = float(((prediction == target) & valid).sum())
    return {
        "mIoU": sum(ious) / len(ious) * 100,
        "pixel_acc": correct / float(valid.sum()) * 100,
        "mean_acc": sum(recalls) / len(recalls) * 100,
    }


def test_matches_a_float64_loop_reference():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 6, (4, 10, 12), generator=generator)
    prediction = torch.where(
        torch.rand(target.shape, generator=generator) < 0.6,
        target,
        torch.randint(0, 6, target.shape, generator=generator),
    )
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    metric = SegmentationMetrics(num_classes=6)
    metric.update(prediction, target)
    assert metric.compute() == pytest.approx(_reference(prediction, target, 6), rel=1e-5)


def test_a_class_absent_from_the_split_is_left_out():
    # Class 2 is neither labelled nor predicted: mIoU averages classes 0 and 1 only (MTI-Net's
    # SemsegMeter would count an IoU of 0 for it and report 2/3 of this).
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 1]]))
    assert metric.compute() == pytest.approx({"mIoU": 100.0, "pixel_acc": 100.0, "mean_acc": 100.0})


def test_rejects_bad_options_and_shapes():
    with pytest.raises(ValueError, match="`num_classes` must be an integer ≥ 2"):
        SegmentationMetrics(num_classes=1)
    metric = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match="C = 3 channels"):
        metric.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`target` must be"):
        metric.update(
            torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long)
        )
