"""Depth: a hand-worked example with invalid pixels, split pooling, a float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from taskprio.metrics import DepthMetrics


def test_hand_worked_with_invalid_pixels():
    # Valid: (t=2, p=1), (t=3, p=3), (t=4, p=2); not: depth 0, NaN, mask False.
    # Errors 1, 0, 2: rmse = sqrt(5/3), abs_err = 1, abs_rel = (1/2 + 0 + 2/4) / 3 = 1/3.
    prediction = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 3.0, 0.0], [math.nan, 4.0, 1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    metric = DepthMetrics()
    metric.update(prediction, target, mask)
    expected = {"rmse": math.sqrt(5 / 3), "abs_rel": 1 / 3, "abs_err": 1.0, "rel_err": 1 / 3}
    assert metric.compute() == pytest.approx(expected, rel=1e-6)


def test_rmse_pools_pixels_of_the_split_not_images():
    # Image 1: errors (1, 1) → rmse 1; image 2: error 3 → rmse 3. Pooled: sqrt(11/3) = 1.915,
    # not the mean of per-image rmse, 2.
    metric = DepthMetrics()
    metric.update(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 3.0]]))
    metric.update(torch.tensor([[4.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert metric.compute()["rmse"] == pytest.approx(math.sqrt(11 / 3), rel=1e-6)


def test_matches_a_float64_loop_reference():
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(3, 7, 9, generator=generator, dtype=torch.float64) * 9
    target[target < 1] = 0.0
    prediction = target + torch.randn(target.shape, generator=generator, dtype=torch.float64)
    squared = absolute = relative = 0.0
    count = 0
    for d_hat, d in zip(prediction.flatten().tolist(), target.flatten().tolist(), strict=True):
        if d > 0:
            squared += (d_hat - d) ** 2
            absolute += abs(d_hat - d)
            relative += abs(d_hat - d) / d
            count += 1
    metric = DepthMetrics()
    metric.update(prediction.float(), target.float())
    expected = {
        "rmse": math.sqrt(squared / count),
        "abs_rel": relative / count,
        "abs_err": absolute / count,
        "rel_err": relative / count,
    }
    assert metric.compute() == pytest.approx(expected, rel=1e-5)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        DepthMetrics().update(torch.ones(1, 2, 2), torch.ones(1, 1, 2, 2))
