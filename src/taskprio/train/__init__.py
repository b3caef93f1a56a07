"""Training loops."""

from taskprio.train._classification import (
    ClassificationRun,
    evaluate_accuracy,
    train_classification,
)

__all__ = ["ClassificationRun", "evaluate_accuracy", "train_classification"]
