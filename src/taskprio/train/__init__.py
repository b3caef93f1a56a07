"""Training: configs, the trainer loop with checkpoints and logs, experiments over seeds.

- :func:`load_config` / :func:`parse_config`: YAML experiment configs, validated.
- :class:`Trainer`: one seed of a config, writing a run directory, resumable exactly.
- :func:`run_experiment`: every seed of a config; :func:`run_bench`: single-task baselines
  once, then each method, for Δm.
- :func:`train_benchmark`: the same loop from Python in one call.
"""

from taskprio.train._benchmark_run import (
    benchmark_delta_m,
    single_task_baselines,
    train_benchmark,
)
from taskprio.train._checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from taskprio.train._config import (
    ConfigError,
    apply_overrides,
    dump_config,
    load_config,
    method_label,
    parse_config,
)
from taskprio.train._experiment import (
    BenchResult,
    default_output_dir,
    run_bench,
    run_experiment,
    run_from_final,
)
from taskprio.train._trainer import (
    BenchmarkRun,
    NonFiniteLossError,
    Trainer,
    TrainProgress,
    create_method,
    create_weighting,
    load_final,
    resolve_device,
    run_delta_m,
)

__all__ = [
    "BenchResult",
    "BenchmarkRun",
    "CheckpointError",
    "ConfigError",
    "NonFiniteLossError",
    "TrainProgress",
    "Trainer",
    "apply_overrides",
    "benchmark_delta_m",
    "create_method",
    "create_weighting",
    "default_output_dir",
    "dump_config",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_final",
    "method_label",
    "parse_config",
    "resolve_device",
    "run_bench",
    "run_delta_m",
    "run_experiment",
    "run_from_final",
    "single_task_baselines",
    "train_benchmark",
]
