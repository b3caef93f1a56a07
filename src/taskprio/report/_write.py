"""write_report: report.md, results.csv and plots/*.png from run and bench directories."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from taskprio.report._runs import RunRecord, find_runs
from taskprio.report._tables import (
    BASELINE_LABEL,
    DeltaMTable,
    RunSet,
    delta_m_table,
    metric_tables,
    run_delta_m,
)

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
PLOTS_DIR = "plots"


def write_report(paths: Sequence[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, ``results.csv`` and ``plots/*.png`` for the runs under ``paths``.

    The report holds the Δm table (mean ± std over seeds against the single-task baselines,
    the best row in bold), one table of test metrics per task (each column's best in bold), the
    seeds and the epoch budget, the environment, and the plots: training curves, loss weights
    (methods whose weights vary), CSO priority shares per layer, and the test trade-off between
    tasks (2 or 3 counted tasks). ``results.csv`` has one row per run with its Δm and every
    test and val metric. See ``docs/report.md``.

    Args:
        paths: run directories and ``taskprio bench`` directories, in any mix.
        out_dir: where to write; default: the one directory given (required for several).

    Returns:
        The path of ``report.md``.

    >>> write_report(["runs/a", "runs/b"])
    Traceback (most recent call last):
    ...
    ValueError: `out_dir` is required when several paths are given; got 2 paths.
    """
    paths = list(paths)
    if out_dir is None:
        if len(paths) != 1:
            raise ValueError(
                f"`out_dir` is required when several paths are given; got {len(paths)} paths."
            )
        only = Path(paths[0])
        out_dir = only.parent if only.is_file() else only
    out = Path(out_dir)
    runs = find_runs(paths)
    grouped = RunSet.from_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    from taskprio.report._plots import write_plots

    plots = write_plots(grouped, out / PLOTS_DIR)
    table = delta_m_table(grouped)
    _write_results_csv(grouped, out / RESULTS_FILE)
    report = out / REPORT_FILE
    report.write_text(_markdown(grouped, table, plots, out), encoding="utf-8")
    logger.info("wrote %s, %s and %d plots", report, RESULTS_FILE, len(plots))
    return report


def _markdown(
    runs: RunSet, table: DeltaMTable, plots: Sequence[tuple[str, Path]], out: Path
) -> str:
    all_runs = [run for label in runs.labels for run in runs.runs_of(label)]
    lines = [f"# taskprio report: {runs.benchmark or 'runs'}", ""]
    lines += [f"- {line}" for line in _summary(runs, all_runs)]
    lines += ["", "## Δm against single-task baselines", ""]
    lines += [table.to_markdown(), ""]
    lines += ["## Test metrics per task", ""]
    lines += [
        "Mean ± std over seeds on the test split; ↑ higher is better, ↓ lower is better; the "
        "best value of each column in bold.",
        "",
    ]
    for metrics in metric_tables(runs):
        note = " (auxiliary: not counted in Δm)" if metrics.is_auxiliary else ""
        lines += [f"### {metrics.task}{note}", "", metrics.to_markdown(), ""]
    lines += ["## Plots", ""]
    if not plots:
        lines += ["No plot: the runs hold no curves.", ""]
    for caption, path in plots:
        relative = path.relative_to(out).as_posix()
        lines += [f"### {caption}", "", f"[![{caption}]({relative})]({relative})", ""]
    lines += _plot_notes(runs, plots)
    lines += ["## Runs", "", "| Method | Seed | Epochs | Train time (s) | Directory |"]
    lines += ["|---|---:|---:|---:|---|"]
    for run in all_runs:
        label = BASELINE_LABEL + f" ({run.tasks[0]})" if run.is_baseline else run.method
        where = _relative(run.path, out)
        lines.append(f"| {label} | {run.seed} | {run.epochs} | {run.train_time_s:.1f} | {where} |")
    lines.append("")
    return "\n".join(lines)


def _summary(runs: RunSet, all_runs: Sequence[RunRecord]) -> list[str]:
    seeds = {label: sorted({r.seed for r in runs.runs_of(label)}) for label in runs.labels}
    distinct = {tuple(s) for s in seeds.values()}
    if len(distinct) == 1:
        only = next(iter(distinct))
        seed_line = f"Seeds: {len(only)} per method ({', '.join(map(str, only))})."
    else:
        shown = ", ".join(f"{label} {len(s)}" for label, s in seeds.items())
        seed_line = f"Seeds per method (they differ): {shown}."
    epochs = sorted({run.epochs for run in all_runs})
    budget = (
        f"Budget: {epochs[0]} epochs per run."
        if len(epochs) == 1
        else f"Budget: {epochs[0]}–{epochs[-1]} epochs per run (runs differ: compare with care)."
    )
    total_s = sum(run.train_time_s for run in all_runs)
    methods = ", ".join(f"`{label}`" for label in runs.methods) or "none"
    lines = [
        f"Methods: {methods}; {len(all_runs)} runs in all.",
        seed_line,
        f"{budget} Total training time {total_s:.1f} s.",
    ]
    lines += [f"Environment: {env}." for env in _environments(all_runs)]
    lines.append(f"Per-run results: [{RESULTS_FILE}]({RESULTS_FILE}).")
    return lines


def _environments(runs: Iterable[RunRecord]) -> list[str]:
    found: dict[str, None] = {}
    for run in runs:
        env = run.environment
        if not env:
            continue
        parts = [f"{name} {env[name]}" for name in ("taskprio", "torch", "python") if name in env]
        if "device" in env:
            parts.append(f"device {env['device']}")
        found[", ".join(parts)] = None
    return list(found)


def _plot_notes(runs: RunSet, plots: Sequence[tuple[str, Path]]) -> list[str]:
    names = {path.name for _, path in plots}
    notes = []
    if "loss_weights.png" not in names:
        notes.append("No loss-weight plot: no method recorded loss weights that vary.")
    if not any(name.startswith("priority_") for name in names):
        notes.append("No priority plot: no run holds `priority.jsonl` (only CSO runs write it).")
    if "tradeoff.png" not in names:
        counted = [task for task in runs.tasks if task not in runs.auxiliary]
        notes.append(
            f"No trade-off plot: it needs 2 or 3 counted tasks and a method run; "
            f"found {len(counted)} task(s)."
        )
    return [*notes, ""] if notes else []


def _relative(path: Path | None, out: Path) -> str:
    if path is None:
        return "—"
    try:
        return Path(os.path.relpath(path, out)).as_posix()
    except ValueError:  # Another drive on Windows.
        return str(path)


def _write_results_csv(runs: RunSet, path: Path) -> None:
    """One row per run: label, role, weighting, seed, epochs, time, Δm, then every metric."""
    columns = [
        (split, task, metric)
        for split in ("test", "val")
        for task in runs.tasks
        for metric in runs.directions(task)
    ]
    header = ["method", "role", "weighting", "seed", "epochs", "train_time_s", "delta_m_pct"]
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*header, *("/".join(column) for column in columns), "path"])
        for label in runs.labels:
            for run in runs.runs_of(label):
                value = None if run.is_baseline else run_delta_m(run, runs).value_pct
                metrics = []
                for split, task, metric in columns:
                    found = getattr(run, split).get(task, {}).get(metric)
                    metrics.append("" if found is None else repr(found))
                writer.writerow(
                    [
                        label,
                        run.role,
                        run.weighting,
                        run.seed,
                        run.epochs,
                        repr(run.train_time_s),
                        "" if value is None or math.isnan(value) else repr(value),
                        *metrics,
                        "" if run.path is None else str(run.path),
                    ]
                )
