"""Normals: a known set of angles, the histogram median, the angle formula, partial labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskprio.metrics import NormalMetrics, angular_error_deg
from taskprio.metrics._normals import histogram_median

ANGLES_DEG = [0.0, 10.0, 20.0, 25.0, 40.0, 90.0, 180.0]


def _tilted(angles_deg, lengths):
    # Unit z tilted by θ towards x, scaled: the angle to z is θ whatever the length.
    theta = torch.tensor(angles_deg, dtype=torch.float64).deg2rad()
    vectors = torch.stack([theta.sin(), torch.zeros_like(theta), theta.cos()], dim=0)
    return (vectors * torch.tensor(lengths, dtype=torch.float64)).view(1, 3, 1, -1)


def test_known_angles():
    # Seven valid pixels at the angles above, plus a pixel with a zero target (invalid) and a
    # masked one, both predicted far off. mean = 365 / 7; median = 25; within: 2, 3, 4 of 7.
    prediction = _tilted([*ANGLES_DEG, 120.0, 150.0], [1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 7.0, 1.0, 1.0])
    target = _tilted([0.0] * 9, [1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    mask = torch.tensor([[[True] * 8 + [False]]])
    metric = NormalMetrics()
    metric.update(prediction.float(), target.float(), mask)
    result = metric.compute()
    assert result["mean"] == pytest.approx(365 / 7, abs=1e-4)
    assert result["median"] == pytest.approx(25.0, abs=0.005 + 1e-6)
    assert result["within_11.25"] == pytest.approx(2 / 7 * 100)
    assert result["within_22.5"] == pytest.approx(3 / 7 * 100)
    assert result["within_30"] == pytest.approx(4 / 7 * 100)


def test_median_within_half_a_bin_of_numpy():
    generator = torch.Generator().manual_seed(3)
    for size in (1, 2, 101, 1000):  # odd and even counts
        target = torch.randn(1, 3, 1, size, generator=generator, dtype=torch.float64)
        prediction = target + torch.randn(target.shape, generator=generator, dtype=torch.float64)
        metric = NormalMetrics()
        metric.update(prediction, target)
        exact = float(np.median(angular_error_deg(prediction, target).numpy()))
        assert metric.compute()["median"] == pytest.approx(exact, abs=0.005 + 1e-9)


def test_angle_matches_float64_arccos_and_keeps_small_angles():
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    expected = torch.rad2deg(torch.arccos(cosine.clamp(-1, 1)))
    assert float((angular_error_deg(a, b) - expected).abs().max()) <= 1e-9
    # 1e-4° in float32: arccos of the dot product would round it to 0° or to ~0.02°.
    tiny = _tilted([0.0, 1e-4], [1.0, 1.0]).float()
    got = angular_error_deg(tiny[..., 1:], tiny[..., :1]).item()
    assert got == pytest.approx(1e-4, rel=1e-3)


def test_zero_prediction_counts_as_90_degrees():
    target = _tilted([0.0], [1.0])
    assert angular_error_deg(torch.zeros_like(target), target).item() == 90.0


def test_histogram_median():
    assert histogram_median(torch.tensor([0, 3, 0]), bin_width=0.5) == 0.75
    assert histogram_median(torch.tensor([1, 0, 0, 1]), bin_width=1.0) == 2.0
    assert math.isnan(histogram_median(torch.zeros(4, dtype=torch.int64), bin_width=1.0))


def test_180_degrees_falls_in_the_last_bin():
    metric = NormalMetrics()
    metric.update(_tilted([180.0], [1.0]), _tilted([0.0], [1.0]))
    assert metric.compute()["median"] == pytest.approx(179.995)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        NormalMetrics().update(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))
