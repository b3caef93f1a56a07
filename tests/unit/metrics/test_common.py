"""Every task metric: the shared interface, accumulation over batches, reset, partial labels."""

from __future__ import annotations

import math

import pytest
import torch
from _metric_inputs import CASES
from torchmetrics import Metric

from taskprio.metrics import TaskMetric


def _batches(name, sizes=(3, 5)):
    generator = torch.Generator().manual_seed(0)
    return [CASES[name].sample(generator, size) for size in sizes]


def _concat(batches):
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-9, nan_ok=True), name


@pytest.mark.parametrize("name", CASES)
def test_interface(name):
    metric = CASES[name].make()
    assert isinstance(metric, Metric)
    assert isinstance(metric, TaskMetric)
    assert metric.higher_is_better == metric.directions[metric.primary]
    metric.update(*_batches(name)[0])
    result = metric.compute()
    assert list(result) == list(metric.directions)
    assert all(isinstance(value, float) and math.isfinite(value) for value in result.values())


@pytest.mark.parametrize("name", CASES)
def test_two_halves_equal_one_update(name):
    batches = _batches(name)
    split = CASES[name].make()
    for batch in batches:
        split.update(*batch)
    whole = CASES[name].make()
    whole.update(*_concat(batches))
    _assert_same(split.compute(), whole.compute())


@pytest.mark.parametrize("name", CASES)
def test_forward_returns_the_batch_and_accumulates(name):
    first, second = _batches(name)
    metric = CASES[name].make()
    metric(*first)
    batch_only = CASES[name].make()
    batch_only.update(*second)
    _assert_same(metric(*second), batch_only.compute())
    both = CASES[name].make()
    both.update(*_concat([first, second]))
    _assert_same(metric.compute(), both.compute())


@pytest.mark.parametrize("name", CASES)
def test_reset_forgets_everything(name):
    first, second = _batches(name)
    metric = CASES[name].make()
    metric.update(*first)
    metric.compute()
    metric.reset()
    metric.update(*second)
    fresh = CASES[name].make()
    fresh.update(*second)
    _assert_same(metric.compute(), fresh.compute())


@pytest.mark.parametrize("name", CASES)
def test_masked_samples_do_not_count(name):
    prediction, target, _ = _batches(name, sizes=(6,))[0]
    keep = torch.tensor([True, False, True, True, False, True])
    masked = CASES[name].make()
    masked.update(prediction, target, mask=keep)
    selected = CASES[name].make()
    selected.update(prediction[keep], target[keep])
    _assert_same(masked.compute(), selected.compute())


@pytest.mark.parametrize("name", CASES)
def test_nothing_labelled_gives_nan(name):
    prediction, target, _ = _batches(name)[0]
    metric = CASES[name].make()
    metric.update(prediction, target, mask=torch.zeros(target.shape[0], dtype=torch.bool))
    assert all(math.isnan(value) for value in metric.compute().values())


@pytest.mark.parametrize("name", CASES)
def test_mask_of_the_wrong_shape_is_rejected(name):
    prediction, target, _ = _batches(name)[0]
    metric = CASES[name].make()
    with pytest.raises(ValueError, match="`mask` must have the labels' shape"):
        metric.update(prediction, target, mask=torch.ones(target.shape[0] + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="`mask` must be a boolean tensor"):
        metric.update(prediction, target, mask=torch.ones(target.shape[0]))
