"""Result tables printed by ``train`` and ``bench`` (mean ± std over seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskprio.data import TaskSpec, get_benchmark
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
    baselines: Mapping[str, Sequence[BenchmarkRun]] | None = None,
) -> None:
    """A table: one row per method label, one column per task metric (with its direction).

    Δm (when known) and the mean training time per run close each row. Mean ± std over seeds.

    Args:
        console: where to print.
        runs: the runs of one method (one row) when ``columns`` is None.
        title: the table's title.
        columns: label → runs over seeds, one row each.
        baselines: task → its single-task runs over seeds: a first row, ``single-task``.
    """
    if columns is None:
        columns = {runs[0].label: list(runs)} if runs else {}
    if not columns:
        return
    first = next(iter(columns.values()))[0]
    benchmark = get_benchmark(first.benchmark)
    seeds = sorted({run.seed for group in columns.values() for run in group})
    table = Table(title=f"{title} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    table.add_column("method", style="bold")
    shown = [
        (spec, metric, higher_is_better)
        for spec in benchmark.tasks
        if any(spec.name in group[0].test for group in columns.values())
        for metric, higher_is_better in spec.metrics
    ]
    if len(shown) > max(4, len(columns)):
        _print_by_metric(console, str(table.title or title), shown, columns, baselines)
        return
    for spec, metric, higher_is_better in shown:
        auxiliary = " (aux)" if spec.is_auxiliary else ""
        arrow = "↑" if higher_is_better else "↓"
        table.add_column(f"{spec.name}{auxiliary}\n{metric} {arrow}", justify="right")
    has_delta_m = any(run.delta_m is not None for group in columns.values() for run in group)
    if has_delta_m:
        table.add_column("Δm %\n↑", justify="right", style="bold")
    table.add_column("train s\nper run", justify="right")
    if baselines:
        cells = []
        for spec, metric, _ in shown:
            values = [run.test[spec.name][metric] for run in baselines.get(spec.name, ())]
            cells.append(format_value(metric, values) if values else "")
        if has_delta_m:
            cells.append("0.00")
        every = [run for group in baselines.values() for run in group]
        cells.append(f"{sum(run.train_time_s for run in every) / max(1, len(every)):.1f}")
        table.add_row("single-task", *cells, style="dim")
    for label, group in columns.items():
        cells = []
        for spec, metric, _ in shown:
            values = [run.test[spec.name][metric] for run in group if spec.name in run.test]
            cells.append(format_value(metric, values) if values else "")
        if has_delta_m:
            deltas = [run.delta_m for run in group if run.delta_m is not None]
            cells.append(format_value("delta_m", deltas) if deltas else "")
        cells.append(f"{sum(run.train_time_s for run in group) / len(group):.1f}")
        table.add_row(label, *cells)
    console.print(table)


def _print_by_metric(
    console: Console,
    title: str,
    shown: Sequence[tuple[TaskSpec, str, bool]],
    columns: Mapping[str, Sequence[BenchmarkRun]],
    baselines: Mapping[str, Sequence[BenchmarkRun]] | None,
) -> None:
    """Many task metrics, few methods: one row per task metric, one column per method."""
    table = Table(title=title)
    table.add_column("task", style="bold")
    table.add_column("metric")
    groups = dict(columns)
    if baselines:
        table.add_column("single-task", justify="right", style="dim")
    for label in groups:
        table.add_column(label, justify="right")
    for spec, metric, higher_is_better in shown:
        cells = []
        if baselines:
            values = [run.test[spec.name][metric] for run in baselines.get(spec.name, ())]
            cells.append(format_value(metric, values) if values else "")
        for group in groups.values():
            values = [run.test[spec.name][metric] for run in group if spec.name in run.test]
            cells.append(format_value(metric, values) if values else "")
        name = f"{spec.name} (aux)" if spec.is_auxiliary else spec.name
        table.add_row(name, f"{metric} {'↑' if higher_is_better else '↓'}", *cells)
    if any(run.delta_m is not None for group in groups.values() for run in group):
        cells = ["0.00"] if baselines else []
        for group in groups.values():
            deltas = [run.delta_m for run in group if run.delta_m is not None]
            cells.append(format_value("delta_m", deltas) if deltas else "")
        table.add_row("Δm %", "↑", *cells, style="bold")
    times = []
    if baselines:
        every = [run for group in baselines.values() for run in group]
        times.append(f"{sum(r.train_time_s for r in every) / max(1, len(every)):.1f}")
    times += [f"{sum(r.train_time_s for r in g) / len(g):.1f}" for g in groups.values()]
    table.add_row("", "train s per run", *times)
    console.print(table)
