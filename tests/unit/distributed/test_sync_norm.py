"""Synchronized batch norms: conversion, and an ordinary batch norm on one process.

Their statistics over several ranks are checked by the gloo world of ``test_gradient_sync``:
the CSO scenarios train task-specific BatchNorm models on unequal shards (4 and 3 samples)
and compare parameters and running statistics with one process's BatchNorm.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from taskprio.distributed import DistributedBatchNorm, all_reduce_sum, sync_batch_norms
from taskprio.nn import make_task_specific


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, momentum=None), nn.ReLU())


def test_one_process_is_an_ordinary_batch_norm():
    reference = _model()
    model = copy.deepcopy(reference)
    model[1] = DistributedBatchNorm.from_batch_norm(model[1])
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    model.eval()
    reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_conversion_keeps_parameters_and_buffers():
    model = make_task_specific(_model(), ["a", "b"])
    weight, running_var = model[1].norms["a"].weight, model[1].norms["a"].running_var
    keys = set(model.state_dict())
    sync_batch_norms(model, tasks=["a"])
    assert isinstance(model[1].norms["a"], DistributedBatchNorm)
    assert type(model[1].norms["b"]) is nn.BatchNorm2d
    assert model[1].norms["a"].weight is weight
    assert model[1].norms["a"].running_var is running_var
    assert set(model.state_dict()) == keys
    sync_batch_norms(model)
    assert isinstance(model[1].norms["b"], DistributedBatchNorm)


def test_shared_batch_norms_are_converted_only_when_asked():
    model = _model()
    sync_batch_norms(model, include_shared=False)
    assert type(model[1]) is nn.BatchNorm2d
    sync_batch_norms(model)
    assert isinstance(model[1], DistributedBatchNorm)
    assert isinstance(sync_batch_norms(nn.BatchNorm1d(2)), DistributedBatchNorm)


def test_unknown_task_is_an_error():
    model = make_task_specific(_model(), ["a", "b"])
    with pytest.raises(ValueError, match=r"`tasks` names \['c'\]"):
        sync_batch_norms(model, tasks=["c"])


def test_all_reduce_sum_without_a_group_is_the_identity():
    x = torch.arange(3.0, requires_grad=True)
    assert all_reduce_sum(x) is x
