"""Training on many processes with the semantics of one: every collective operation of taskprio.

Under ``torchrun``, each rank computes the per-task gradients of its shard of the batch;
:class:`GradientSync` averages them across the ranks *before* any loss weighting or
aggregation, so every method sees the per-task gradients of the global batch and the result
equals one process on the concatenated batch (``docs/distributed.md``).

>>> import torch, taskprio
>>> from taskprio.distributed import GradientSync, init_from_env
>>> info = init_from_env()  # a plain run: rank 0 of 1, no process group
>>> model = torch.nn.Linear(3, 2).to(info.device)
>>> step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ["a", "b"],
...                               method="mgda", gradient_sync=GradientSync())
>>> out = model(torch.ones(4, 3))
>>> step({"a": out[:, 0].mean(), "b": out[:, 1].mean()}).method
'mgda'
"""

from taskprio.distributed._env import (
    RankInfo,
    broadcast_module,
    broadcast_seed,
    collective_device,
    init_from_env,
    is_distributed,
    is_main_process,
    rank,
    shutdown,
    world_size,
)
from taskprio.distributed._sharding import iterate_rank_batches, label_counts
from taskprio.distributed._sync import Bucket, Buffers, GradientSync, SampleCounts
from taskprio.distributed._sync_norm import DistributedBatchNorm, all_reduce_sum, sync_batch_norms

__all__ = [
    "Bucket",
    "Buffers",
    "DistributedBatchNorm",
    "GradientSync",
    "RankInfo",
    "SampleCounts",
    "all_reduce_sum",
    "broadcast_module",
    "broadcast_seed",
    "collective_device",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "iterate_rank_batches",
    "label_counts",
    "rank",
    "shutdown",
    "sync_batch_norms",
    "world_size",
]
