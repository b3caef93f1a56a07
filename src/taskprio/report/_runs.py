"""RunRecord: one saved training run directory, read back into typed Python objects."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FINAL_FILE = "final.json"
METRICS_FILE = "metrics.csv"
RECORDS_FILE = "records.jsonl"
PRIORITY_FILE = "priority.jsonl"
ENVIRONMENT_FILE = "environment.json"
METRICS_HEADER = ("epoch", "split", "task", "metric", "value")
ROLES = ("method", "baseline")

# What writes each file, for the error that says it is missing.
_WRITERS = {
    FINAL_FILE: "the trainer (`taskprio train`, `taskprio bench`) writes it when a run ends; "
    "a run that was interrupted has none: resume it or train it again",
    METRICS_FILE: "the trainer appends to it after every epoch",
}

Role = Literal["method", "baseline"]


@dataclass(frozen=True)
class MetricRow:
    """One row of ``metrics.csv``.

    Attributes:
        epoch: the 0-based epoch.
        split: ``"train"`` (metric ``loss``: the epoch's mean training loss) or ``"val"``.
        task: the task.
        metric: the metric's name.
        value: its value.
    """

    epoch: int
    split: str
    task: str
    metric: str
    value: float


@dataclass(frozen=True)
class StepEntry:
    """One sampled step of ``records.jsonl``.

    Attributes:
        step: the global optimizer step.
        epoch: the 0-based epoch.
        phase: the method's phase at that step (CSO: ``"phase1"``, ``"phase2"``), or None.
        losses: task → loss.
        weights: task → loss weight; empty when the weighting has none to report.
        skipped: tasks left out of the step (no labels in the batch).
        conflict: free-form conflict diagnostics, name → value.
    """

    step: int
    epoch: int
    phase: str | None = None
    losses: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    conflict: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerShares:
    """The priority of one shared layer at one epoch end (a line of ``priority.jsonl``).

    Attributes:
        name: the layer's qualified name.
        owner: per output channel, the index of the owning task.
        shares: task → fraction of the layer's channels it owns.
        is_degenerate: one task owns every channel.
    """

    name: str
    owner: tuple[int, ...]
    shares: dict[str, float]
    is_degenerate: bool


@dataclass(frozen=True)
class PrioritySnapshot:
    """Every layer's priority at the end of one epoch.

    Attributes:
        epoch: the 0-based epoch.
        tasks: the tasks, in the order ``owner`` indexes them.
        layers: one entry per shared layer.
    """

    epoch: int
    tasks: tuple[str, ...]
    layers: tuple[LayerShares, ...]


@dataclass(frozen=True)
class RunRecord:
    """One training run: its final results, per-epoch metrics, sampled steps and priorities.

    Attributes:
        role: ``"method"`` (a multi-task run) or ``"baseline"`` (a single-task run).
        method: the method's label (``"cso"``, ``"sum+uw"``; ``"single"`` for a baseline).
        seed: the run's seed.
        tasks: the tasks trained; a baseline has exactly one.
        metrics: task → metric → whether higher is better; the first metric of a task is its
            main metric.
        test: task → metric → value on the test split after the last epoch.
        val: the same on the validation split.
        auxiliary: the tasks trained but not counted in Δm.
        benchmark: the benchmark's name.
        weighting: the loss weighting's name.
        epochs: the number of epochs trained (the budget).
        train_time_s: wall time spent in training steps.
        stored_delta_m_pct: the Δm the trainer stored, if any (the report recomputes it).
        environment: the contents of ``environment.json`` (versions, device, seed).
        history: the rows of ``metrics.csv``.
        steps: the rows of ``records.jsonl``.
        priority: the lines of ``priority.jsonl`` (CSO runs only).
        path: the run directory, or None for a record built in memory.

    >>> run = RunRecord(role="baseline", method="single", seed=0, tasks=("left",),
    ...                 metrics={"left": {"acc": True}}, test={"left": {"acc": 91.5}})
    >>> run.is_baseline, run.main_metric("left"), run.counted_tasks
    (True, 'acc', ('left',))
    """

    role: Role
    method: str
    seed: int
    tasks: tuple[str, ...]
    metrics: dict[str, dict[str, bool]]
    test: dict[str, dict[str, float]]
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    auxiliary: tuple[str, ...] = ()
    benchmark: str = ""
    weighting: str = ""
    epochs: int = 0
    train_time_s: float = 0.0
    stored_delta_m_pct: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    history: tuple[MetricRow, ...] = ()
    steps: tuple[StepEntry, ...] = ()
    priority: tuple[PrioritySnapshot, ...] = ()
    path: Path | None = None

    @property
    def is_baseline(self) -> bool:
        """Whether this is a single-task baseline run."""
        return self.role == "baseline"

    @property
    def counted_tasks(self) -> tuple[str, ...]:
        """The tasks that count in Δm: every task that is not auxiliary."""
        return tuple(task for task in self.tasks if task not in self.auxiliary)

    def main_metric(self, task: str) -> str:
        """The first metric of ``task`` in ``final.json``."""
        return next(iter(self.metrics[task]))

    def curve(self, split: str, task: str, metric: str) -> dict[int, float]:
        """Epoch → value of one metric of ``metrics.csv``; empty if the run has none."""
        return {
            row.epoch: row.value
            for row in self.history
            if row.split == split and row.task == task and row.metric == metric
        }

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path is not None else ""
        return f"{self.role} run {self.method!r} seed {self.seed}{where}"


def load_run(path: str | Path) -> RunRecord:
    """Read one run directory.

    ``final.json`` and ``metrics.csv`` are required; ``records.jsonl``, ``priority.jsonl`` and
    ``environment.json`` are read when present; ``config.yaml`` and ``checkpoints/`` are not read.

    Args:
        path: the run directory (or its ``final.json``).

    Returns:
        The :class:`RunRecord`.

    Raises:
        FileNotFoundError: the directory, ``final.json`` or ``metrics.csv`` is missing.
        ValueError: a file is malformed; the message names the file, the line and the field.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as empty:  # doctest: +ELLIPSIS
    ...     load_run(empty)
    Traceback (most recent call last):
    ...
    FileNotFoundError: ... is not a run directory: final.json is missing; the trainer ...
    """
    run_dir = Path(path)
    if run_dir.name == FINAL_FILE and run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.exists():
        raise FileNotFoundError(f"Run directory {run_dir} does not exist.")
    if not run_dir.is_dir():
        raise NotADirectoryError(
            f"{run_dir} is a file; give the run directory that holds {FINAL_FILE}."
        )
    for required in (FINAL_FILE, METRICS_FILE):
        if not (run_dir / required).is_file():
            raise FileNotFoundError(
                f"{run_dir} is not a run directory: {required} is missing; {_WRITERS[required]}."
            )
    final = _read_json(run_dir / FINAL_FILE)
    environment_path = run_dir / ENVIRONMENT_FILE
    environment = _read_json(environment_path) if environment_path.is_file() else {}
    fields = _parse_final(final, run_dir / FINAL_FILE)
    return RunRecord(
        **fields,
        environment=environment,
        history=_read_metrics_csv(run_dir / METRICS_FILE),
        steps=tuple(
            _parse_step(line, where) for where, line in _read_jsonl(run_dir / RECORDS_FILE)
        ),
        priority=tuple(
            _parse_priority(line, where) for where, line in _read_jsonl(run_dir / PRIORITY_FILE)
        ),
        path=run_dir,
    )


def find_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run under ``paths``: run directories, ``taskprio bench`` directories, any mix.

    A path that holds ``final.json`` is one run; any other directory is searched recursively
    for ``final.json`` files. A run found twice (nested paths) is read once.

    Args:
        paths: run directories or directories that contain them.

    Returns:
        The runs, ordered by path.

    Raises:
        FileNotFoundError: a path does not exist or holds no run.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as empty:  # doctest: +ELLIPSIS
    ...     find_runs([empty])
    Traceback (most recent call last):
    ...
    FileNotFoundError: No run under ...: no final.json in it or below it. ...
    """
    run_dirs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; give a run or `taskprio bench` dir.")
        if path.is_file() or (path / FINAL_FILE).is_file():
            run_dirs.append(path)
            continue
        found = sorted(final.parent for final in path.rglob(FINAL_FILE))
        if not found:
            if (path / METRICS_FILE).is_file():
                load_run(path)  # A run without final.json: its error says what is missing.
            raise FileNotFoundError(
                f"No run under {path}: no {FINAL_FILE} in it or below it. Give run "
                f"directories written by `taskprio train`, or a `taskprio bench` directory."
            )
        run_dirs.extend(found)
    if not run_dirs:
        raise ValueError("`paths` is empty; give at least one run or bench directory.")
    seen: set[Path] = set()
    runs = []
    for run_dir in run_dirs:
        record = load_run(run_dir)
        resolved = (record.path or run_dir).resolve()
        if resolved not in seen:
            seen.add(resolved)
            runs.append(record)
    return sorted(runs, key=lambda run: str(run.path))


# --- parsing --------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}, line {error.lineno}: not valid JSON ({error.msg}). The file is damaged; "
            f"train the run again or fix it by hand."
        ) from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object; got {type(content).__name__}.")
    return content


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        return []
    lines = []
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            where = f"{path}, line {number}"
            try:
                content = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg}).") from None
            if not isinstance(content, dict):
                raise ValueError(f"{where}: must be a JSON object; got {text.strip()[:60]!r}.")
            lines.append((where, content))
    return lines


def _read_metrics_csv(path: Path) -> tuple[MetricRow, ...]:
    rows = []
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or tuple(cell.strip() for cell in header) != METRICS_HEADER:
            found = "an empty file" if header is None else f"`{','.join(header)}`"
            raise ValueError(
                f"{path}: the header must be `{','.join(METRICS_HEADER)}`; got {found}. "
                f"The trainer writes this file; was it written by another tool?"
            )
        for cells in reader:
            where = f"{path}, line {reader.line_num}"
            if not cells:
                continue
            if len(cells) != len(METRICS_HEADER):
                raise ValueError(
                    f"{where}: expected {len(METRICS_HEADER)} fields "
                    f"({','.join(METRICS_HEADER)}); got {len(cells)}: {','.join(cells)!r}."
                )
            epoch, split, task, metric, value = (cell.strip() for cell in cells)
            try:
                epoch_index = int(epoch)
            except ValueError:
                raise ValueError(f"{where}: `epoch` must be an integer; got {epoch!r}.") from None
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{where}: `value` must be a number; got {value!r}.") from None
            if epoch_index < 0 or not split or not task or not metric:
                raise ValueError(
                    f"{where}: `epoch` must be ≥ 0 and `split`, `task`, `metric` non-empty; "
                    f"got {','.join(cells)!r}."
                )
            rows.append(MetricRow(epoch_index, split, task, metric, number))
    return tuple(rows)


def _parse_final(final: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Check ``final.json`` and return RunRecord's fields; every problem is reported at once."""
    problems: list[str] = []

    def get(key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in final:
            if default is not None:
                return default
            problems.append(f"`{key}` is missing")
            return None
        value = final[key]
        # bool is an int: reject it where a number is expected.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            problems.append(f"`{key}` must be {_kind_name(kind)}; got {value!r}")
            return None
        return value

    role = get("role", str)
    if role is not None and role not in ROLES:
        problems.append(f"`role` must be one of {list(ROLES)}; got {role!r}")
    method = get("method", str)
    seed = get("seed", int)
    tasks = get("tasks", list)
    auxiliary = get("auxiliary", list, default=[])
    metrics = get("metrics", dict)
    test = get("test", dict)
    val = get("val", dict, default={})
    epochs = get("epochs", int)
    train_time_s = get("train_time_s", (int, float), default=0.0)
    stored = final.get("delta_m")
    if stored is not None and (isinstance(stored, bool) or not isinstance(stored, int | float)):
        problems.append(f"`delta_m` must be a number or null; got {stored!r}")
        stored = None
    if tasks is not None:
        if not tasks or not all(isinstance(task, str) for task in tasks):
            problems.append(f"`tasks` must be a non-empty list of names; got {tasks!r}")
        elif role == "baseline" and len(tasks) != 1:
            problems.append(f"a baseline run has exactly one task; `tasks` is {tasks!r}")
    if tasks and metrics is not None and test is not None:
        for task in tasks:
            directions = metrics.get(task)
            if not isinstance(directions, dict) or not directions:
                problems.append(f"`metrics` has no metric for task {task!r}")
                continue
            if not all(isinstance(is_higher, bool) for is_higher in directions.values()):
                problems.append(
                    f"`metrics`[{task!r}] must map each metric to true (higher is better) or "
                    f"false; got {directions!r}"
                )
            values = test.get(task)
            missing = [m for m in directions if not isinstance(values, dict) or m not in values]
            if missing:
                problems.append(f"`test`[{task!r}] lacks {missing}")
            elif not all(_is_number(values[m]) for m in directions):
                problems.append(f"`test`[{task!r}] must hold numbers; got {values!r}")
    if problems:
        raise ValueError(
            f"{path} is malformed: " + "; ".join(problems) + ". The trainer writes this file; "
            "fix the named fields or train the run again."
        )
    return {
        "role": role,
        "method": method,
        "seed": seed,
        "tasks": tuple(tasks),
        "auxiliary": tuple(auxiliary),
        "metrics": {task: dict(metrics[task]) for task in tasks},
        "test": _float_table(test),
        "val": _float_table(val),
        "benchmark": str(final.get("benchmark", "")),
        "weighting": str(final.get("weighting", "")),
        "epochs": epochs,
        "train_time_s": float(train_time_s),
        "stored_delta_m_pct": None if stored is None else float(stored),
    }


def _parse_step(line: Mapping[str, Any], where: str) -> StepEntry:
    try:
        return StepEntry(
            step=int(line["step"]),
            epoch=int(line["epoch"]),
            phase=None if line.get("phase") is None else str(line["phase"]),
            losses=_float_map(line.get("losses") or {}),
            weights=_float_map(line.get("weights") or {}),
            skipped=tuple(str(task) for task in line.get("skipped") or ()),
            conflict=_float_map(line.get("conflict") or {}),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{where}: a step record needs integer `step` and `epoch` and numeric `losses`, "
            f"`weights`, `conflict` mappings ({type(error).__name__}: {error})."
        ) from None


def _parse_priority(line: Mapping[str, Any], where: str) -> PrioritySnapshot:
    try:
        return PrioritySnapshot(
            epoch=int(line["epoch"]),
            tasks=tuple(str(task) for task in line["tasks"]),
            layers=tuple(
                LayerShares(
                    name=str(layer["name"]),
                    owner=tuple(int(index) for index in layer.get("owner", ())),
                    shares=_float_map(layer["shares"]),
                    is_degenerate=bool(layer.get("is_degenerate", False)),
                )
                for layer in line["layers"]
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{where}: a priority line needs `epoch`, `tasks` and `layers` with `name` and "
            f"`shares` ({type(error).__name__}: {error})."
        ) from None


def _float_map(values: Mapping[str, Any]) -> dict[str, float]:
    return {str(key): float(value) for key, value in values.items()}


def _float_table(table: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    return {
        str(task): {str(m): float(v) for m, v in values.items() if _is_number(v)}
        for task, values in table.items()
        if isinstance(values, dict)
    }


def _is_number(value: Any) -> bool:
    # NaN and inf are numbers here: a diverged run is still reported (its Δm is NaN).
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))
