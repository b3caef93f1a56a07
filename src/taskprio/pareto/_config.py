"""Configs of Pareto-front runs (``taskprio pareto --config``), and user-given preferences.

A config names a benchmark, the methods to train (each with its constructor options), the
network, the budget and the preferences to evaluate besides the default set. Unknown keys are
reported with the closest valid one, and method options are checked against the method's
constructor, every problem at once, as for training configs
(:func:`taskprio.train.parse_config`).

>>> config = parse_pareto_config({"benchmark": "yeast", "options": {"lorpman": {"rank": 4}}})
>>> config.methods, config.network, config.options
(['lorpman', 'pamal', 'cosmos'], 'norm_free', {'lorpman': {'rank': 4}})
>>> parse_pareto_config({"benchmark": "yeast", "epoch": 3})
Traceback (most recent call last):
...
taskprio.train._config.ConfigError: invalid config:
  epoch: unknown key; did you mean `epochs`?
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from taskprio.train._config import (
    _suggest,
    apply_overrides,
    read_yaml_mapping,
    validate_config,
)

if TYPE_CHECKING:
    import pydantic

NETWORKS = ("norm_free", "benchmark")
"""``network`` values: the benchmark's network without BatchNorm (where there is one, see
:func:`~taskprio.pareto.norm_free_model`), or the benchmark's own model."""

_MODEL: type[pydantic.BaseModel] | None = None


def _pareto_model() -> type[pydantic.BaseModel]:
    """Build the pydantic model on first use, so ``import taskprio`` does not load pydantic."""
    global _MODEL
    if _MODEL is None:
        _MODEL = _define_model()
    return _MODEL


def _define_model() -> type[pydantic.BaseModel]:
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class ParetoConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", validate_assignment=True)

        benchmark: str
        methods: list[str] = Field(
            default_factory=lambda: ["lorpman", "pamal", "cosmos"], min_length=1
        )
        options: dict[str, dict[str, Any]] = Field(
            default_factory=dict, description="Method → its constructor arguments."
        )
        tasks: list[str] | None = Field(None, min_length=1, description="None: every task.")
        network: Literal["norm_free", "benchmark"] = Field(
            "norm_free", description="norm_free where the benchmark has one, else its model."
        )
        seed: int = 0
        epochs: int | None = Field(None, ge=1, description="None: the benchmark's default.")
        batch_size: int | None = Field(None, ge=1, description="None: the benchmark's default.")
        lr: float | None = Field(None, gt=0, description="None: the benchmark's default.")
        limit_batches: int | None = Field(None, ge=1, description="Steps per epoch at most.")
        preferences: list[list[float]] | None = Field(
            None, description="Extra α to evaluate, each normalized onto the simplex."
        )
        eval_random: int = Field(0, ge=0, description="Seeded Dir(1) α added to the default set.")
        reference_point: list[float] | None = Field(None, description="None: the default.")
        recalibration_batches: int = Field(8, ge=0, description="Norm statistics per α.")
        device: str = "auto"
        root: Path | None = Field(None, description="Data root; None: $TASKPRIO_DATA or ./data.")
        output_dir: Path | None = Field(None, description="None: runs/pareto/<benchmark>.")

    return ParetoConfig


def pareto_config_model() -> type[pydantic.BaseModel]:
    """The pydantic model of a Pareto config (``ParetoConfig``).

    >>> sorted(pareto_config_model().model_fields)[:3]
    ['batch_size', 'benchmark', 'device']
    """
    return _pareto_model()


def parse_pareto_config(raw: Mapping[str, Any]) -> Any:
    """Validate a Pareto config mapping (as read from YAML) into a ``ParetoConfig``.

    Checks keys and types, that the benchmark, tasks and methods exist, that each method's
    options are constructor arguments with valid values, and that ``preferences`` and
    ``reference_point`` have one entry per task; every problem is reported at once.

    Args:
        raw: the mapping.

    Returns:
        The validated ``ParetoConfig`` (a pydantic model).

    Raises:
        ConfigError: one line per problem, each starting with its key.
    """
    return validate_config(_pareto_model(), raw, _check_names)


def load_pareto_config(path: Path | str, overrides: Sequence[str] = ()) -> Any:
    """Read a Pareto config from YAML, apply ``key=value`` overrides, validate.

    Args:
        path: the YAML file.
        overrides: ``"dotted.key=value"`` strings, values parsed as YAML
            (``epochs=3``, ``options.lorpman.rank=4``).

    Returns:
        The validated ``ParetoConfig``.

    Raises:
        ConfigError: the file is missing or not a YAML mapping, or validation fails.
    """
    return parse_pareto_config(apply_overrides(read_yaml_mapping(path), overrides))


def simplex_preferences(rows: Sequence[Sequence[float]], tasks: Sequence[str]) -> Tensor:
    """User-given preferences, each row divided by its sum onto the simplex.

    Args:
        rows: P rows of m non-negative weights, not all zero (``[1, 3]`` means α = (0.25, 0.75)).
        tasks: the m task names, in preference order.

    Returns:
        [P, m] float64, rows summing to 1.

    Raises:
        ValueError: a row with another length than m, a negative or non-finite entry, or all
            zeros; the message names the row, the expected length and the tasks.

    >>> simplex_preferences([[1, 3], [0.5, 0.5]], ["left", "right"])
    tensor([[0.2500, 0.7500],
            [0.5000, 0.5000]], dtype=torch.float64)
    >>> simplex_preferences([[0.2, 0.3, 0.5]], ["left", "right"])
    Traceback (most recent call last):
    ...
    ValueError: preference 1 (0.2, 0.3, 0.5) has 3 values; expected 2, one per task (left, right).
    """
    problems = _preference_problems(rows, tasks)
    if problems:
        raise ValueError(" ".join(problems))
    if not rows:
        return torch.zeros(0, len(tasks), dtype=torch.float64)
    values = torch.tensor([[float(value) for value in row] for row in rows], dtype=torch.float64)
    return values / values.sum(dim=1, keepdim=True)  # [P, m]


def parse_preference_text(text: str) -> list[list[float]]:
    """``"0.2,0.8;1,1"`` → ``[[0.2, 0.8], [1.0, 1.0]]``: rows split by ``;``, entries by ``,``.

    >>> parse_preference_text("0.2,0.8; 1,1")
    [[0.2, 0.8], [1.0, 1.0]]
    """
    rows = []
    for number, part in enumerate(text.split(";"), start=1):
        if not part.strip():
            continue
        try:
            rows.append([float(entry) for entry in part.split(",")])
        except ValueError:
            raise ValueError(
                f"preference {number} {part.strip()!r} is not a comma-separated list of numbers; "
                "write e.g. '0.2,0.8;0.5,0.5'."
            ) from None
    if not rows:
        raise ValueError(f"no preference in {text!r}; write e.g. '0.2,0.8;0.5,0.5'.")
    return rows


def _preference_problems(rows: Sequence[Sequence[float]], tasks: Sequence[str]) -> list[str]:
    problems = []
    expected = f"expected {len(tasks)}, one per task ({', '.join(tasks)})"
    for number, row in enumerate(rows, start=1):
        shown = "(" + ", ".join(f"{float(value):g}" for value in row) + ")"
        if len(row) != len(tasks):
            problems.append(f"preference {number} {shown} has {len(row)} values; {expected}.")
        elif not all(math.isfinite(float(value)) and float(value) >= 0 for value in row):
            problems.append(
                f"preference {number} {shown} has a negative or non-finite entry; weights must "
                "be non-negative."
            )
        elif sum(float(value) for value in row) == 0:
            problems.append(
                f"preference {number} {shown} is all zeros; give at least one positive weight."
            )
    return problems


def method_arguments(name: str) -> list[str]:
    """The keyword arguments of the Pareto method registered as ``name``.

    >>> method_arguments("cosmos")
    ['window', 'concentration', 'cosine_weight']
    """
    from taskprio.pareto._method import PARETO_METHODS

    return [
        option
        for option, parameter in inspect.signature(PARETO_METHODS.get(name)).parameters.items()
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]


def _check_names(raw: Mapping[str, Any]) -> list[str]:
    """Problems with the benchmark, tasks, methods and options, preferences, reference point."""
    from taskprio.data import available_benchmarks, get_benchmark
    from taskprio.pareto._method import PARETO_METHODS

    problems: list[str] = []
    tasks: Sequence[str] | None = None
    name = raw.get("benchmark")
    if isinstance(name, str) and name not in available_benchmarks():
        problems.append(
            f"benchmark: unknown benchmark {name!r}{_suggest(name, available_benchmarks())}; "
            f"available: {', '.join(available_benchmarks())}."
        )
    elif isinstance(name, str):
        names = get_benchmark(name).task_names
        chosen = raw.get("tasks")
        if isinstance(chosen, list):
            unknown = [task for task in chosen if task not in names]
            problems.extend(
                f"tasks: {name} has no task {task!r}{_suggest(str(task), names)}; its tasks are "
                f"{', '.join(names)}."
                for task in unknown
            )
            if len(set(map(str, chosen))) != len(chosen):
                problems.append(f"tasks: each task may appear once; got {chosen}.")
            if not unknown and chosen:
                tasks = [str(task) for task in chosen]
        elif chosen is None:
            tasks = list(names)
    methods = raw.get("methods")
    if isinstance(methods, list):
        for method in methods:
            if isinstance(method, str):
                try:
                    PARETO_METHODS.get(method)
                except KeyError as error:
                    problems.append(f"methods: {error.args[0]}")
        if len(set(map(str, methods))) != len(methods):
            problems.append(f"methods: each method may appear once; got {methods}.")
    options = raw.get("options")
    if isinstance(options, Mapping):
        for method, entry in options.items():
            problems += _option_problems(str(method), entry, PARETO_METHODS.names())
    if tasks is not None:
        preferences = raw.get("preferences")
        if isinstance(preferences, list) and all(
            isinstance(row, list) and all(isinstance(v, (int, float)) for v in row)
            for row in preferences
        ):
            problems += [
                f"preferences: {item}" for item in _preference_problems(preferences, tasks)
            ]
        reference = raw.get("reference_point")
        if isinstance(reference, list) and len(reference) != len(tasks):
            problems.append(
                f"reference_point: has {len(reference)} values; expected {len(tasks)}, one per "
                f"task ({', '.join(tasks)})."
            )
    return problems


def _option_problems(method: str, entry: Any, known: Sequence[str]) -> list[str]:
    from taskprio.pareto._method import PARETO_METHODS

    if method not in known:
        return [
            f"options.{method}: no Pareto method {method!r}{_suggest(method, known)}; known: "
            f"{', '.join(known)}."
        ]
    if not isinstance(entry, Mapping):
        return []  # the type check reports it
    accepted = method_arguments(method)
    problems = [
        f"options.{method}.{option}: {method} takes no option {option!r}"
        f"{_suggest(str(option), accepted)}; it takes {', '.join(accepted)}."
        for option in entry
        if option not in accepted
    ]
    if not problems:
        try:
            PARETO_METHODS.create(method, **entry)
        except (TypeError, ValueError) as error:
            message = error.args[0] if error.args else error
            problems.append(f"options.{method}: {message}")
    return problems
