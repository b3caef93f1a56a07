"""Each rank's share of the global batches of an in-memory data set."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from taskprio.data import TensorMultiTaskDataset
from taskprio.data._tensor_dataset import _batch_indices
from taskprio.distributed._env import rank as current_rank
from taskprio.distributed._env import world_size as current_world_size


def iterate_rank_batches(
    dataset: TensorMultiTaskDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterator[tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]]:
    """This rank's contiguous part of each global batch of one process's epoch.

    The global batches are exactly those of :func:`taskprio.data.iterate_masked_batches` with
    the same ``batch_size``, ``shuffle``, ``generator`` and ``drop_last``; each is cut into
    ``world_size`` contiguous parts as :func:`torch.tensor_split` does (sizes differ by at most
    one) and rank r gets part r. Concatenating the parts in rank order gives one process's
    batch back, so a synchronized :class:`taskprio.MultiTaskStep` on the parts takes the step
    one process takes on the whole batch. Seed ``generator`` alike on every rank
    (:func:`broadcast_seed`): each rank draws the same permutation.

    When ``batch_size`` is not a multiple of ``world_size``, or the last batch is short, the
    parts differ in size (a part may be empty): pass :func:`label_counts` of each part as the
    step's ``sample_counts`` so that every task's gradient is the mean over the global batch,
    and give no loss for an empty part.

    Args:
        dataset: the split.
        batch_size: B, the global batch size (the sum over the ranks).
        shuffle: draw a fresh permutation for this epoch.
        generator: the CPU generator of the permutation, seeded alike on every rank.
        drop_last: skip the final global batch when it has fewer than B samples.
        rank: this rank (None: the default process group's, 0 without one).
        world_size: the number of ranks (None: the default process group's, 1 without one).

    Yields:
        ``(inputs [b, ...], {task: labels [b, ...]}, {task: masks [b] bool})``, b ≈ B / world.

    >>> from taskprio.data import TensorMultiTaskDataset
    >>> data = TensorMultiTaskDataset(torch.zeros(5, 1), {"a": torch.arange(5)})
    >>> [[y["a"].tolist() for _, y, _ in iterate_rank_batches(
    ...     data, 4, shuffle=False, generator=None, rank=r, world_size=2)] for r in (0, 1)]
    [[[0, 1], [4]], [[2, 3], []]]
    """
    rank = current_rank() if rank is None else rank
    world_size = current_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"`rank` must be in [0, world_size) and `world_size` positive; got rank={rank}, "
            f"world_size={world_size}."
        )
    masks = dataset.masks
    for index in _batch_indices(
        dataset, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
    ):
        part = _part(index, len(dataset), rank, world_size)
        x = dataset.inputs[part]
        if masks is None:
            batch_masks = {
                task: torch.ones(len(x), dtype=torch.bool, device=x.device)
                for task in dataset.tasks
            }
        else:
            batch_masks = {task: m[part] for task, m in masks.items()}
        yield x, {task: y[part] for task, y in dataset.labels.items()}, batch_masks


def _part(index: slice | Tensor, num_samples: int, rank: int, world_size: int) -> slice | Tensor:
    """Rank ``rank``'s part of one batch index, split as :func:`torch.tensor_split`."""
    if isinstance(index, Tensor):
        return index.tensor_split(world_size)[rank]
    start, stop, _ = index.indices(num_samples)
    size, extra = divmod(stop - start, world_size)
    first = start + rank * size + min(rank, extra)
    return slice(first, first + size + (1 if rank < extra else 0))


def label_counts(masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The number of labelled samples of each task in a batch, for ``sample_counts``.

    Counts stay 0-d tensors on the masks' device (no host synchronization).

    Args:
        masks: task → [b] bool, True where the sample has that task's label.

    Returns:
        task → 0-d int64 count.

    >>> label_counts({"a": torch.tensor([True, False, True]), "b": torch.zeros(3, dtype=bool)})
    {'a': tensor(2), 'b': tensor(0)}
    """
    return {task: mask.sum() for task, mask in masks.items()}
