"""Pareto-front learning: LORPMAN vs PaMaL vs COSMOS, hypervolume, parameters, wall time.

Run: .venv/bin/python benchmarks/bench_pareto.py [--benchmarks multimnist,yeast]
     [--seeds 0] [--methods lorpman,pamal,cosmos] [--root data] [--device cpu] [--threads 1]
     [--multimnist-epochs 5 --multimnist-steps N] [--yeast-epochs 25] [--qm9-epochs 1
     --qm9-steps 50] [--json results.json]

Each method trains with `taskprio.pareto.train_pareto` at the benchmark's batch size and Adam
learning rate (MultiMNIST: B = 256, 1e-3; yeast: B = 64; QM9: B = 256), one seed after the
other on the same process, and is evaluated on the whole test split at PaMaL's preference set
(2 tasks: 11 evenly spaced; more: the vertices and the centroid). Networks: without
BatchNorm by default (PaMaL's 27,450-parameter LeNet on MultiMNIST; the benchmarks' MLPs with
`batch_norm=False`), since a norm after the input layer hides α from COSMOS;
`--registry-models` trains the benchmarks' BatchNorm models, recalibrating the norm statistics
per α at evaluation. Method options: defaults
(LORPMAN r = 8, s = 1, W = 3, λ_p = λ_o = 1, freeze at ⌈0.8·E⌉; PaMaL W = 3, λ_p = 1;
COSMOS W = 1) except COSMOS λ = 8 on MultiMNIST (PaMaL's config).

Columns: HV of the per-task main test metric (accuracies: reference 0, the LORPMAN paper's
convention; MAE: the training targets' std), HV of the test losses (reference: the loss of an
uninformed predictor), parameter count and its ratio to LORPMAN's, training and evaluation
wall time and the training-time ratio to LORPMAN's. For 2 tasks, the accuracy of task 1 at
α = (1, 0) and at (0, 1) shows the trade-off (the first should be the higher).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from taskprio.pareto import norm_free_model, train_pareto

METHOD_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "multimnist": {"cosmos": {"cosine_weight": 8.0}},  # PaMaL's MultiMNIST config
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="multimnist,yeast")
    parser.add_argument("--methods", default="lorpman,pamal,cosmos")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default: on a shared 2-core machine, 2 threads ran the yeast "
        "steps 12× slower than 1 (oversubscription)",
    )
    parser.add_argument("--multimnist-epochs", type=int, default=5)
    parser.add_argument("--multimnist-steps", type=int, default=None, help="steps per epoch")
    parser.add_argument("--yeast-epochs", type=int, default=25)
    parser.add_argument("--yeast-steps", type=int, default=None)
    parser.add_argument("--qm9-epochs", type=int, default=1)
    parser.add_argument("--qm9-steps", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, help="write every run's to_dict()")
    parser.add_argument(
        "--registry-models",
        action="store_true",
        help="train the benchmarks' BatchNorm models instead of norm-free ones",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = {
        "multimnist": (args.multimnist_epochs, args.multimnist_steps),
        "yeast": (args.yeast_epochs, args.yeast_steps),
        "qm9": (args.qm9_epochs, args.qm9_steps),
    }
    methods = args.methods.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    records = []
    started = time.perf_counter()
    models = "registry (BatchNorm)" if args.registry_models else "norm-free"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"{models} models"
    )
    for name in args.benchmarks.split(","):
        epochs, steps = budgets.get(name, (1, None))
        rows = []
        for method in methods:
            runs = []
            for seed in seeds:
                run = train_pareto(
                    name,
                    method=method,
                    epochs=epochs,
                    max_steps_per_epoch=steps,
                    seed=seed,
                    root=args.root,
                    device=args.device,
                    # Without BatchNorm (so that COSMOS sees α, and θ(α) needs no shared
                    # statistics) unless --registry-models; None where there is none.
                    model_factory=None if args.registry_models else norm_free_model(name),
                    **METHOD_OPTIONS.get(name, {}).get(method, {}),
                )
                runs.append(run)
                records.append(run.to_dict())
                print(
                    f"  {name} {method} seed {seed}: HV {run.hypervolume:.4f}, "
                    f"{run.steps} steps, {run.train_time_s:.0f} s",
                    flush=True,
                )
            rows.append((method, runs))
        _print_table(name, epochs, steps, rows)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1, allow_nan=False))


def _print_table(name, epochs, steps, rows) -> None:
    first = rows[0][1][0]
    budget = f"{epochs} epochs" + (f" × {steps} steps" if steps else "")
    print(f"\n{name} ({len(first.tasks)} tasks, {budget}, {len(first.test.preferences)} prefs)")
    reference = dict(rows).get("lorpman", rows[0][1])
    base_params = reference[0].num_parameters
    base_time = statistics.median(run.train_time_s for run in reference)
    header = "| method | HV (metrics) | HV (losses) | params | ×params | train s | ×time | eval s |"
    two_tasks = len(first.tasks) == 2
    if two_tasks:
        header += f" {first.tasks[0]} acc at (1,0) / (0,1) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for method, runs in rows:
        hvs = [run.hypervolume for run in runs]
        loss_hvs = [run.loss_hypervolume for run in runs]
        train = statistics.median(run.train_time_s for run in runs)
        evaluation = statistics.median(run.eval_time_s for run in runs)
        line = (
            f"| {method} | {_mean_std(hvs)} | {_mean_std(loss_hvs)} | "
            f"{runs[0].num_parameters:,} | {runs[0].num_parameters / base_params:.2f} | "
            f"{train:.0f} | {train / base_time:.2f} | {evaluation:.0f} |"
        )
        if two_tasks:
            task = first.tasks[0]
            metric = first.objectives[0].split("/")[1]
            at_first = statistics.mean(run.test.metrics[0][task][metric] for run in runs)
            at_last = statistics.mean(run.test.metrics[-1][task][metric] for run in runs)
            line += f" {at_first:.3f} / {at_last:.3f} |"
        print(line)


def _mean_std(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


if __name__ == "__main__":
    main()
