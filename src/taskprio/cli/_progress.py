"""Progress output of training runs: a rich progress bar, or one line per run when quiet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

SHOWN_TASKS = 4


def format_losses(losses: Mapping[str, float]) -> str:
    """``task loss`` pairs, the first few tasks and a count of the rest.

    >>> format_losses({"a": 0.5, "b": 0.25})
    'a 0.500  b 0.250'
    >>> format_losses({f"t{i}": 1.0 for i in range(6)})
    't0 1.000  t1 1.000  t2 1.000  t3 1.000  +2 tasks'
    """
    shown = [f"{task} {value:.3f}" for task, value in list(losses.items())[:SHOWN_TASKS]]
    if len(losses) > SHOWN_TASKS:
        shown.append(f"+{len(losses) - SHOWN_TASKS} tasks")
    return "  ".join(shown)


class RunProgress:
    """A progress bar for one run: steps, ETA, the latest per-task losses; epoch summaries."""

    def __init__(self, console: Console, label: str, seed: int) -> None:
        self.console = console
        self.name = f"{label} seed {seed}"
        self.progress: Progress | None = None
        self.task_id: Any = None

    def start(self, *, total_steps: int, done_steps: int, epochs: int) -> None:
        """Open the bar (at ``done_steps`` when resuming)."""
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task_id = self.progress.add_task(
            self.name, total=total_steps, completed=done_steps, losses=""
        )

    def step(self, *, global_step: int, epoch: int, losses: Mapping[str, float]) -> None:
        """Advance the bar."""
        if self.progress is not None:
            self.progress.update(self.task_id, completed=global_step, losses=format_losses(losses))

    def epoch_end(
        self,
        *,
        epoch: int,
        train_losses: Mapping[str, float],
        val: Mapping[str, Mapping[str, float]],
    ) -> None:
        """Print the epoch's mean losses; close the bar after the last epoch."""
        main = {task: next(iter(metrics.values())) for task, metrics in val.items() if metrics}
        shown = "  ".join(f"{t} {v:.4g}" for t, v in list(main.items())[:SHOWN_TASKS])
        self.console.print(
            f"[dim]{self.name}[/] epoch {epoch + 1}/{self.epochs}  "
            f"loss {format_losses(train_losses)}  │  val {shown}",
            soft_wrap=True,
            highlight=False,
        )
        if epoch + 1 == self.epochs and self.progress is not None:
            self.progress.stop()
            self.progress = None


class QuietProgress:
    """One line when a run ends, nothing else (CI logs)."""

    def __init__(self, console: Console, label: str, seed: int) -> None:
        self.console = console
        self.name = f"{label} seed {seed}"

    def start(self, *, total_steps: int, done_steps: int, epochs: int) -> None:
        """Remember the budget."""
        self.epochs = epochs

    def step(self, *, global_step: int, epoch: int, losses: Mapping[str, float]) -> None:
        """Nothing per step."""

    def epoch_end(
        self,
        *,
        epoch: int,
        train_losses: Mapping[str, float],
        val: Mapping[str, Mapping[str, float]],
    ) -> None:
        """A line after the last epoch."""
        if epoch + 1 == self.epochs:
            self.console.print(f"{self.name}: trained {self.epochs} epochs")


def progress_factory(console: Console, *, quiet: bool) -> Any:
    """``(label, seed) -> progress`` for :func:`taskprio.train.run_experiment`."""
    kind = QuietProgress if quiet else RunProgress

    def make(label: str, seed: int) -> RunProgress | QuietProgress:
        return kind(console, label, seed)

    return make
