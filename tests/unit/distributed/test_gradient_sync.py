"""Two gloo ranks on the CPU take the step one process takes on the concatenated batch.

One world of two worker processes (``_dist_worker.py``) runs every scenario of
``_dist_scenarios`` for three steps; this process runs the same scenarios without a process
group on the whole batches, through the plain :class:`taskprio.MultiTaskStep`, as the
reference. Parameters and running statistics must agree to 1e-6 relative, and both ranks must
hold bitwise identical states (identical decisions).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _dist_scenarios import CONTROLS, SCENARIOS, run

WORKER = Path(__file__).with_name("_dist_worker.py")
WORLD_SIZE = 2

pytestmark = pytest.mark.slow  # one two-process world for the module: a few seconds


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_world(out: Path, worker: Path, *, world_size: int = WORLD_SIZE) -> None:
    """Run ``worker OUT`` as ranks 0..world_size-1 with torchrun's variables; fail on error."""
    port = free_port()
    processes = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-W", "error", str(worker), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [process.communicate(timeout=180)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = [
        (rank, text)
        for rank, (p, text) in enumerate(zip(processes, outputs, strict=True))
        if p.returncode
    ]
    if failed:
        rank, text = failed[0]
        pytest.fail(f"rank {rank} of the gloo world failed:\n{text[-4000:]}")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("gloo_world")
    launch_world(out, WORKER)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def assert_states_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        scale = float(value.abs().max()) if value.numel() else 1.0
        torch.testing.assert_close(
            actual[key], value, rtol=1e-6, atol=1e-6 * max(scale, 1e-3), msg=key
        )


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_matches_one_process_on_the_global_batch(ranks: list[dict[str, Any]], name: str):
    reference = run(name)  # no process group here: one process on the whole batches
    assert_states_close(ranks[0][name]["state"], reference["state"])
    for got, want in zip(ranks[0][name]["records"], reference["records"], strict=True):
        assert got["phase"] == want["phase"]
        assert got["losses"].keys() == want["losses"].keys()
        for task, value in want["losses"].items():
            assert got["losses"][task] == pytest.approx(value, rel=1e-9)
        for task, value in want["weights"].items():
            assert got["weights"][task] == pytest.approx(value, rel=1e-6, abs=1e-12)
    if "owners" in reference:
        assert ranks[0][name]["owners"] == reference["owners"]


@pytest.mark.parametrize("name", [*SCENARIOS, *CONTROLS])
def test_ranks_hold_identical_states(ranks: list[dict[str, Any]], name: str):
    first, second = ranks[0][name], ranks[1][name]
    for key, value in first["state"].items():
        assert torch.equal(value, second["state"][key]), key
    if name != "pcgrad_average_after":  # that control records each rank's own losses
        assert first["records"] == second["records"]
    assert first.get("owners") == second.get("owners")


def test_partial_supervision_is_exercised(ranks: list[dict[str, Any]]):
    records = ranks[0]["sum"]["records"]
    # Batch 3 has no label of `b` anywhere: it is left out on both ranks, as in one process.
    assert sorted(records[2]["losses"]) == ["a", "c"]
    # Batch 2 has labels of `c` on rank 0 only, and still counts them for both ranks.
    assert "c" in ranks[1]["sum"]["records"][1]["losses"]


def test_averaging_manipulated_gradients_differs(ranks: list[dict[str, Any]]):
    """DDP's average of per-rank PCGrad results is not PCGrad of the global batch."""
    reference = run("pcgrad_average_after")
    with pytest.raises(AssertionError):
        assert_states_close(ranks[0]["pcgrad_average_after"]["state"], reference["state"])


def test_local_norm_statistics_differ_but_ranks_agree(ranks: list[dict[str, Any]]):
    """Unsynchronized task norms: not one process's result, but the same priority on both."""
    reference = run("cso_phase2_local_norms")
    with pytest.raises(AssertionError):
        assert_states_close(ranks[0]["cso_phase2_local_norms"]["state"], reference["state"])
    assert (
        ranks[0]["cso_phase2_local_norms"]["owners"] == ranks[1]["cso_phase2_local_norms"]["owners"]
    )


def test_cso_finds_its_connection_and_mixes_phases(ranks: list[dict[str, Any]]):
    assert ranks[0]["cso_phase2"]["num_connections"] == 1
    phases = {r["phase"] for r in ranks[0]["cso_mixed"]["records"]}
    assert phases == {"phase1", "phase2"}


def test_first_step_names_a_rank_disagreement(ranks: list[dict[str, Any]]):
    for rank in ranks:
        assert "generator method.generator (PCGrad) differs" in rank["replica_seed"]
        assert "broadcast_seed" in rank["replica_seed"]
        assert "parameter 'heads.b.bias' differs" in rank["replica_param"]
        assert "broadcast_module" in rank["replica_param"]
        assert rank["replica_ok"] == ""
