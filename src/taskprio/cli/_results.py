"""Result tables printed by ``train`` and ``bench`` (mean ± std over seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskprio.data import get_benchmark
from taskprio.metrics import mean_std
from taskprio.train import BenchmarkRun


def print_error(console: Console, prefix: str, error: BaseException) -> None:
    """``prefix: message`` in red, the message printed verbatim (no markup)."""
    console.print(f"[red]{prefix}:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def format_value(metric: str, values: Sequence[float]) -> str:
    """Mean (± std over seeds when there are several); accuracies and F1 in percent.

    >>> format_value("acc", [0.9, 0.92])
    '91.00 ± 1.41%'
    >>> format_value("mae", [0.25])
    '0.25'
    >>> format_value("delta_m", [1.0, 2.0])
    '+1.50 ± 0.71'
    """
    if metric == "delta_m":
        if len(values) == 1:
            return f"{values[0]:+.2f}"
        summary = mean_std(values)
        return f"{summary.mean:+.2f} ± {summary.std:.2f}"
    scale = 100.0 if metric in ("acc", "f1") else 1.0
    unit = "%" if scale == 100.0 else ""
    if len(values) == 1:
        return f"{scale * values[0]:.2f}{unit}" if unit else f"{values[0]:.4g}"
    summary = mean_std([scale * v for v in values])
    if unit:
        return f"{summary.mean:.2f} ± {summary.std:.2f}{unit}"
    return f"{summary.mean:.4g} ± {summary.std:.2g}"


def print_runs(
    console: Console,
    runs: Sequence[BenchmarkRun],
    *,
    title: str,
    columns: Mapping[str, Sequence[BenchmarkRun]] | None = None,
) -> None:
    """A table: one row per task metric (with its direction), one column per method label.

    Args:
        console: where to print.
        runs: the runs of one method (one column) when ``columns`` is None.
        title: the table's title.
        columns: label → runs over seeds, one column each; Δm and train time rows follow.
    """
    if columns is None:
        columns = {runs[0].label: list(runs)} if runs else {}
    if not columns:
        return
    first = next(iter(columns.values()))[0]
    benchmark = get_benchmark(first.benchmark)
    seeds = sorted({run.seed for group in columns.values() for run in group})
    table = Table(title=f"{title} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    table.add_column("task", style="bold")
    table.add_column("metric")
    for label in columns:
        table.add_column(label, justify="right")
    for spec in benchmark.tasks:
        if not any(spec.name in group[0].test for group in columns.values()):
            continue
        for metric, higher_is_better in spec.metrics:
            arrow = "↑" if higher_is_better else "↓"
            cells = []
            for group in columns.values():
                values = [run.test[spec.name][metric] for run in group if spec.name in run.test]
                cells.append(format_value(metric, values) if values else "")
            name = f"{spec.name} (aux)" if spec.is_auxiliary else spec.name
            table.add_row(name, f"{metric} {arrow}", *cells)
    if any(run.delta_m is not None for group in columns.values() for run in group):
        cells = []
        for group in columns.values():
            values = [run.delta_m for run in group if run.delta_m is not None]
            cells.append(format_value("delta_m", values) if values else "")
        table.add_row("Δm %", "↑", *cells, style="bold")
    table.add_row(
        "",
        "train s",
        *(f"{sum(r.train_time_s for r in group) / len(group):.1f}" for group in columns.values()),
    )
    console.print(table)
