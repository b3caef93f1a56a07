"""Two gloo processes on CPU, each with half the split, agree with one process on all of it."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _metric_inputs import CASES

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        for name, case in CASES.items():
            generator = torch.Generator().manual_seed(7)
            batches = [case.sample(generator, size) for size in (3, 4)]
            # Rank 0 adds the first batch; rank 1 the second, then one with nothing labelled.
            metric = case.make()
            metric.update(*batches[rank])
            if rank == 1:
                prediction, target, _ = batches[1]
                metric.update(prediction, target, torch.zeros(target.shape[0], dtype=torch.bool))
            reference = case.make(sync_on_compute=False)
            for batch in batches:
                reference.update(*batch)
            expected = reference.compute()
            got = metric.compute()
            assert got == pytest.approx(expected, rel=1e-6), (name, rank, got, expected)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters import torch and torchmetrics: ~3–6 s
def test_two_processes_match_one():
    # spawn, not fork: forking a process whose OpenMP threads have run can hang the children.
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD_SIZE, join=True)
