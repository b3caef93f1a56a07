"""Edge F, classification accuracy, binary accuracy and F1, regression errors: pinned values."""

from __future__ import annotations

import math

import pytest
import torch

from taskprio.metrics import (
    BinaryClassificationMetrics,
    ClassificationMetrics,
    EdgeMetrics,
    RegressionMetrics,
)


def test_edge_f_at_a_fixed_threshold():
    # > 0.5: (1, 1, 0, 0, 1) against (1, 0, 1, 255, 1), last pixel masked: TP 1, FP 1, FN 1.
    metric = EdgeMetrics()
    prediction = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.9]])
    target = torch.tensor([[1, 0, 1, 255, 1]])
    metric.update(prediction, target, mask=torch.tensor([[True, True, True, True, False]]))
    assert metric.compute() == pytest.approx({"F": 50.0})
    # A lower threshold turns pixel 2 into a true positive: P 2/3, R 1, F 0.8.
    metric = EdgeMetrics(threshold=0.05)
    metric.update(prediction, target, mask=torch.tensor([[True, True, True, True, False]]))
    assert metric.compute() == pytest.approx({"F": 80.0})


def test_classification_accuracy_with_missing_labels():
    # Labels (2, 0, 1, 1); sample 2 is unlabelled (mask) and sample 3 has the ignore index.
    metric = ClassificationMetrics(num_classes=3)
    metric.update(
        torch.tensor([2, 1, 0]), torch.tensor([2, 0, 1]), torch.tensor([True, True, False])
    )
    metric.update(torch.tensor([1]), torch.tensor([-1]))
    assert metric.compute() == pytest.approx({"acc": 50.0})


def test_binary_accuracy_and_f1_per_entry_mask():
    # Entries kept: (0.9→1 vs 1), (0.2→0 vs 0), (0.7→1 vs 0); (0.1 vs 1) is masked.
    # Accuracy 2/3; TP 1, FP 1, FN 0: F1 = 2/3.
    metric = BinaryClassificationMetrics()
    prediction = torch.tensor([[0.9, 0.2], [0.7, 0.1]])
    target = torch.tensor([[1, 0], [0, 1]])
    metric.update(prediction, target, mask=torch.tensor([[True, True], [True, False]]))
    assert metric.compute() == pytest.approx({"acc": 200 / 3, "f1": 200 / 3})


def test_regression_errors_skip_missing_targets():
    metric = RegressionMetrics()
    prediction = torch.tensor([[1.0, 0.0], [3.0, 5.0]])
    target = torch.tensor([[2.0, math.nan], [0.0, 0.0]])
    metric.update(prediction, target, mask=torch.tensor([[True, True], [True, False]]))
    # Errors 1 and 3: mae 2, mse 5.
    assert metric.compute() == pytest.approx({"mae": 2.0, "mse": 5.0})


def test_rejects_bad_options_and_shapes():
    with pytest.raises(ValueError, match="`threshold` must be in"):
        EdgeMetrics(threshold=1.0)
    with pytest.raises(ValueError, match="`threshold` must be in"):
        BinaryClassificationMetrics(threshold=0.0)
    with pytest.raises(ValueError, match="`num_classes` must be an integer"):
        ClassificationMetrics(num_classes=True)
    with pytest.raises(ValueError, match=r"\[B, C\] scores or \[B\] labels"):
        ClassificationMetrics(num_classes=3).update(
            torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)
        )
