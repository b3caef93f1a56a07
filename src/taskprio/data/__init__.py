"""Data sets for multi-task learning, built once into a local cache and loaded into memory.

Built data lives under :func:`data_root` (``$TASKPRIO_DATA``, else ``./data``); the files they
are built from live in ``<data_root>/sources``. Nothing is downloaded at run time.

>>> import torch, taskprio.data
>>> data = taskprio.data.MultiMNIST(
...     torch.zeros(4, 1, 28, 28), {"left": torch.arange(4), "right": torch.arange(4)}
... )
>>> [tuple(x.shape) for x, _ in taskprio.data.iterate_batches(
...     data, 3, shuffle=False, generator=None)]
[(3, 1, 28, 28), (1, 1, 28, 28)]
"""

from taskprio.data._benchmark import (
    BENCHMARKS,
    Benchmark,
    BenchmarkSplit,
    TaskSpec,
    available_benchmarks,
    binary_task,
    classification_task,
    evaluate,
    get_benchmark,
    masked_binary_cross_entropy,
    masked_cross_entropy,
    masked_mse,
    regression_task,
)
from taskprio.data._celeba import CelebA
from taskprio.data._cityscapes import Cityscapes
from taskprio.data._dense import IGNORE_INDEX
from taskprio.data._fashion import (
    build_fashion_mnist,
    build_multi_fashion,
    load_fashion_mnist,
    load_multi_fashion,
    read_fashion_mnist,
)
from taskprio.data._multi_mnist import (
    MultiMNIST,
    build_multi_mnist,
    load_multi_mnist,
    read_mnist_digits,
)
from taskprio.data._nyuv2 import NYUv2
from taskprio.data._pascal_context import PASCALContext
from taskprio.data._paths import data_root, sources_dir
from taskprio.data._qm9 import build_qm9, load_qm9
from taskprio.data._tensor_dataset import (
    Split,
    TensorMultiTaskDataset,
    hide_labels,
    iterate_batches,
    iterate_masked_batches,
)
from taskprio.data._yeast import build_yeast, load_yeast

__all__ = [
    "BENCHMARKS",
    "IGNORE_INDEX",
    "Benchmark",
    "BenchmarkSplit",
    "CelebA",
    "Cityscapes",
    "MultiMNIST",
    "NYUv2",
    "PASCALContext",
    "Split",
    "TaskSpec",
    "TensorMultiTaskDataset",
    "available_benchmarks",
    "binary_task",
    "build_fashion_mnist",
    "build_multi_fashion",
    "build_multi_mnist",
    "build_qm9",
    "build_yeast",
    "classification_task",
    "data_root",
    "evaluate",
    "get_benchmark",
    "hide_labels",
    "iterate_batches",
    "iterate_masked_batches",
    "load_fashion_mnist",
    "load_multi_fashion",
    "load_multi_mnist",
    "load_qm9",
    "load_yeast",
    "masked_binary_cross_entropy",
    "masked_cross_entropy",
    "masked_mse",
    "read_fashion_mnist",
    "read_mnist_digits",
    "regression_task",
    "sources_dir",
]

# The paper's data sets as benchmarks, read from disk (importing them registers them).
from taskprio.data._dense_benchmarks import (
    DENSE_ROLES,
    CelebABenchmark,
    CityscapesBenchmark,
    DenseBenchmark,
    DenseTaskSpec,
    DiskBenchmark,
    NYUv2Benchmark,
    PASCALContextBenchmark,
    dense_task,
)
from taskprio.data._dense_losses import (
    balanced_bce,
    dense_cross_entropy,
    depth_l1,
    edge_bce,
    normals_l1,
)
from taskprio.data._disk_split import DiskSplit

# QM9 as graphs for the message-passing network (importing it registers "qm9_graph").
from taskprio.data._qm9_graph import QM9GraphBenchmark, build_qm9_graph, load_qm9_graph

__all__ += [
    "DENSE_ROLES",
    "CelebABenchmark",
    "CityscapesBenchmark",
    "DenseBenchmark",
    "DenseTaskSpec",
    "DiskBenchmark",
    "DiskSplit",
    "NYUv2Benchmark",
    "PASCALContextBenchmark",
    "QM9GraphBenchmark",
    "balanced_bce",
    "build_qm9_graph",
    "dense_cross_entropy",
    "dense_task",
    "depth_l1",
    "edge_bce",
    "load_qm9_graph",
    "normals_l1",
]
