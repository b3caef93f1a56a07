"""Tiny models, data and benchmarks for the Pareto-front tests (seeded, CPU, seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from taskprio.data import Benchmark, TensorMultiTaskDataset, data_root, get_benchmark

REPO_ROOT = Path(__file__).resolve().parents[3]
TASKS = ("mu", "alpha")


def data_dir() -> Path:
    """$TASKPRIO_DATA, else <repo>/data (independent of the working directory)."""
    return data_root() if os.environ.get("TASKPRIO_DATA") else REPO_ROOT / "data"


class TwoHeadConvNet(nn.Module):
    """Conv (stride 2, padding 1) + BatchNorm + Linear trunk and two Linear heads."""

    def __init__(self, tasks: tuple[str, ...] = ("left", "right")) -> None:
        super().__init__()
        self.tasks = tasks
        self.trunk = nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),  # [B, 4, 4, 4]
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64, 6),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict({task: nn.Linear(6, 3) for task in tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        return {task: self.heads[task](features) for task in self.tasks}


def small_qm9() -> Benchmark:
    """QM9's tasks and losses on a small MLP (34 features, BatchNorm trunk)."""
    return get_benchmark("qm9", hidden_sizes=(12,), head_hidden=6, batch_size=16)


def regression_splits(num_samples: int = 48, seed: int = 0) -> dict[str, TensorMultiTaskDataset]:
    """Synthetic QM9-shaped data for tasks ``mu`` and ``alpha`` (train and test)."""
    generator = torch.Generator().manual_seed(seed)
    splits = {}
    for split in ("train", "test"):
        x = torch.randn(num_samples, 34, generator=generator)
        labels = {
            "mu": x[:, 0] + 0.1 * torch.randn(num_samples, generator=generator),
            "alpha": -x[:, 1] + 0.1 * torch.randn(num_samples, generator=generator),
        }
        splits[split] = TensorMultiTaskDataset(
            x, labels, target_normalization={"mu": (0.0, 2.0), "alpha": (1.0, 0.5)}
        )
    return splits


def subset(dataset: TensorMultiTaskDataset, size: int) -> TensorMultiTaskDataset:
    """The first ``size`` samples of an in-memory split."""
    masks = None if dataset.masks is None else {t: m[:size] for t, m in dataset.masks.items()}
    return TensorMultiTaskDataset(
        dataset.inputs[:size],
        {task: y[:size] for task, y in dataset.labels.items()},
        masks,
        target_normalization=dataset.target_normalization,
    )
