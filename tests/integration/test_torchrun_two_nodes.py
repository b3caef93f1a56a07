"""Two ``torchrun --nnodes 2`` launches on 127.0.0.1 train as one process on the global batch.

Each launch is one "node" with one process; they meet through the c10d rendezvous, as the
multi-node recipe of ``docs/distributed.md`` does on real machines.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _torchrun_two_nodes_script import train

SCRIPT = Path(__file__).with_name("_torchrun_two_nodes_script.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_two_torchrun_nodes_equal_one_process(tmp_path: Path):
    out = tmp_path / "parameters.pt"
    port = _free_port()
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", f"taskprio-test-{port}", "--max-restarts", "0",
        str(SCRIPT), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    try:
        logs = [node.communicate(timeout=180)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, log in zip(nodes, logs, strict=True):
        assert node.returncode == 0, log[-4000:]
    distributed = torch.load(out, weights_only=True)
    _, single = train()  # no torchrun variables here: one process on the whole batches
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-6, atol=1e-9, msg=key)
