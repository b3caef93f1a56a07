"""Experiments over seeds, and the ``bench`` job: baselines once, then every method, seeded.

A config's seeds each get a run directory ``<output_dir>/seed<k>``. :func:`run_bench` lays out
a comparison as::

    <out>/baselines/<task>/seed<k>/    one single-task model per task and seed (Δm's reference)
    <out>/<label>/seed<k>/             each method, e.g. ``sum``, ``cso``, ``sum+uncertainty``

Baselines are trained once: a directory that already holds a finished run with the same
settings is reused (one with other settings is trained again), so adding a method to a
comparison costs only that method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskprio.data import get_benchmark
from taskprio.train._config import dump_config, method_label, parse_config
from taskprio.train._trainer import BenchmarkRun, Trainer, TrainProgress, load_final

ProgressFactory = Callable[[str, int], TrainProgress | None]
"""``(label, seed) -> progress`` for each run (None: no progress)."""


def run_from_final(final: Mapping[str, Any], run_dir: Path | None = None) -> BenchmarkRun:
    """A :class:`BenchmarkRun` from a finished run's ``final.json`` contents."""
    return BenchmarkRun(
        benchmark=final["benchmark"],
        tasks=tuple(final["tasks"]),
        method=final["method"],
        seed=int(final["seed"]),
        epochs=int(final["epochs"]),
        val=final["val"],
        test=final["test"],
        epoch_losses=[],
        train_time_s=float(final["train_time_s"]),
        label=final["method"],
        run_dir=run_dir,
        skipped_steps=int(final.get("skipped_steps", 0)),
        delta_m=final.get("delta_m"),
    )


def default_output_dir(config: Any) -> Path:
    """``runs/<benchmark>/<label>`` unless the config names one."""
    if config.output_dir is not None:
        return Path(config.output_dir)
    return Path("runs") / str(config.benchmark) / method_label(config)


def run_experiment(
    config: Any,
    *,
    output_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressFactory | None = None,
    baselines: Mapping[int, Mapping[str, Mapping[str, float]]] | None = None,
    role: str = "method",
) -> list[BenchmarkRun]:
    """Train every seed of ``config`` into ``<output_dir>/seed<k>``.

    Args:
        config: a validated config.
        output_dir: overrides :func:`default_output_dir`.
        resume: finished seeds are read back, interrupted ones continue from their newest
            good checkpoint, missing ones start.
        progress: builds the progress receiver of each run.
        baselines: seed → task → test metrics of the single-task baselines (for Δm).
        role: ``"method"`` or ``"baseline"``.

    Returns:
        One :class:`BenchmarkRun` per seed.
    """
    directory = output_dir or default_output_dir(config)
    runs = []
    for seed in config.seeds:
        run_dir = directory / f"seed{seed}"
        final = load_final(run_dir)
        if resume and final is not None:
            runs.append(run_from_final(final, run_dir))
            continue
        started = resume and (run_dir / "checkpoints").is_dir()
        trainer = Trainer(
            config,
            seed=seed,
            run_dir=run_dir,
            role=role,
            baselines=None if baselines is None else baselines.get(seed),
            progress=None if progress is None else progress(_progress_label(config, role), seed),
        )
        runs.append(trainer.fit(resume=started))
    return runs


def _progress_label(config: Any, role: str) -> str:
    if role == "baseline" and config.tasks:
        return f"single-task {config.tasks[0]}"
    return method_label(config)


@dataclass
class BenchResult:
    """What :func:`run_bench` trained.

    Attributes:
        directory: the bench directory.
        baselines: task → seed → the single-task run.
        runs: label → the runs of that method, one per seed.
    """

    directory: Path
    baselines: dict[str, dict[int, BenchmarkRun]] = field(default_factory=dict)
    runs: dict[str, list[BenchmarkRun]] = field(default_factory=dict)


def run_bench(
    base: Mapping[str, Any],
    methods: Sequence[str],
    *,
    output_dir: Path,
    progress: ProgressFactory | None = None,
) -> BenchResult:
    """Single-task baselines (once), then each method, over the config's seeds.

    Args:
        base: a raw config mapping (validated here) with everything but the method; each entry
            of ``methods`` is trained with it, and the baselines with method ``sum`` on one task.
        methods: method registry keys, optionally ``method+weighting`` (``sum+uncertainty``).
        output_dir: the bench directory.
        progress: builds the progress receiver of each run.

    Returns:
        A :class:`BenchResult`.
    """
    configs = {}
    for entry in methods:
        name, _, weighting = entry.partition("+")
        raw = copy.deepcopy(dict(base))
        raw["method"] = {**raw.get("method", {}), "name": name}
        if weighting:
            raw["weighting"] = {"name": weighting}
        config = parse_config(raw)
        configs[method_label(config)] = config
    reference = parse_config({**base, "method": {"name": "sum"}, "weighting": {"name": "equal"}})
    benchmark = get_benchmark(reference.benchmark, **reference.model.options)
    tasks = [spec for spec in benchmark.select(reference.tasks) if not spec.is_auxiliary]
    result = BenchResult(directory=output_dir)
    for spec in tasks:
        single = parse_config(
            {**reference.model_dump(mode="json"), "tasks": [spec.name], "name": "single"}
        )
        directory = output_dir / "baselines" / spec.name
        _discard_stale(directory, single)
        runs = run_experiment(
            single, output_dir=directory, resume=True, progress=progress, role="baseline"
        )
        result.baselines[spec.name] = {run.seed: run for run in runs}
    per_seed = {
        seed: {task: result.baselines[task][seed].test[task] for task in result.baselines}
        for seed in reference.seeds
    }
    for label, config in configs.items():
        _discard_stale(output_dir / label, config)
        result.runs[label] = run_experiment(
            config,
            output_dir=output_dir / label,
            resume=True,
            progress=progress,
            baselines=per_seed,
        )
    return result


def _discard_stale(directory: Path, config: Any) -> None:
    """Remove seed runs trained with other settings, so that they are trained again."""
    import shutil

    import yaml

    if not directory.is_dir():
        return
    wanted = yaml.safe_load(dump_config(config))
    for seed_dir in directory.glob("seed*"):
        saved_path = seed_dir / "config.yaml"
        saved = yaml.safe_load(saved_path.read_text()) if saved_path.is_file() else None
        if not isinstance(saved, dict) or any(
            saved.get(key) != wanted.get(key)
            for key in wanted
            if key not in ("seeds", "output_dir", "device")
        ):
            shutil.rmtree(seed_dir)
