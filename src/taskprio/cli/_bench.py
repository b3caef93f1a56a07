"""``taskprio bench``: single-task baselines once, then each method over seeds, then a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from taskprio.cli._progress import progress_factory
from taskprio.cli._results import print_error, print_runs
from taskprio.train import CheckpointError, ConfigError, NonFiniteLossError, run_bench

EXAMPLES = (
    "Examples: taskprio bench multimnist  ·  "
    "taskprio bench multimnist --methods sum,cso,pcgrad --seeds 3  ·  "
    "taskprio bench qm9 --shared-norms --methods sum,nash_mtl,sum+uncertainty --epochs 3"
)

DEFAULT_METHODS = "sum,cso"


def bench(
    benchmark: Annotated[
        str, typer.Argument(help="The benchmark: multimnist, multifashion, qm9, …")
    ] = "multimnist",
    methods: Annotated[
        str,
        typer.Option(help="Comma-separated methods; `method+weighting` adds a loss weighting."),
    ] = DEFAULT_METHODS,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1 per method.")] = 1,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the tasks (default: all).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (default: the benchmark's).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the benchmark's).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: the benchmark's).")
    ] = None,
    task_norms: Annotated[
        bool, typer.Option("--task-norms/--shared-norms", help="Task-specific BatchNorm trunk.")
    ] = True,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N batches of each epoch.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 … or auto.")] = "auto",
    root: Annotated[Path | None, typer.Option(help="Data root (default: ./data).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="The bench directory (default: runs/bench/BENCHMARK).")
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write report.md and plots.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train the single-task baselines (once) and each method over seeds; print Δm; report."""
    console = Console()
    base: dict[str, Any] = {
        "benchmark": benchmark,
        "model": {"task_norms": task_norms},
        "seeds": list(range(seeds)),
        "device": device,
        "data": {"root": None if root is None else str(root)},
    }
    if tasks is not None:
        base["tasks"] = [t.strip() for t in tasks.split(",") if t.strip()]
    if epochs is not None:
        base["epochs"] = epochs
    if batch_size is not None:
        base["batch_size"] = batch_size
    if lr is not None:
        base["optimizer"] = {"lr": lr}
    if limit_batches is not None:
        base["limit_batches"] = limit_batches
    names = [m.strip() for m in methods.split(",") if m.strip()]
    directory = out or Path("runs") / "bench" / benchmark
    finished = sorted(directory.rglob("final.json")) if directory.is_dir() else []
    if finished:
        console.print(
            f"reusing {len(finished)} finished run(s) under {directory} whose settings match "
            "(delete the directory to train them again)",
            soft_wrap=True,
            highlight=False,
        )
    try:
        result = run_bench(
            base, names, output_dir=directory, progress=progress_factory(console, quiet=quiet)
        )
    except ConfigError as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ImportError, CheckpointError) as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    except NonFiniteLossError as error:
        print_error(console, "stopped", error)
        raise typer.Exit(1) from None
    baselines = {task: list(by_seed.values()) for task, by_seed in result.baselines.items()}
    print_runs(
        console,
        [],
        title=f"{benchmark}: test metrics",
        columns=result.runs,
        baselines=baselines,
    )
    if report:
        from taskprio.report import write_report

        path = write_report([directory], out_dir=directory)
        console.print(f"report: {path}", soft_wrap=True, highlight=False)
