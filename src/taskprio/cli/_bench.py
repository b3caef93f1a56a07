"""``taskprio bench``: train methods side by side on a benchmark and print per-task results."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from taskprio.data import get_benchmark
from taskprio.methods import METHODS, Method
from taskprio.train import train_benchmark
from taskprio.weighting import WEIGHTINGS

EXAMPLES = (
    "Examples: taskprio bench multimnist  ·  taskprio bench multimnist --epochs 2 --quiet  ·  "
    "taskprio bench qm9 --shared-norms --methods sum,nash_mtl --epochs 3"
)


def bench(
    benchmark: Annotated[
        str, typer.Argument(help="The benchmark: multimnist, multifashion, qm9, …")
    ] = "multimnist",
    methods: Annotated[str, typer.Option(help="Comma-separated method names.")] = "sum,cso",
    weighting: Annotated[str, typer.Option(help="The loss weighting.")] = "equal",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (default: the benchmark's).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the benchmark's).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default: the benchmark's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model and batch order.")] = 0,
    task_norms: Annotated[
        bool, typer.Option("--task-norms/--shared-norms", help="Task-specific BatchNorm trunk.")
    ] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 … or auto.")] = "auto",
    root: Annotated[Path | None, typer.Option(help="Data root (default: ./data).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only print the final table.")] = False,
) -> None:
    """Train each method on the benchmark with the same seed and budget; print test metrics."""
    console = Console()
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        spec = get_benchmark(benchmark, **{k: v for k, v in overrides.items() if v is not None})
        for name in names:
            METHODS.get(name)
        WEIGHTINGS.get(weighting)
    except KeyError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    torch_device = resolve_device(device)
    runs = {}
    for method in names:

        def on_epoch(epoch: int, losses: dict[str, float], method: str = method) -> None:
            if not quiet:
                shown = "  ".join(f"{t} {v:.4f}" for t, v in losses.items())
                console.print(f"[dim]{method}[/] epoch {epoch + 1}/{spec.epochs}  loss {shown}")

        try:
            runs[method] = train_benchmark(
                spec,
                method=create_method(method, epochs=spec.epochs, seed=seed),
                weighting=weighting,
                task_specific_norms=task_norms,
                seed=seed,
                root=root,
                device=torch_device,
                on_epoch=on_epoch,
            )
        except (FileNotFoundError, ImportError) as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from None
    budget = f"{spec.epochs} epoch{'s' if spec.epochs != 1 else ''}"
    norms = "task-specific" if task_norms else "shared"
    settings = f"{budget}, seed {seed}, {weighting} weights, {norms} norms"
    table = Table(title=f"{spec.name}: test metrics, {settings}")
    table.add_column("task", style="bold")
    table.add_column("metric")
    for method in runs:
        table.add_column(method, justify="right")
    for task in spec.tasks:
        for metric, higher_is_better in task.metrics:
            arrow = "↑" if higher_is_better else "↓"
            values = [_format(metric, run.test[task.name][metric]) for run in runs.values()]
            table.add_row(task.name, f"{metric} {arrow}", *values)
    table.add_row("", "train s", *(f"{run.train_time_s:.1f}" for run in runs.values()))
    console.print(table)


def _format(metric: str, value: float) -> str:
    return f"{100 * value:.2f}%" if metric in ("acc", "f1") else f"{value:.4g}"


def create_method(name: str, **run_settings: Any) -> Method:
    """Build a method, passing each run setting its constructor takes by that name.

    Options are matched by constructor argument name, so a method that needs the epoch budget
    (CSO) declares an ``epochs`` argument and gets it; no method is special-cased.

    >>> create_method("cso", epochs=3, seed=1).epochs
    3
    >>> create_method("sum", epochs=3)
    Sum()
    """
    method_class = METHODS.get(name)
    accepted = inspect.signature(method_class).parameters
    return method_class(**{k: v for k, v in run_settings.items() if k in accepted})


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → the first CUDA device if there is one, else the CPU; others as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
