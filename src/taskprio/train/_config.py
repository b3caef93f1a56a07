"""Experiment configs: YAML files validated into typed objects, with ``key=value`` overrides.

A config names a benchmark and says how to train on it: tasks, model options, the method and
the loss weighting with their options, optimizer, learning-rate schedule, budget, seeds,
device and output directory. Every section rejects unknown keys (naming the closest valid one),
and method / weighting options are checked against the constructor they are passed to, so a
typo fails when the file is read, not hours into a run.

>>> config = parse_config({"benchmark": "yeast", "method": {"name": "pcgrad"}})
>>> config.method.name, config.optimizer.name, config.seeds
('pcgrad', 'adam', [0])
>>> parse_config({"benchmark": "yeast", "methdo": {"name": "pcgrad"}})
Traceback (most recent call last):
...
taskprio.train._config.ConfigError: invalid config:
  methdo: unknown key; did you mean `method`?
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pydantic


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem with its key path."""


def _models() -> dict[str, type[pydantic.BaseModel]]:
    """Build the pydantic models on first use, so ``import taskprio`` does not load pydantic."""
    global _MODELS
    if _MODELS is None:
        _MODELS = _define_models()
    return _MODELS


_MODELS: dict[str, type[pydantic.BaseModel]] | None = None


def _define_models() -> dict[str, type[pydantic.BaseModel]]:
    from pydantic import BaseModel, ConfigDict, Field

    class Section(BaseModel):
        model_config = ConfigDict(extra="forbid", validate_assignment=True)

    class ModelSection(Section):
        task_norms: bool = Field(True, description="Task-specific norms in the trunk (CSO).")
        options: dict[str, Any] = Field(
            default_factory=dict, description="Benchmark fields, e.g. hidden sizes."
        )

    class MethodSection(Section):
        name: str = "sum"
        options: dict[str, Any] = Field(default_factory=dict)

    class WeightingSection(Section):
        name: str = "equal"
        options: dict[str, Any] = Field(default_factory=dict)

    class OptimizerSection(Section):
        name: Literal["adam", "adamw", "sgd"] = "adam"
        lr: float | None = Field(None, gt=0, description="None: the benchmark's default.")
        weight_decay: float = Field(0.0, ge=0)
        momentum: float = Field(0.9, ge=0, description="SGD only.")

    class ScheduleSection(Section):
        name: Literal["constant", "poly", "cosine", "step"] = "constant"
        power: float = Field(0.9, gt=0, description="poly: lr · (1 - t/T)^power.")
        step_epochs: int = Field(30, ge=1, description="step: decay every this many epochs.")
        gamma: float = Field(0.1, gt=0, description="step: the decay factor.")

    class DataSection(Section):
        root: Path | None = Field(None, description="Data root; None: $TASKPRIO_DATA or ./data.")
        partial_labels: float = Field(
            0.0, ge=0, le=1, description="Share of training labels hidden per task (seeded)."
        )

    class CheckpointSection(Section):
        every_steps: int = Field(0, ge=0, description="0: only at the end of each epoch.")
        keep: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted.")

    class DistributedSection(Section):
        sync_norms: bool = Field(
            True, description="Batch norms use global-batch statistics (torchrun only)."
        )
        bucket: Literal["all", "task"] = Field(
            "all", description="One all-reduce for all tasks' gradients, or one per task."
        )

    class ExperimentConfig(Section):
        benchmark: str
        name: str | None = Field(None, description="Label in reports; default: method[+weighting].")
        tasks: list[str] | None = None
        model: ModelSection = Field(default_factory=lambda: ModelSection())
        method: MethodSection = Field(default_factory=lambda: MethodSection())
        weighting: WeightingSection = Field(default_factory=lambda: WeightingSection())
        optimizer: OptimizerSection = Field(default_factory=lambda: OptimizerSection())
        schedule: ScheduleSection = Field(default_factory=lambda: ScheduleSection())
        data: DataSection = Field(default_factory=lambda: DataSection())
        checkpoint: CheckpointSection = Field(default_factory=lambda: CheckpointSection())
        distributed: DistributedSection = Field(default_factory=lambda: DistributedSection())
        epochs: int | None = Field(None, ge=1, description="None: the benchmark's default.")
        batch_size: int | None = Field(None, ge=1, description="None: the benchmark's default.")
        seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
        device: str = "auto"
        output_dir: Path | None = Field(None, description="None: runs/<benchmark>/<name>.")
        record_every: int = Field(10, ge=1, description="Keep every n-th step record.")
        limit_batches: int | None = Field(
            None, ge=1, description="Train on the first n batches of each epoch (smoke tests)."
        )
        on_nonfinite: Literal["stop", "skip"] = "stop"
        precision: Literal["fp32", "bf16"] = Field(
            "fp32", description="bf16: forwards under torch.autocast; gradients stay float32."
        )

    return {
        model.__name__: model
        for model in (
            Section,
            ModelSection,
            MethodSection,
            WeightingSection,
            OptimizerSection,
            ScheduleSection,
            DataSection,
            CheckpointSection,
            DistributedSection,
            ExperimentConfig,
        )
    }


def experiment_model() -> type[pydantic.BaseModel]:
    """The pydantic model of a whole config (``ExperimentConfig``), for checks without names."""
    return _models()["ExperimentConfig"]


def parse_config(raw: Mapping[str, Any]) -> Any:
    """Validate a config mapping (as read from YAML) into an ``ExperimentConfig``.

    Checks every section's keys and types, that the benchmark, tasks, method and weighting
    exist, and that their options are constructor arguments; every problem is reported at once.

    Args:
        raw: the mapping.

    Returns:
        The validated ``ExperimentConfig`` (a pydantic model; ``.model_dump()`` gives plain data).

    Raises:
        ConfigError: one line per problem, each starting with the key path.
    """
    return validate_config(_models()["ExperimentConfig"], raw, _check_names)


def validate_config(
    model: type[pydantic.BaseModel],
    raw: Mapping[str, Any],
    check_names: Callable[[Mapping[str, Any]], list[str]],
) -> Any:
    """Validate ``raw`` with a pydantic ``model`` plus name checks; report every problem at once.

    Args:
        model: the config's pydantic model (sections with ``extra="forbid"``).
        raw: the mapping, as read from YAML.
        check_names: ``raw -> problems`` for what pydantic cannot know (registry names,
            constructor options); it must cope with malformed input.

    Raises:
        ConfigError: one line per problem, each starting with the key path.
    """
    from pydantic import ValidationError

    if not isinstance(raw, Mapping):
        raise ConfigError(f"invalid config: expected a mapping of keys, got {type(raw).__name__}.")
    problems = []
    config = None
    try:
        config = model.model_validate(dict(raw))
    except ValidationError as error:
        problems = [_describe(item, model) for item in error.errors()]
    problems += check_names(raw)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> Any:
    """Read a YAML config, apply ``key=value`` overrides, validate.

    Args:
        path: the YAML file.
        overrides: ``"dotted.key=value"`` strings; the value is parsed as YAML
            (``epochs=3``, ``method.name=pcgrad``, ``seeds=[0,1,2]``).

    Returns:
        The validated ``ExperimentConfig``.

    Raises:
        ConfigError: the file is missing or not YAML, an override is malformed, or validation
            fails.
    """
    return parse_config(apply_overrides(read_yaml_mapping(path), overrides))


def read_yaml_mapping(path: Path | str) -> dict[str, Any]:
    """The mapping in a YAML file; a :class:`ConfigError` naming the file otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys.")
    return raw


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (value parsed as YAML).

    >>> apply_overrides({"method": {"name": "sum"}}, ["method.name=cso", "epochs=3"])
    {'method': {'name': 'cso'}, 'epochs': 3}
    """
    import copy

    import yaml

    result = copy.deepcopy(dict(raw))
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"override {override!r} must look like `key=value` (e.g. epochs=3).")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: `{part}` is not a section.")
            node = child
        node[parts[-1]] = value
    return result


def dump_config(config: Any) -> str:
    """The config as YAML text, every default filled in (the resolved config of a run)."""
    import yaml

    data = config.model_dump(mode="json")
    text: str = yaml.safe_dump(data, sort_keys=False)
    return text


def method_label(config: Any) -> str:
    """The name a run goes by in reports: ``name``, else ``method`` or ``method+weighting``.

    >>> method_label(parse_config({"benchmark": "yeast", "weighting": {"name": "dwa"}}))
    'sum+dwa'
    """
    if config.name:
        return str(config.name)
    if config.weighting.name == "equal":
        return str(config.method.name)
    return f"{config.method.name}+{config.weighting.name}"


# Options the trainer fills in itself when the constructor takes them.
RUN_SETTINGS = ("epochs", "seed")


def _check_names(raw: Mapping[str, Any]) -> list[str]:
    """Problems with the benchmark, tasks, model options, method and weighting names/options.

    Works on the raw mapping, so these are reported together with type errors.
    """
    from taskprio.data import available_benchmarks, get_benchmark
    from taskprio.methods import METHODS
    from taskprio.weighting import WEIGHTINGS

    problems = []
    name = raw.get("benchmark")
    model_section = raw.get("model")
    options: Any = {}
    if isinstance(model_section, Mapping):
        options = model_section.get("options") or {}
    if isinstance(name, str) and name not in available_benchmarks():
        problems.append(
            f"benchmark: unknown benchmark {name!r}{_suggest(name, available_benchmarks())}; "
            f"available: {', '.join(available_benchmarks())}."
        )
    elif isinstance(name, str) and isinstance(options, Mapping):
        fields = _benchmark_options(name)
        bad = [option for option in options if option not in fields]
        for option in bad:
            if option in ("epochs", "batch_size"):
                where = f"; set the top-level `{option}` instead"
            elif option == "lr":
                where = "; set `optimizer.lr` instead"
            else:
                where = f"{_suggest(option, fields)}; it has {', '.join(fields) or 'none'}"
            problems.append(f"model.options.{option}: {name} has no option {option!r}{where}.")
        if not bad:
            try:
                benchmark = get_benchmark(name, **options)
            except (TypeError, ValueError) as error:
                problems.append(f"model.options: {error}")
            else:
                tasks = raw.get("tasks")
                names = benchmark.task_names
                problems.extend(
                    f"tasks: {name} has no task {task!r}{_suggest(str(task), names)}; its "
                    f"tasks are {', '.join(names)}."
                    for task in (tasks if isinstance(tasks, list) else ())
                    if task not in names
                )
    for section, registry in (("method", METHODS), ("weighting", WEIGHTINGS)):
        entry = raw.get(section)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name", ""), str):
            continue
        entry_name = entry.get("name", "sum" if section == "method" else "equal")
        try:
            cls = registry.get(entry_name)
        except KeyError as error:
            problems.append(f"{section}.name: {error.args[0]}")
            continue
        accepted = [
            option
            for option, parameter in inspect.signature(cls).parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ]
        entry_options = entry.get("options") or {}
        if not isinstance(entry_options, Mapping):
            continue
        known = True
        for option in entry_options:
            if option not in accepted:
                known = False
                problems.append(
                    f"{section}.options.{option}: {entry_name} takes no option {option!r}"
                    f"{_suggest(option, accepted)}; it takes {', '.join(accepted) or 'none'}."
                )
            elif option in RUN_SETTINGS:
                known = False
                top = "seeds" if option == "seed" else option
                problems.append(
                    f"{section}.options.{option}: the run sets it from the top-level `{top}`; "
                    "remove it here."
                )
        if known:
            settings = {"epochs": 1, "seed": 0}
            try:
                cls(**entry_options, **{k: v for k, v in settings.items() if k in accepted})
            except (TypeError, ValueError, KeyError) as error:
                message = error.args[0] if error.args else error
                problems.append(f"{section}.options: {message}")
    return problems


def _benchmark_options(name: str) -> list[str]:
    """The fields of benchmark ``name`` a config may override under ``model.options``."""
    import dataclasses

    from taskprio.data import get_benchmark

    fixed = ("name", "description", "tasks", "input_shape", "epochs", "batch_size", "lr")
    return [f.name for f in dataclasses.fields(get_benchmark(name)) if f.name not in fixed]


def _describe(item: Mapping[str, Any], experiment: type[pydantic.BaseModel]) -> str:
    location = [str(part) for part in item["loc"]]
    path = ".".join(location)
    if item["type"] == "extra_forbidden":
        valid = _fields_at(experiment, location[:-1])
        close = _closest(location[-1], valid)
        if close is not None:
            return f"{path}: unknown key; did you mean `{close}`?"
        return f"{path}: unknown key; valid keys here: {', '.join(valid)}."
    if item["type"] == "missing":
        return f"{path}: required key is missing."
    return f"{path}: {item['msg']} (got {item.get('input')!r})."


def _fields_at(model: type[pydantic.BaseModel], location: Sequence[str]) -> list[str]:
    fields: Any = model.model_fields
    for part in location:
        field = fields.get(part)
        annotation = None if field is None else field.annotation
        if not (inspect.isclass(annotation) and hasattr(annotation, "model_fields")):
            return []
        fields = annotation.model_fields
    return list(fields)


def _closest(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = _closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""
