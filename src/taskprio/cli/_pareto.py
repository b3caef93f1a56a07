"""``taskprio pareto``: train Pareto-front methods on a benchmark, save fronts, models, plots.

``taskprio pareto-front DIR/METHOD`` reloads a saved model and evaluates it at user-given
preferences on the test split, without retraining.

Output directory (default ``runs/pareto/BENCHMARK``)::

    <method>/front.json        ParetoRun.to_dict(): per-preference test losses and metrics, HV
    <method>/model.ckpt        the trained model's state_dict and what rebuilds it
    <method>/front.png         the method's test front
    <method>/preferences.json  with --preferences: test losses and metrics at those α
    fronts.png                 every method's front together
    pareto.md                  the table, the plots, the reference points
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from taskprio.cli._progress import format_losses
from taskprio.cli._results import print_error
from taskprio.data import Benchmark, BenchmarkSplit, get_benchmark
from taskprio.pareto import (
    FrontEvaluation,
    ParetoModel,
    ParetoRun,
    evaluate_front,
    evaluation_preferences,
    get_pareto_method,
    norm_free_model,
    parse_pareto_config,
    parse_preference_text,
    simplex_preferences,
    train_pareto,
)
from taskprio.train import CheckpointError, ConfigError, apply_overrides, resolve_device
from taskprio.train._checkpoint import load_checkpoint, save_checkpoint
from taskprio.train._config import read_yaml_mapping

EXAMPLES = (
    "Examples: taskprio pareto yeast --tasks class1,class2 --epochs 5  ·  "
    "taskprio pareto multimnist --methods lorpman,cosmos --option lorpman.rank=4 "
    "--option cosmos.cosine_weight=8 --preferences '0.2,0.8;0.5,0.5'  ·  "
    "taskprio pareto --config configs/pareto/multimnist.yaml --epochs 1 --limit-batches 20"
)

FRONT_EXAMPLES = (
    "Examples: taskprio pareto-front runs/pareto/multimnist/lorpman --preferences "
    "'0.2,0.8;0.5,0.5'  ·  taskprio pareto-front runs/pareto/yeast/pamal --json pamal_at.json"
)

# Keys of a saved Pareto model (<method>/model.ckpt).
MODEL = "model"  # the ParetoModel's state_dict
METHOD = "method"  # registry key
OPTIONS = "options"  # the method's constructor arguments
TASKS = "tasks"  # in preference order
BENCHMARK = "benchmark"
NETWORK = "network"  # "norm_free" or "benchmark"
BATCH_SIZE = "batch_size"  # also the recalibration batch size
RECALIBRATION_BATCHES = "recalibration_batches"
EVAL_RANDOM = "eval_random"  # Dir(1) preferences added to the default evaluation set
SEED = "seed"
EPOCHS = "epochs"
VERSION = "taskprio_version"

MODEL_FILE = "model.ckpt"


def _benchmark_network(benchmark: Benchmark) -> Callable[[Sequence[str]], nn.Module]:
    def make(tasks: Sequence[str]) -> nn.Module:
        return benchmark.make_model(tasks)

    return make


def _norm_free_network(benchmark: Benchmark) -> Callable[[Sequence[str]], nn.Module] | None:
    return norm_free_model(benchmark)


# Network kind → the benchmark's factory of that kind (None: it has none).
NETWORKS: dict[str, Callable[[Benchmark], Callable[[Sequence[str]], nn.Module] | None]] = {
    "norm_free": _norm_free_network,
    "benchmark": _benchmark_network,
}


def pareto(
    benchmark: Annotated[
        str | None,
        typer.Argument(help="The benchmark: multimnist, yeast, qm9, … (or the config's)."),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated Pareto methods (default: lorpman,pamal,cosmos)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seeds initialization, batch order, preferences (0).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (default: the benchmark's).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the benchmark's).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default: the benchmark's).")
    ] = None,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N batches of each epoch.")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the tasks (default: all).")
    ] = None,
    benchmark_models: Annotated[
        bool | None,
        typer.Option(
            "--benchmark-models/--norm-free-models",
            help="Train the benchmark's BatchNorm models instead of the norm-free networks.",
        ),
    ] = None,
    preferences: Annotated[
        str | None,
        typer.Option(
            help="Also evaluate at these α, e.g. '0.2,0.8;0.5,0.5' (rows divided by their sum)."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="A method option, METHOD.NAME=VALUE: --option lorpman.rank=4."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A YAML config (configs/pareto/); flags override it.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … or auto.")] = None,
    root: Annotated[Path | None, typer.Option(help="Data root (default: ./data).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: runs/pareto/BENCHMARK).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-epoch lines.")] = False,
) -> None:
    """Train each Pareto-front method; write fronts, models and plots; print HV and sizes."""
    console = Console()
    flags = {
        "benchmark": benchmark,
        "methods": None if methods is None else _names(methods),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "limit_batches": limit_batches,
        "tasks": None if tasks is None else _names(tasks),
        "network": None if benchmark_models is None else _network_kind(benchmark_models),
        "device": device,
        "root": None if root is None else str(root),
    }
    try:
        raw = read_yaml_mapping(config) if config is not None else {}
        raw.update({key: value for key, value in flags.items() if value is not None})
        if preferences is not None:
            raw["preferences"] = parse_preference_text(preferences)
        if "benchmark" not in raw:
            raise ConfigError("name a BENCHMARK, or a --config that sets `benchmark`.")
        settings = parse_pareto_config(apply_overrides(raw, _option_overrides(option or [])))
    except ValueError as error:  # ConfigError included
        print_error(console, "error", error)
        raise typer.Exit(2) from None

    spec = get_benchmark(settings.benchmark)
    task_names = tuple(settings.tasks or spec.task_names)
    factory = NETWORKS[settings.network](spec)
    network = settings.network
    if factory is None:
        console.print(f"{spec.name} has no norm-free network; training its own model.")
        factory, network = NETWORKS["benchmark"](spec), "benchmark"
    extra = (
        None
        if settings.preferences is None
        else simplex_preferences(settings.preferences, task_names)
    )
    target = resolve_device(settings.device)
    directory = out or settings.output_dir or Path("runs") / "pareto" / spec.name
    resolved_batch_size = settings.batch_size or spec.batch_size
    epoch_count = settings.epochs or spec.epochs
    try:
        splits = {split: spec.load(split, settings.root) for split in ("train", "test")}
    except (FileNotFoundError, ImportError) as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None

    runs: dict[str, ParetoRun] = {}
    at_preferences: dict[str, FrontEvaluation] = {}
    for method in settings.methods:
        try:
            run = train_pareto(
                spec,
                method=method,
                tasks=task_names,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                lr=settings.lr,
                max_steps_per_epoch=settings.limit_batches,
                seed=settings.seed,
                splits=splits,
                device=target,
                eval_random=settings.eval_random,
                reference_point=settings.reference_point,
                recalibration_batches=settings.recalibration_batches,
                model_factory=factory,
                on_epoch=None if quiet else _epoch_printer(console, method, epoch_count),
                **settings.options.get(method, {}),
            )
        except FloatingPointError as error:
            print_error(console, "stopped", error)
            raise typer.Exit(1) from None
        runs[method] = run
        if extra is not None:
            at_preferences[method] = _evaluate(
                spec,
                _trained(run),
                splits,
                extra,
                device=target,
                batch_size=resolved_batch_size,
                recalibration_batches=settings.recalibration_batches,
            )
        _write_method(
            directory / method,
            run,
            at_preferences.get(method),
            network=network,
            batch_size=resolved_batch_size,
            recalibration_batches=settings.recalibration_batches,
            eval_random=settings.eval_random,
        )
        console.print(
            f"{method}: HV {run.hypervolume:.4g}, {run.steps} steps, {run.train_time_s:.1f} s",
            highlight=False,
        )

    from taskprio.pareto import plot_front  # matplotlib only now

    first = next(iter(runs.values()))
    plot_front(
        {method: run.metric_front() for method, run in runs.items()},
        directory / "fronts.png",
        objective_names=first.objectives,
        title=f"{spec.name}: test fronts",
    )
    report = directory / "pareto.md"
    report.write_text(_markdown(runs, at_preferences, network=network))
    console.print(_summary_table(runs))
    for method, evaluation in at_preferences.items():
        console.print(_preference_table(spec, evaluation, title=f"{method} at the given α"))
    console.print(f"report: {report}", soft_wrap=True, highlight=False)


def pareto_front(
    path: Annotated[
        Path,
        typer.Argument(help="A method directory of `taskprio pareto` (DIR/METHOD) or its .ckpt."),
    ],
    preferences: Annotated[
        str | None,
        typer.Option(
            help="The α to evaluate, e.g. '0.2,0.8;0.5,0.5' (rows divided by their sum); "
            "default: the training-time evaluation set."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the losses and metrics here.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 … or auto.")] = "auto",
    root: Annotated[Path | None, typer.Option(help="Data root (default: ./data).")] = None,
) -> None:
    """Evaluate a saved Pareto-front model at given preferences on the test split."""
    console = Console()
    file = path / MODEL_FILE if path.is_dir() else path
    try:
        model, state = load_pareto_model(file)
        spec = get_benchmark(state[BENCHMARK])
        chosen = (
            evaluation_preferences(model.num_tasks, num_random=int(state.get(EVAL_RANDOM, 0)))
            if preferences is None
            else simplex_preferences(parse_preference_text(preferences), model.tasks)
        )
        splits = {split: spec.load(split, root) for split in ("train", "test")}
    except (CheckpointError, ValueError, FileNotFoundError, ImportError) as error:
        print_error(console, "error", error)
        raise typer.Exit(2) from None
    evaluation = _evaluate(
        spec,
        model,
        splits,
        chosen,
        device=resolve_device(device),
        batch_size=int(state[BATCH_SIZE]),
        recalibration_batches=int(state[RECALIBRATION_BATCHES]),
    )
    title = f"{state[METHOD]} on {spec.name} test"
    console.print(_preference_table(spec, evaluation, title=title))
    if json_path is not None:
        _write_json(json_path, evaluation_record(evaluation))
        console.print(f"written: {json_path}", soft_wrap=True, highlight=False)


def load_pareto_model(path: Path) -> tuple[ParetoModel, dict[str, Any]]:
    """Rebuild the model saved as ``path`` by ``taskprio pareto`` (loaded ``weights_only``).

    Returns:
        The model (CPU, eval mode) and the checkpoint's entries.

    Raises:
        CheckpointError: unreadable, corrupted, or not a saved Pareto model.
    """
    state = load_checkpoint(path)
    missing = [
        key
        for key in (MODEL, METHOD, OPTIONS, TASKS, BENCHMARK, NETWORK, BATCH_SIZE)
        if key not in state
    ]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is not a model saved by `taskprio pareto` (no {', '.join(missing)})."
        )
    spec = get_benchmark(state[BENCHMARK])
    tasks = tuple(state[TASKS])
    if state[NETWORK] not in NETWORKS:
        raise CheckpointError(f"{str(path)!r} names an unknown network kind {state[NETWORK]!r}.")
    factory = NETWORKS[state[NETWORK]](spec)
    if factory is None:
        raise CheckpointError(f"{spec.name} has no {state[NETWORK]} network to rebuild.")
    # Building warns as in training (clipped ranks, a norm after COSMOS's input); shown then.
    pareto_logger = logging.getLogger("taskprio.pareto")
    level = pareto_logger.level
    pareto_logger.setLevel(logging.ERROR)
    try:
        method = get_pareto_method(state[METHOD], **state[OPTIONS])
        model = method.build(lambda: factory(tasks), tasks)
    finally:
        pareto_logger.setLevel(level)
    model.load_state_dict(state[MODEL])
    return model.eval(), state


def evaluation_record(evaluation: FrontEvaluation) -> dict[str, Any]:
    """A :class:`~taskprio.pareto.FrontEvaluation` as JSON-ready data (NaN → None).

    >>> evaluation_record(FrontEvaluation(tasks=("a",), preferences=[[1.0]],
    ...                                   losses=[{"a": float("nan")}]))
    {'tasks': ['a'], 'preferences': [[1.0]], 'losses': [{'a': None}], 'metrics': []}
    """
    return {
        "tasks": list(evaluation.tasks),
        "preferences": _finite(evaluation.preferences),
        "losses": _finite(evaluation.losses),
        "metrics": _finite(evaluation.metrics),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _network_kind(benchmark_models: bool) -> str:
    return "benchmark" if benchmark_models else "norm_free"


def _option_overrides(options: Sequence[str]) -> list[str]:
    overrides = []
    for item in options:
        key, separator, _ = item.partition("=")
        method, dot, name = key.partition(".")
        if not separator or not dot or not method.strip() or not name.strip():
            raise ConfigError(
                f"--option {item!r} must look like METHOD.NAME=VALUE (e.g. lorpman.rank=4)."
            )
        overrides.append(f"options.{item}")
    return overrides


def _epoch_printer(
    console: Console, method: str, epochs: int
) -> Callable[[int, dict[str, float]], None]:
    def show(epoch: int, record: dict[str, float]) -> None:
        losses = {key[5:]: value for key, value in record.items() if key.startswith("loss/")}
        console.print(
            f"[dim]{method}[/] epoch {epoch + 1}/{epochs}  loss {record.get('loss', math.nan):.4g}"
            f"  │  {format_losses(losses)}",
            highlight=False,
        )

    return show


def _trained(run: ParetoRun) -> ParetoModel:
    if run.model is None:  # train_pareto always sets it
        raise RuntimeError(f"the {run.method} run holds no model.")
    return run.model


def _evaluate(
    benchmark: Benchmark,
    model: ParetoModel,
    splits: Mapping[str, BenchmarkSplit],
    preferences: Tensor,
    *,
    device: Any,
    batch_size: int,
    recalibration_batches: int,
) -> FrontEvaluation:
    """As :func:`~taskprio.pareto.train_pareto` evaluates, so that the numbers match it."""
    model = model.to(device)
    return evaluate_front(
        benchmark,
        model,
        splits["test"].to(device),
        preferences.to(device),
        recalibration_data=splits["train"].to(device) if recalibration_batches else None,
        recalibration_batches=recalibration_batches,
        recalibration_batch_size=batch_size,
    )


def _write_json(path: Path, record: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    os.replace(temporary, path)


def _write_method(
    directory: Path,
    run: ParetoRun,
    at_preferences: FrontEvaluation | None,
    *,
    network: str,
    batch_size: int,
    recalibration_batches: int,
    eval_random: int,
) -> None:
    """front.json, model.ckpt, front.png (and preferences.json) of one method."""
    from taskprio import __version__

    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / "front.json", run.to_dict())
    state = {
        MODEL: {
            name: value.detach().to("cpu") for name, value in _trained(run).state_dict().items()
        },
        METHOD: run.method,
        OPTIONS: dict(run.options),
        TASKS: list(run.tasks),
        BENCHMARK: run.benchmark,
        NETWORK: network,
        BATCH_SIZE: batch_size,
        RECALIBRATION_BATCHES: recalibration_batches,
        EVAL_RANDOM: eval_random,
        SEED: run.seed,
        EPOCHS: run.epochs,
        VERSION: __version__,
    }
    # save_checkpoint names files by step; renaming keeps its atomic, checksummed write.
    written = save_checkpoint(directory, state, step=run.steps, keep=1)
    os.replace(written, directory / MODEL_FILE)
    run.plot(directory / "front.png")
    if at_preferences is not None:
        _write_json(directory / "preferences.json", evaluation_record(at_preferences))


def _baseline(runs: Mapping[str, ParetoRun]) -> str:
    """The method sizes are compared to: LORPMAN when it ran, else the first."""
    return "lorpman" if "lorpman" in runs else next(iter(runs))


def _summary_rows(runs: Mapping[str, ParetoRun]) -> tuple[list[str], list[list[str]]]:
    base = _baseline(runs)
    header = [
        "method",
        "HV (metrics)",
        "HV (losses)",
        "parameters",
        f"×{base} params",
        "train s",
    ]
    rows = [
        [
            method,
            f"{run.hypervolume:.4g}",
            f"{run.loss_hypervolume:.4g}",
            f"{run.num_parameters:,}",
            f"{run.num_parameters / runs[base].num_parameters:.2f}",
            f"{run.train_time_s:.1f}",
        ]
        for method, run in runs.items()
    ]
    return header, rows


def _summary_table(runs: Mapping[str, ParetoRun]) -> Table:
    first = next(iter(runs.values()))
    table = Table(
        title=f"{first.benchmark}: test fronts over {len(first.test.preferences)} preferences"
    )
    header, rows = _summary_rows(runs)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _preference_label(preference: Sequence[float]) -> str:
    return "(" + ", ".join(f"{value:.3g}" for value in preference) + ")"


def _preference_rows(
    benchmark: Benchmark, evaluation: FrontEvaluation
) -> tuple[list[str], list[list[str]]]:
    """Rows task × (metrics, loss), one column per preference."""
    header = ["task", "metric", *(_preference_label(p) for p in evaluation.preferences)]
    rows = []
    for task in evaluation.tasks:
        for metric, higher_is_better in benchmark.task(task).metrics:
            arrow = "↑" if higher_is_better else "↓"
            values = [f"{row[task][metric]:.4g}" for row in evaluation.metrics]
            rows.append([task, f"{metric} {arrow}", *values])
        rows.append([task, "loss ↓", *(f"{row[task]:.4g}" for row in evaluation.losses)])
    return header, rows


def _preference_table(benchmark: Benchmark, evaluation: FrontEvaluation, *, title: str) -> Table:
    table = Table(title=title)
    header, rows = _preference_rows(benchmark, evaluation)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _markdown(
    runs: Mapping[str, ParetoRun],
    at_preferences: Mapping[str, FrontEvaluation],
    *,
    network: str,
) -> str:
    first = next(iter(runs.values()))
    benchmark = get_benchmark(first.benchmark)
    network_text = "without BatchNorm" if network == "norm_free" else "the benchmark's model"
    lines = [
        f"# Pareto fronts: {first.benchmark}",
        "",
        f"Tasks {', '.join(first.tasks)}; seed {first.seed}; {first.epochs} epochs; networks: "
        f"{network_text}. Test split, {len(first.test.preferences)} preferences per method.",
        "",
        *_markdown_table(*_summary_rows(runs)),
        "",
        f"HV (metrics): of each task's main test metric ({', '.join(first.objectives)}); "
        "HV (losses): of the test losses; both higher is better. Parameters: trainable, of "
        "the whole Pareto-front model.",
        "",
        "![every front](fronts.png)",
        "",
        *(
            f"- {method}: [front]({method}/front.png), [front.json]({method}/front.json), "
            f"[model]({method}/model.ckpt)"
            for method in runs
        ),
        "",
        "## Reference points",
        "",
        "| objective | direction | reference |",
        "|---|---|---|",
    ]
    for objective, is_max, value in zip(
        first.objectives, first.maximize, first.reference_point, strict=True
    ):
        lines.append(f"| {objective} | {'↑' if is_max else '↓'} | {value:.6g} |")
    for task, value in zip(first.tasks, first.loss_reference_point, strict=True):
        lines.append(f"| {task}/loss | ↓ | {value:.6g} |")
    if at_preferences:
        lines += ["", "## At the given preferences", ""]
        for method, evaluation in at_preferences.items():
            lines += [
                f"### {method}",
                "",
                *_markdown_table(*_preference_rows(benchmark, evaluation)),
            ]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
