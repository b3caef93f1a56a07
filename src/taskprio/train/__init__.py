"""Training loops."""

from taskprio.train._benchmark_run import (
    BenchmarkRun,
    benchmark_delta_m,
    single_task_baselines,
    train_benchmark,
)
from taskprio.train._classification import (
    ClassificationRun,
    evaluate_accuracy,
    train_classification,
)

__all__ = [
    "BenchmarkRun",
    "ClassificationRun",
    "benchmark_delta_m",
    "evaluate_accuracy",
    "single_task_baselines",
    "train_benchmark",
    "train_classification",
]
