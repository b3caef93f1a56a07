"""``taskprio train CONFIG``: train every seed of an experiment config; ``--resume`` continues."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taskprio.cli._progress import progress_factory
from taskprio.cli._results import print_error, print_runs
from taskprio.train import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    default_output_dir,
    load_config,
    run_experiment,
)

EXAMPLES = (
    "Examples: taskprio train configs/multimnist/cso.yaml  ·  "
    "taskprio train configs/qm9/nash_mtl.yaml --set epochs=3 --set seeds=[0,1]  ·  "
    "taskprio train runs/multimnist/cso/config.yaml --resume runs/multimnist/cso"
)


def train(
    config: Annotated[Path, typer.Argument(help="The experiment's YAML file.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set epochs=3 --set method.name=pcgrad."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this output directory from its checkpoints."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train the config's method on its benchmark, one run directory per seed."""
    console = Console()
    try:
        experiment = load_config(config, overrides or ())
    except ConfigError as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    output_dir = resume or default_output_dir(experiment)
    try:
        runs = run_experiment(
            experiment,
            output_dir=output_dir,
            resume=resume is not None,
            progress=progress_factory(console, quiet=quiet),
        )
    except (FileNotFoundError, FileExistsError, ImportError, CheckpointError) as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    except NonFiniteLossError as error:
        print_error(console, "stopped", error)
        raise typer.Exit(1) from None
    from taskprio.distributed import is_main_process, shutdown

    if is_main_process():
        print_runs(console, runs, title=f"{experiment.benchmark}: test metrics")
        console.print(f"run directory: {output_dir}", soft_wrap=True, highlight=False)
    shutdown()
