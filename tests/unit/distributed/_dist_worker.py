"""One rank of the gloo test world: ``python _dist_worker.py OUT_DIR``.

The parent sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT as torchrun does.
Runs every scenario of ``_dist_scenarios`` (and the negative controls and the replica checks)
in one process group and saves the results to ``OUT_DIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _dist_scenarios import CONTROLS, SCENARIOS, TASKS, SharedModel, run

import taskprio
from taskprio.distributed import GradientSync, init_from_env, shutdown
from taskprio.methods import PCGrad


def replica_error(*, seed_of_rank: dict[int, int], perturb_rank: int | None) -> str:
    """The message of the first-step replica check ('' when the step passes)."""
    rank = torch.distributed.get_rank()
    model = SharedModel(norms="none")
    if perturb_rank == rank:
        with torch.no_grad():
            model.heads["b"].bias.add_(1e-3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = taskprio.MultiTaskStep(
        model,
        optimizer,
        TASKS,
        method=PCGrad(seed=seed_of_rank[rank]),
        gradient_sync=GradientSync(),
    )
    outputs = model(torch.ones(2, 4, dtype=torch.float64))
    try:
        step({t: outputs[t].mean() for t in TASKS})
    except RuntimeError as error:
        return str(error)
    return ""


def main() -> None:
    out = Path(sys.argv[1])
    info = init_from_env(timeout_s=60)
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name in [*SCENARIOS, *CONTROLS]:
        results[name] = run(name)
    results["replica_seed"] = replica_error(seed_of_rank={0: 1, 1: 2}, perturb_rank=None)
    results["replica_param"] = replica_error(seed_of_rank={0: 1, 1: 1}, perturb_rank=1)
    results["replica_ok"] = replica_error(seed_of_rank={0: 1, 1: 1}, perturb_rank=None)
    torch.save(results, out / f"rank{info.rank}.pt")
    shutdown()


if __name__ == "__main__":
    main()
