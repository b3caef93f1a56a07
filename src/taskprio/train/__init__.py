"""Training loops."""

from taskprio.train._benchmark_run import (
    BenchmarkRun,
    benchmark_delta_m,
    single_task_baselines,
    train_benchmark,
)

__all__ = [
    "BenchmarkRun",
    "benchmark_delta_m",
    "single_task_baselines",
    "train_benchmark",
]
