"""Each rank's part of a global batch; the parts concatenate to one process's batch."""

from __future__ import annotations

import pytest
import torch

from taskprio.data import TensorMultiTaskDataset, hide_labels, iterate_masked_batches
from taskprio.distributed import iterate_rank_batches, label_counts


def _dataset() -> TensorMultiTaskDataset:
    generator = torch.Generator().manual_seed(0)
    data = TensorMultiTaskDataset(
        torch.randn(13, 2, generator=generator),
        {"a": torch.arange(13), "b": torch.randn(13, generator=generator)},
    )
    return hide_labels(data, 0.4, seed=1)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_parts_concatenate_to_the_single_process_batches(
    world_size: int, shuffle: bool, drop_last: bool
):
    data = _dataset()
    options = {"shuffle": shuffle, "drop_last": drop_last}
    expected = list(
        iterate_masked_batches(data, 5, generator=torch.Generator().manual_seed(3), **options)
    )
    parts = [
        list(
            iterate_rank_batches(
                data,
                5,
                generator=torch.Generator().manual_seed(3),
                rank=rank,
                world_size=world_size,
                **options,
            )
        )
        for rank in range(world_size)
    ]
    assert all(len(p) == len(expected) for p in parts)
    for b, (x, labels, masks) in enumerate(expected):
        sizes = [len(parts[r][b][0]) for r in range(world_size)]
        assert max(sizes) - min(sizes) <= 1  # as torch.tensor_split
        torch.testing.assert_close(torch.cat([parts[r][b][0] for r in range(world_size)]), x)
        for task in data.tasks:
            for got, want in ((1, labels), (2, masks)):
                joined = torch.cat([parts[r][b][got][task] for r in range(world_size)])
                assert torch.equal(joined, want[task])


def test_rank_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="`rank` must be in"):
        next(
            iterate_rank_batches(_dataset(), 4, shuffle=False, generator=None, rank=2, world_size=2)
        )


def test_label_counts_count_the_true_entries():
    masks = {"a": torch.tensor([True, True, False]), "b": torch.tensor([False, False, False])}
    assert {t: int(c) for t, c in label_counts(masks).items()} == {"a": 2, "b": 0}
