"""``taskprio report RUN_DIR...``: a Markdown report with Δm and metric tables and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taskprio.cli._results import print_error

EXAMPLES = (
    "Examples: taskprio report runs/bench/multimnist  ·  "
    "taskprio report runs/multimnist/cso runs/multimnist/sum --out reports/mnist"
)


def report(
    paths: Annotated[list[Path], typer.Argument(help="Run or bench directories.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write report.md and plots/ (default: the one directory)."),
    ] = None,
) -> None:
    """Write report.md (Δm, per-task metrics) and PNG plots from finished runs."""
    from taskprio.report import write_report

    console = Console()
    if out is None and len(paths) > 1:
        print_error(console, "error", ValueError("several directories given: name --out."))
        raise typer.Exit(2)
    try:
        path = write_report(paths, out_dir=out)
    except (FileNotFoundError, ValueError) as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    console.print(f"report: {path}", soft_wrap=True, highlight=False)
