"""The torchrun environment, read without a process group (no ranks are started here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskprio.distributed import broadcast_module, broadcast_seed, init_from_env

VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_plain_run_is_rank_zero_of_one(clean_env: pytest.MonkeyPatch):
    info = init_from_env(device="cpu")
    assert (info.rank, info.world_size, info.local_rank, info.backend) == (0, 1, 0, None)
    assert info.device == torch.device("cpu")
    assert info.is_main_process
    assert not torch.distributed.is_initialized()


def test_a_partial_environment_names_the_missing_variables(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"not \['MASTER_ADDR', 'MASTER_PORT'\].*torchrun"):
        init_from_env()


def test_a_non_integer_rank_is_named(clean_env: pytest.MonkeyPatch):
    for name, value in zip(VARIABLES, ("zero", "2", "0", "127.0.0.1", "1"), strict=True):
        clean_env.setenv(name, value)
    clean_env.delenv("LOCAL_RANK")
    with pytest.raises(ValueError, match="RANK must be an integer; got 'zero'"):
        init_from_env()


def test_broadcast_seed_without_a_group():
    assert broadcast_seed(12) == 12
    fresh = broadcast_seed()
    assert 0 <= fresh < 2**63
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer"):
        broadcast_seed(-1)


def test_broadcast_module_without_a_group_changes_nothing():
    module = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    broadcast_module(module)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
