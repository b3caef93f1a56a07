"""Run directories in the trainer's format, with hand-picked test metrics for Δm by hand.

Layout of :func:`write_bench` (what ``taskprio bench`` writes)::

    bench/baselines/<task>/seed<k>/   single-task runs, method "single"
    bench/<label>/seed<k>/            multi-task runs

Task ``left`` reports ``acc`` (↑) and ``nll`` (↓); task ``right`` reports ``acc`` (↑).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

TASKS = ("left", "right")
METRICS = {"left": {"acc": True, "nll": False}, "right": {"acc": True}}
EPOCHS = 3

# Test values. Δm by hand (percent, + is better) against the same-seed baseline:
#   cso    seed 0: (+2%, +5%, +2.5%) / 3 = +3.1667   seed 1: (+2%, +5%, 0%) / 3 = +2.3333
#   sum+uw seed 0: (−1%, −5%, +1%) / 3 = −1.6667     seed 1: (0%, −5%, +2%) / 3 = −1.0
BASELINE_TEST = {
    ("left", 0): {"acc": 90.0, "nll": 0.40},
    ("left", 1): {"acc": 92.0, "nll": 0.36},
    ("right", 0): {"acc": 80.0},
    ("right", 1): {"acc": 84.0},
}
METHOD_TEST = {
    ("cso", 0): {"left": {"acc": 91.8, "nll": 0.38}, "right": {"acc": 82.0}},
    ("cso", 1): {"left": {"acc": 93.84, "nll": 0.342}, "right": {"acc": 84.0}},
    ("sum+uw", 0): {"left": {"acc": 89.1, "nll": 0.42}, "right": {"acc": 80.8}},
    ("sum+uw", 1): {"left": {"acc": 92.0, "nll": 0.378}, "right": {"acc": 85.68}},
}
WEIGHTINGS = {"cso": "equal", "sum+uw": "uncertainty"}
LAYERS = ("trunk.conv1", "trunk.conv2", "trunk.fc")


def write_run(
    run_dir: Path,
    *,
    role: str,
    method: str,
    weighting: str,
    seed: int,
    tasks: tuple[str, ...],
    test: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, Mapping[str, bool]] | None = None,
    epochs: int = EPOCHS,
    benchmark: str = "multimnist",
    with_priority: bool = False,
    with_weights: bool = False,
) -> Path:
    """Write one run directory exactly as the trainer does; returns ``run_dir``."""
    metrics = {task: dict((metrics or METRICS)[task]) for task in tasks}
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "config.yaml").write_text(
        f"benchmark: {benchmark}\nmethod: {method}\nseed: {seed}\nepochs: {epochs}\n"
    )
    environment = {"taskprio": "0.1.0.dev0", "torch": "2.13.0", "python": "3.12.3"}
    environment |= {"device": "cpu", "seed": seed}
    (run_dir / "environment.json").write_text(json.dumps(environment))
    offset = 0.1 * seed + (0.05 if role == "baseline" else 0.0) + 0.2 * (method == "sum+uw")
    lines = ["epoch,split,task,metric,value"]
    for epoch in range(epochs):
        for index, task in enumerate(tasks):
            loss = (2.0 + index + offset) * 0.5**epoch
            lines.append(f"{epoch},train,{task},loss,{loss!r}")
        for task in tasks:
            for metric, is_higher in metrics[task].items():
                final = test[task][metric]
                # Approaches the test value: from below when higher is better, else from above.
                gap = (EPOCHS - 1 - epoch) * 0.05 * abs(final) * (-1 if is_higher else 1)
                lines.append(f"{epoch},val,{task},{metric},{final + gap!r}")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    records = []
    for step in range(0, epochs * 50, 10):
        weights: dict[str, float] = {}
        if with_weights:
            weights = {
                t: 1.0 + (0.3 if i else -0.3) * step / (epochs * 50) for i, t in enumerate(tasks)
            }
            weights = {t: w + 0.02 * seed for t, w in weights.items()}
        records.append(
            {
                "step": step,
                "epoch": step // 50,
                "phase": ("phase1" if step % 20 else "phase2") if with_priority else None,
                "losses": dict.fromkeys(tasks, 2.0 * 0.99**step),
                "weights": weights,
                "skipped": [],
                "conflict": {"cos_min": -0.1} if len(tasks) > 1 else {},
            }
        )
    (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if with_priority:
        (run_dir / "priority.jsonl").write_text(
            "".join(
                json.dumps(_priority_line(epoch, tasks, seed)) + "\n" for epoch in range(epochs)
            )
        )
    final = {
        "role": role,
        "benchmark": benchmark,
        "method": method,
        "weighting": weighting,
        "seed": seed,
        "tasks": list(tasks),
        "auxiliary": [],
        "metrics": metrics,
        "val": {t: dict(v) for t, v in test.items()},
        "test": {t: dict(v) for t, v in test.items()},
        "epochs": epochs,
        "train_time_s": 10.0 + seed + len(tasks),
        "delta_m": None,
    }
    (run_dir / "final.json").write_text(json.dumps(final, indent=2))
    return run_dir


def _priority_line(epoch: int, tasks: tuple[str, ...], seed: int) -> dict[str, object]:
    """Owners drift from an even split towards ``left``; the last layer is degenerate."""
    layers = []
    for index, name in enumerate(LAYERS):
        channels = 8
        owned_by_first = min(channels, 4 + epoch + index + seed % 2)
        if index == len(LAYERS) - 1:
            owned_by_first = channels
        owner = [0] * owned_by_first + [1] * (channels - owned_by_first)
        shares = {t: owner.count(i) / channels for i, t in enumerate(tasks)}
        layers.append(
            {"name": name, "owner": owner, "shares": shares, "is_degenerate": len(set(owner)) == 1}
        )
    return {"epoch": epoch, "tasks": list(tasks), "layers": layers}


def write_bench(root: Path, *, with_baselines: bool = True) -> Path:
    """A ``taskprio bench`` directory: 2 methods × 2 seeds, and 2 tasks × 2 seeds of baselines."""
    if with_baselines:
        for (task, seed), values in BASELINE_TEST.items():
            write_run(
                root / "baselines" / task / f"seed{seed}", role="baseline", method="single",
                weighting="equal", seed=seed, tasks=(task,), test={task: values},
            )  # fmt: skip
    for (label, seed), test in METHOD_TEST.items():
        write_run(
            root / label / f"seed{seed}", role="method", method=label,
            weighting=WEIGHTINGS[label], seed=seed, tasks=TASKS, test=test,
            with_priority=label == "cso", with_weights=label == "sum+uw",
        )  # fmt: skip
    return root
