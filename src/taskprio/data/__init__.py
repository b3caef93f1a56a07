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

from taskprio.data._multi_mnist import (
    MultiMNIST,
    Split,
    build_multi_mnist,
    iterate_batches,
    load_multi_mnist,
    read_mnist_digits,
)
from taskprio.data._paths import data_root, sources_dir

__all__ = [
    "MultiMNIST",
    "Split",
    "build_multi_mnist",
    "data_root",
    "iterate_batches",
    "load_multi_mnist",
    "read_mnist_digits",
    "sources_dir",
]
