"""Δm and per-task metric tables over seeds, as plain data and as Markdown."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from taskprio.report._runs import RunRecord

if TYPE_CHECKING:
    # taskprio.metrics loads torchmetrics, which loads matplotlib: imported where used, so
    # that `import taskprio.report` (and the CLI's start) stays light.
    from taskprio.metrics import MeanStd

BASELINE_LABEL = "single-task"
DELTA_M_HEADER = ("Method", "Weighting", "Δm (%) ↑", "Seeds", "Epochs", "Train time / run (s)")


# --- grouping -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSet:
    """Runs of one benchmark grouped by method label and seed, baselines by task and seed.

    Attributes:
        benchmark: the benchmark's name.
        methods: method label → seed → run, labels sorted.
        baselines: task → seed → single-task run, tasks in order of first appearance.
    """

    benchmark: str
    methods: dict[str, dict[int, RunRecord]]
    baselines: dict[str, dict[int, RunRecord]]

    @classmethod
    def from_runs(cls, runs: Iterable[RunRecord]) -> RunSet:
        """Group ``runs``; several benchmarks or two runs of one method and seed are errors."""
        runs = list(runs)
        if not runs:
            raise ValueError("No runs to report; give at least one run directory.")
        benchmarks: dict[str, list[str]] = {}
        for run in runs:
            benchmarks.setdefault(run.benchmark, []).append(str(run.path or run.method))
        if len(benchmarks) > 1:
            listed = "; ".join(
                f"{name!r}: {', '.join(where)}" for name, where in benchmarks.items()
            )
            raise ValueError(
                f"The runs come from {len(benchmarks)} benchmarks ({listed}). Δm compares runs "
                f"of one benchmark: report each benchmark separately."
            )
        methods: dict[str, dict[int, RunRecord]] = {}
        baselines: dict[str, dict[int, RunRecord]] = {}
        for run in runs:
            group = baselines.setdefault(run.tasks[0], {}) if run.is_baseline else None
            if group is None:
                group = methods.setdefault(run.method, {})
            if run.seed in group:
                what = f"baseline of task {run.tasks[0]!r}" if run.is_baseline else run.method
                raise ValueError(
                    f"Two runs of {what!r} with seed {run.seed}: {group[run.seed].path} and "
                    f"{run.path}. Report one of them (seeds are what the mean ± std is over)."
                )
            group[run.seed] = run
        return cls(
            benchmark=runs[0].benchmark,
            methods={label: _by_seed(methods[label]) for label in sorted(methods)},
            baselines={task: _by_seed(seeds) for task, seeds in baselines.items()},
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """The row labels: the single-task baseline first (when present), then the methods."""
        return ((BASELINE_LABEL,) if self.baselines else ()) + tuple(self.methods)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task of every run, in order of first appearance."""
        names: dict[str, None] = {}
        for seeds in self.methods.values():
            for run in seeds.values():
                names.update(dict.fromkeys(run.tasks))
        names.update(dict.fromkeys(self.baselines))
        return tuple(names)

    @property
    def auxiliary(self) -> frozenset[str]:
        """The tasks some method run declares auxiliary."""
        return frozenset(t for s in self.methods.values() for r in s.values() for t in r.auxiliary)

    def runs_of(self, label: str, task: str | None = None) -> list[RunRecord]:
        """The runs of one row (the baseline row: of ``task``, or all), ordered by seed."""
        if label == BASELINE_LABEL:
            tasks = list(self.baselines) if task is None else [task]
            return [run for t in tasks for run in self.baselines.get(t, {}).values()]
        runs = self.methods[label].values()
        return [run for run in runs if task is None or task in run.tasks]

    def directions(self, task: str) -> dict[str, bool]:
        """Metric → whether higher is better for ``task``, in the first run's order."""
        merged: dict[str, bool] = {}
        for label in self.labels:
            for run in self.runs_of(label, task):
                for metric, is_higher in run.metrics.get(task, {}).items():
                    merged.setdefault(metric, is_higher)
        return merged

    def baseline_values(self, task: str, seed: int) -> tuple[dict[str, float], bool] | None:
        """The baseline's test metrics of ``task`` for ``seed``, and whether the seed matched.

        The baseline of the same seed when there is one; else the per-metric mean over all the
        baseline's seeds. None when ``task`` has no baseline.
        """
        seeds = self.baselines.get(task)
        if not seeds:
            return None
        if seed in seeds:
            return dict(seeds[seed].test[task]), True
        metrics = seeds[next(iter(seeds))].test[task]
        means = {
            metric: statistics.fmean(run.test[task][metric] for run in seeds.values())
            for metric in metrics
        }
        return means, False


def _by_seed(runs: Mapping[int, RunRecord]) -> dict[int, RunRecord]:
    return {seed: runs[seed] for seed in sorted(runs)}


# --- Δm -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDeltaM:
    """Δm of one multi-task run, and how its baselines were matched.

    Attributes:
        value_pct: Δm in percent; None when a counted task has no baseline; NaN when a value
            is not finite.
        seed_matched: task → whether the baseline had the run's seed (else: mean over seeds).
        missing: counted tasks without any baseline.
    """

    value_pct: float | None
    seed_matched: dict[str, bool] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def run_delta_m(run: RunRecord, runs: RunSet) -> RunDeltaM:
    """Δm (%) on test of ``run`` against the baselines of ``runs``.

    Every metric of every non-auxiliary task counts, each with its direction from
    ``final.json`` (as :func:`taskprio.train.benchmark_delta_m` does).
    """
    method_values: dict[str, float] = {}
    baseline_values: dict[str, float] = {}
    lower_is_better: dict[str, bool] = {}
    seed_matched: dict[str, bool] = {}
    missing = []
    for task in run.counted_tasks:
        found = runs.baseline_values(task, run.seed)
        if found is None:
            missing.append(task)
            continue
        reference, seed_matched[task] = found
        for metric, is_higher in run.metrics[task].items():
            if metric not in reference:
                raise ValueError(
                    f"Δm of {run}: the baseline of task {task!r} has no test metric {metric!r} "
                    f"(it has {sorted(reference)}). Train the baseline with the same benchmark "
                    f"version as the method."
                )
            key = f"{task}/{metric}"
            method_values[key] = run.test[task][metric]
            baseline_values[key] = reference[metric]
            lower_is_better[key] = not is_higher
    if missing or not lower_is_better:
        return RunDeltaM(None, seed_matched, tuple(missing))
    values = [*method_values.values(), *baseline_values.values()]
    if not all(math.isfinite(value) for value in values):
        return RunDeltaM(math.nan, seed_matched)
    from taskprio.metrics import delta_m

    if any(value <= 0 for value in baseline_values.values()):
        # Δm divides by each baseline value: undefined when one is 0 (e.g. an F1 of a
        # baseline that never predicts the positive class); shown like a non-finite value.
        return RunDeltaM(math.nan, seed_matched)
    return RunDeltaM(delta_m(method_values, baseline_values, lower_is_better), seed_matched)


@dataclass(frozen=True)
class DeltaMRow:
    """One row of the Δm table.

    Attributes:
        method: the method's label; ``"single-task"`` for the baseline row.
        is_baseline: whether this is the single-task baseline row (Δm 0 by definition).
        weighting: the loss weighting(s) of the runs.
        seeds: the seeds averaged over.
        epochs: the distinct epoch budgets of the runs (one value when they agree).
        delta_m_pct: mean ± std (n − 1) over seeds of Δm in percent; None: no baselines.
        per_seed_pct: seed → Δm of that run.
        train_time_s: mean ± std over the row's runs of the training time of one run.
        is_best: the highest mean Δm of the table (ties all marked).
    """

    method: str
    is_baseline: bool
    weighting: str
    seeds: tuple[int, ...]
    epochs: tuple[int, ...]
    delta_m_pct: MeanStd | None
    per_seed_pct: dict[int, float]
    train_time_s: MeanStd
    is_best: bool = False

    def cells(self) -> tuple[str, ...]:
        """The row's formatted cells, in the order of :attr:`DeltaMTable.header`."""
        if self.is_baseline:
            shown = "0.00"
        elif self.delta_m_pct is None:
            shown = "n/a"
        else:
            shown = _format_mean_std(self.delta_m_pct, decimals=2, signed=True)
        return (
            self.method,
            self.weighting,
            shown,
            str(len(self.seeds)),
            "–".join(str(e) for e in sorted({min(self.epochs), max(self.epochs)})),
            _format_mean_std(self.train_time_s, decimals=1),
        )


@dataclass(frozen=True)
class DeltaMTable:
    """The Δm table: one row per method, the single-task baseline first.

    Attributes:
        benchmark: the benchmark's name.
        rows: the rows, baseline first, then the methods by label.
        notes: footnotes: how baselines were matched, or how to train them.
        has_baselines: whether any single-task baseline was found.
    """

    benchmark: str
    rows: tuple[DeltaMRow, ...]
    notes: tuple[str, ...]
    has_baselines: bool

    header: ClassVar[tuple[str, ...]] = DELTA_M_HEADER

    def cells(self) -> list[tuple[str, ...]]:
        """Every row's formatted cells (for a terminal table); bold rows: ``row.is_best``."""
        return [row.cells() for row in self.rows]

    def to_markdown(self) -> str:
        """A GitHub Markdown table; the best row in bold, the notes as footnotes."""
        header = list(self.header)
        header[2] += "[^dm]"  # The notes: how baselines were matched.
        rows = [(row.cells(), row.is_best) for row in self.rows]
        lines = _markdown_rows(header, rows, text_columns=2)
        if self.has_baselines:
            lines += ["", f"[^dm]: {' '.join(self.notes)}"]
        else:  # No footnote: the one thing to say is how to get baselines, said plainly.
            lines = [line.replace("[^dm]", "") for line in lines]
            lines += ["", " ".join(self.notes)]
        return "\n".join(lines)


def delta_m_table(runs: Iterable[RunRecord] | RunSet) -> DeltaMTable:
    """Δm (%) on test, mean ± std over seeds, per method label against single-task baselines.

    Each multi-task run is compared with the baseline of the same seed when there is one, else
    with the mean of the baseline over its seeds (the notes say which). Every metric of every
    non-auxiliary task counts. The baseline row comes first with Δm 0 by definition.

    Args:
        runs: the runs of one benchmark (:func:`find_runs`).

    Returns:
        A :class:`DeltaMTable`.

    >>> def run(method, seed, acc_a, acc_b):
    ...     tasks = ("a", "b") if method != "single" else (("a",) if acc_b is None else ("b",))
    ...     role = "baseline" if method == "single" else "method"
    ...     test = {"a": {"acc": acc_a}, "b": {"acc": acc_b}}
    ...     return RunRecord(role=role, method=method, seed=seed, tasks=tasks,
    ...                      metrics={t: {"acc": True} for t in tasks},
    ...                      test={t: test[t] for t in tasks}, epochs=5)
    >>> runs = [run("single", 0, 80.0, None), run("single", 0, None, 50.0),
    ...         run("sum", 0, 84.0, 50.0), run("cso", 0, 80.0, 55.0)]
    >>> table = delta_m_table(runs)
    >>> [(row.method, row.cells()[2], row.is_best) for row in table.rows]
    [('single-task', '0.00', False), ('cso', '+5.00', True), ('sum', '+2.50', False)]
    """
    from taskprio.metrics import MeanStd, mean_std

    grouped = runs if isinstance(runs, RunSet) else RunSet.from_runs(runs)
    rows: list[DeltaMRow] = []
    if grouped.baselines:
        baseline_runs = grouped.runs_of(BASELINE_LABEL)
        seeds = tuple(sorted({run.seed for run in baseline_runs}))
        rows.append(
            DeltaMRow(
                method=BASELINE_LABEL,
                is_baseline=True,
                weighting="—",
                seeds=seeds,
                epochs=tuple(sorted({run.epochs for run in baseline_runs})),
                delta_m_pct=MeanStd(0.0, 0.0, len(seeds)),
                per_seed_pct=dict.fromkeys(seeds, 0.0),
                train_time_s=mean_std(run.train_time_s for run in baseline_runs),
            )
        )
    unmatched: dict[str, set[int]] = {}
    missing: dict[str, set[str]] = {}
    for label, by_seed in grouped.methods.items():
        per_seed: dict[int, float] = {}
        for seed, run in by_seed.items():
            result = run_delta_m(run, grouped)
            for task, is_matched in result.seed_matched.items():
                if not is_matched:
                    unmatched.setdefault(task, set()).add(seed)
            if result.value_pct is None:
                missing.setdefault(label, set()).update(result.missing)
            else:
                per_seed[seed] = result.value_pct
        is_complete = bool(per_seed) and len(per_seed) == len(by_seed)
        rows.append(
            DeltaMRow(
                method=label,
                is_baseline=False,
                weighting=", ".join(sorted({r.weighting or "—" for r in by_seed.values()})),
                seeds=tuple(by_seed),
                epochs=tuple(sorted({run.epochs for run in by_seed.values()})),
                delta_m_pct=mean_std(per_seed.values()) if is_complete else None,
                per_seed_pct=per_seed,
                train_time_s=mean_std(run.train_time_s for run in by_seed.values()),
            )
        )
    rows = _mark_best(rows)
    return DeltaMTable(
        benchmark=grouped.benchmark,
        rows=tuple(rows),
        notes=_delta_m_notes(grouped, unmatched, missing),
        has_baselines=bool(grouped.baselines),
    )


def _mark_best(rows: list[DeltaMRow]) -> list[DeltaMRow]:
    scores = [
        row.delta_m_pct.mean
        for row in rows
        if row.delta_m_pct is not None and not math.isnan(row.delta_m_pct.mean)
    ]
    if len(scores) < 2 or len(set(scores)) == 1:
        return rows  # Nothing to compare, or a tie of all: no row is the best.
    best = max(scores)
    return [
        replace(row, is_best=True)
        if row.delta_m_pct is not None and row.delta_m_pct.mean == best
        else row
        for row in rows
    ]


def _delta_m_notes(
    runs: RunSet, unmatched: Mapping[str, set[int]], missing: Mapping[str, set[str]]
) -> tuple[str, ...]:
    benchmark = runs.benchmark or "<benchmark>"
    if not runs.baselines:
        return (
            "No single-task baselines among these runs, so Δm is n/a. "
            f"`taskprio bench {benchmark}` trains them (into `baselines/<task>/seed<k>/`); "
            "give that directory to the report as well.",
        )
    notes = [
        "Δm on the test split: the mean relative change of every metric of every non-auxiliary "
        "task against the single-task baseline, signed so that + is better (Maninis et al., "
        "2019); mean ± sample std (n − 1) over seeds."
    ]
    if not unmatched:
        notes.append("Every run is compared with the baseline of the same seed.")
    else:
        listed = "; ".join(
            f"task {task!r}: run seeds {_join(seeds)}, baseline seeds {_join(runs.baselines[task])}"
            for task, seeds in unmatched.items()
        )
        notes.append(
            "Runs with a baseline of the same seed are compared with it; the others with the "
            f"mean of the baseline over its seeds ({listed})."
        )
    for label, tasks in missing.items():
        notes.append(
            f"{label!r}: n/a, no baseline of task(s) {_join(sorted(tasks))}; "
            f"`taskprio bench {benchmark}` trains them."
        )
    return tuple(notes)


def _join(values: Iterable[object]) -> str:
    return ", ".join(str(value) for value in values)


# --- per-task metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricTableRow:
    """One method's row of a per-task metric table.

    Attributes:
        method: the method's label; ``"single-task"`` for the baseline.
        values: metric → mean ± std over seeds on test (None: no run has it).
        best: the metrics whose column this row wins.
    """

    method: str
    values: dict[str, MeanStd | None]
    best: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MetricTable:
    """The test metrics of one task, mean ± std over seeds per method.

    Attributes:
        task: the task.
        is_auxiliary: whether it is left out of Δm.
        directions: metric → whether higher is better, main metric first.
        rows: one per method that trained the task, the baseline first.

    >>> runs = [RunRecord(role="method", method=m, seed=s, tasks=("a",),
    ...                   metrics={"a": {"acc": True, "loss": False}},
    ...                   test={"a": {"acc": 90.0 + s + (m == "cso"),
    ...                               "loss": 0.5 - 0.1 * (m == "sum")}})
    ...         for m in ("cso", "sum") for s in (0, 1)]
    >>> table = metric_tables(runs)[0]
    >>> table.header
    ('Method', 'acc ↑', 'loss ↓')
    >>> table.cells()[0]
    ('cso', '91.50 ± 0.71', '0.5000 ± 0.0000')
    >>> [(row.method, sorted(row.best)) for row in table.rows]  # best of each column
    [('cso', ['acc']), ('sum', ['loss'])]
    """

    task: str
    is_auxiliary: bool
    directions: dict[str, bool]
    rows: tuple[MetricTableRow, ...]

    @property
    def header(self) -> tuple[str, ...]:
        """``Method`` then one column per metric with its direction (↑ higher is better)."""
        arrows = {True: "↑", False: "↓"}
        return ("Method", *(f"{m} {arrows[up]}" for m, up in self.directions.items()))

    def cells(self) -> list[tuple[str, ...]]:
        """Every row's formatted cells."""
        return [
            (row.method, *(_format_metric(row.values.get(m)) for m in self.directions))
            for row in self.rows
        ]

    def to_markdown(self) -> str:
        """A GitHub Markdown table; each column's best value in bold."""
        rows = []
        for row, cells in zip(self.rows, self.cells(), strict=True):
            marked = [cells[0]] + [
                f"**{cell}**" if metric in row.best else cell
                for metric, cell in zip(self.directions, cells[1:], strict=True)
            ]
            rows.append((tuple(marked), False))
        return "\n".join(_markdown_rows(list(self.header), rows))


def metric_tables(runs: Iterable[RunRecord] | RunSet) -> list[MetricTable]:
    """One table per task: test metrics, mean ± std over seeds, per method (baseline first).

    Args:
        runs: the runs of one benchmark.

    Returns:
        One :class:`MetricTable` per task, in order of first appearance.
    """
    from taskprio.metrics import mean_std

    grouped = runs if isinstance(runs, RunSet) else RunSet.from_runs(runs)
    tables = []
    for task in grouped.tasks:
        directions = grouped.directions(task)
        rows = []
        for label in grouped.labels:
            task_runs = grouped.runs_of(label, task)
            if not task_runs:
                continue
            values = {}
            for metric in directions:
                found = [r.test[task][metric] for r in task_runs if metric in r.test.get(task, {})]
                values[metric] = mean_std(found) if found else None
            rows.append(MetricTableRow(label, values))
        tables.append(
            MetricTable(
                task, task in grouped.auxiliary, directions, tuple(_mark_columns(rows, directions))
            )
        )
    return tables


def _mark_columns(
    rows: Sequence[MetricTableRow], directions: Mapping[str, bool]
) -> list[MetricTableRow]:
    if len(rows) < 2:
        return list(rows)
    best: dict[str, set[str]] = {row.method: set() for row in rows}
    for metric, is_higher in directions.items():
        scored = {
            row.method: value.mean
            for row in rows
            if (value := row.values.get(metric)) is not None and not math.isnan(value.mean)
        }
        if len(scored) < 2 or len(set(scored.values())) == 1:
            continue  # Nothing to compare, or all tie.
        target = max(scored.values()) if is_higher else min(scored.values())
        for method, mean in scored.items():
            if mean == target:
                best[method].add(metric)
    return [MetricTableRow(row.method, row.values, frozenset(best[row.method])) for row in rows]


# --- formatting -------------------------------------------------------------------------------


def _decimals(value: float) -> int:
    """Two decimals from 1 up, more below 1 so that four significant digits show."""
    if value == 0 or not math.isfinite(value):
        return 2
    return max(2, 3 - math.floor(math.log10(abs(value))))


def _format_metric(value: MeanStd | None) -> str:
    if value is None:
        return "—"
    return _format_mean_std(value, decimals=_decimals(value.mean))


def _format_mean_std(value: MeanStd, *, decimals: int, signed: bool = False) -> str:
    if math.isnan(value.mean):
        return "nan"  # A diverged run: its metrics, and so the mean, are not finite.
    sign = "+" if signed else ""
    mean = f"{value.mean:{sign}.{decimals}f}"
    if value.num_runs < 2 or math.isnan(value.std):
        return mean
    return f"{mean} ± {value.std:.{decimals}f}"


def _markdown_rows(
    header: Sequence[str], rows: Sequence[tuple[Sequence[str], bool]], *, text_columns: int = 1
) -> list[str]:
    """Header, alignment and rows; the first ``text_columns`` left-aligned, numbers right."""

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    aligns = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = [line(header), "|" + "|".join(aligns) + "|"]
    for cells, is_bold in rows:
        lines.append(line(f"**{cell}**" if is_bold else cell for cell in cells))
    return lines
