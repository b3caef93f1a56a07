"""``taskprio data``: which data sets are there, which are missing, and how to get them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taskprio.data import (
    CelebA,
    Cityscapes,
    NYUv2,
    PASCALContext,
    available_benchmarks,
    data_root,
)
from taskprio.data.__main__ import main as build_main

EXAMPLES = (
    "Examples: taskprio data  ·  taskprio data qm9 --build  ·  taskprio data nyuv2  ·  "
    "TASKPRIO_DATA=/srv/data taskprio data"
)

# Data sets read in place from their own on-disk layout (nothing to build).
DENSE_DATASETS = {cls.COMMAND: cls for cls in (NYUv2, PASCALContext, Cityscapes, CelebA)}


def data(
    dataset: Annotated[
        str | None, typer.Argument(help="A data set: a benchmark or nyuv2, pascal_context, …")
    ] = None,
    build: Annotated[bool, typer.Option("--build", help="Build the benchmark's cache.")] = False,
    root: Annotated[
        Path | None, typer.Option(help="Data root (default: $TASKPRIO_DATA, else ./data).")
    ] = None,
) -> None:
    """Show what data is there and what is missing; show a layout, or build a cache."""
    root = data_root() if root is None else root
    console = Console()
    known = list(dict.fromkeys([*available_benchmarks(), *DENSE_DATASETS]))
    if dataset is not None and dataset not in known:
        console.print(f"[red]error:[/] unknown data set {dataset!r}; known: {', '.join(known)}.")
        raise typer.Exit(2)
    if dataset in DENSE_DATASETS:
        if build:
            console.print(f"[red]error:[/] {dataset} is read in place; there is nothing to build.")
            raise typer.Exit(2)
        dataset_class = DENSE_DATASETS[dataset]
        console.print(f"{dataset_class.NAME}: expected under {root / dataset_class.DIRNAME}\n")
        console.print(dataset_class.LAYOUT, markup=False, highlight=False, soft_wrap=True)
        return
    if dataset is not None and build:
        exit_code = build_main([dataset, "--root", str(root)])
        if exit_code:
            raise typer.Exit(exit_code)
        return
    table = Table(title=f"taskprio data under {root}")
    table.add_column("data set", style="bold")
    table.add_column("status")
    table.add_column("how to get it")
    for name in available_benchmarks():
        if (dataset is not None and name != dataset) or name in DENSE_DATASETS:
            continue  # a dense benchmark reads its data set in place: listed below
        cache = root / f"{name}.npz"
        status = f"[green]built[/] ({cache})" if cache.is_file() else "[red]not built[/]"
        table.add_row(name, status, f"make data, or taskprio data {name} --build")
    for name, dataset_class in DENSE_DATASETS.items():
        if dataset is not None:
            break
        folder = root / dataset_class.DIRNAME
        status = f"[green]present[/] ({folder})" if folder.is_dir() else "[red]missing[/]"
        table.add_row(name, status, f"taskprio data {name} (shows the layout)")
    console.print(table)
