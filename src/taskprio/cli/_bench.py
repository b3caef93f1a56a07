"""``taskprio bench``: train methods side by side on a benchmark and print per-task results."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from taskprio.data import Split, data_root, iterate_batches, load_multi_mnist
from taskprio.methods import METHODS, Method
from taskprio.models import MultiLeNet
from taskprio.nn import make_task_specific
from taskprio.train import train_classification
from taskprio.weighting import WEIGHTINGS

EXAMPLES = (
    "Examples: taskprio bench multimnist  ·  taskprio bench multimnist --epochs 2 --quiet  ·  "
    "taskprio bench multimnist --shared-norms --methods sum"
)

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def bench(
    benchmark: Annotated[str, typer.Argument(help="The benchmark: multimnist.")] = "multimnist",
    methods: Annotated[str, typer.Option(help="Comma-separated method names.")] = "sum,cso",
    weighting: Annotated[str, typer.Option(help="The loss weighting.")] = "equal",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the model and batch order.")] = 0,
    task_norms: Annotated[
        bool, typer.Option("--task-norms/--shared-norms", help="Task-specific BatchNorm trunk.")
    ] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 … or auto.")] = "auto",
    root: Annotated[Path | None, typer.Option(help="Data root (default: ./data).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only print the final table.")] = False,
) -> None:
    """Train each method on the benchmark with the same seed and budget; print test accuracy."""
    console = Console()
    if benchmark != "multimnist":
        console.print(f"[red]error:[/] unknown benchmark {benchmark!r}; known: multimnist.")
        raise typer.Exit(2)
    torch_device = resolve_device(device)
    root = data_root() if root is None else root
    try:
        splits = {s: load_multi_mnist(s, root).to(torch_device) for s in ("train", "val", "test")}
    except FileNotFoundError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    tasks = splits["train"].tasks
    budget = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    table = Table(title=f"MultiMNIST, {budget}, seed {seed}, test accuracy")
    table.add_column("method", style="bold")
    table.add_column("weighting")
    table.add_column("norms")
    for task in tasks:
        table.add_column(f"{task} acc", justify="right")
    table.add_column("train s", justify="right")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        for name in names:
            METHODS.get(name)
        WEIGHTINGS.get(weighting)
    except KeyError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    for method in names:
        torch.manual_seed(seed)
        model = MultiLeNet(tasks)
        if task_norms:
            make_task_specific(model.trunk, tasks)
        model.to(torch_device)

        def on_epoch(epoch: int, losses: dict[str, float], method: str = method) -> None:
            if not quiet:
                shown = "  ".join(f"{t} {v:.4f}" for t, v in losses.items())
                console.print(f"[dim]{method}[/] epoch {epoch + 1}/{epochs}  loss {shown}")

        def train_batches(generator: torch.Generator | None) -> Iterator[Batch]:
            return iterate_batches(splits["train"], batch_size, shuffle=True, generator=generator)

        def eval_batches(split: Split) -> Callable[[], Iterator[Batch]]:
            return lambda: iterate_batches(splits[split], 1024, shuffle=False, generator=None)

        run = train_classification(
            model,
            tasks,
            train_batches,
            {"val": eval_batches("val"), "test": eval_batches("test")},
            method=create_method(method, epochs=epochs, seed=seed),
            weighting=weighting,
            epochs=epochs,
            lr=lr,
            seed=seed,
            on_epoch=on_epoch,
        )
        table.add_row(
            method,
            weighting,
            "task" if task_norms else "shared",
            *(f"{100 * run.test_accuracy[t]:.2f}%" for t in tasks),
            f"{run.train_time_s:.1f}",
        )
    console.print(table)


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
