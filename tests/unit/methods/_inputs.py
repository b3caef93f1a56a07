"""Seeded [K, n] gradient matrices for the method tests.

Every sampler takes its own ``torch.Generator`` seed, so a matrix does not depend on test order.
"""

from __future__ import annotations

import torch
from torch import Tensor

DTYPE = torch.float64

# torchjd's pinned example: the rows conflict (inner product -22), the mean is (1, 1, 1).
J_BASE = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=DTYPE)


def normal(num_tasks: int, n: int, seed: int, *, dtype: torch.dtype = DTYPE) -> Tensor:
    """[K, n] standard normal entries: conflicts between most pairs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, n, generator=generator, dtype=DTYPE).to(dtype)


def of_rank(num_tasks: int, n: int, rank: int, seed: int) -> Tensor:
    """[K, n] of the given rank (a product of [K, rank] and [rank, n] normal matrices)."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(num_tasks, rank, generator=generator, dtype=DTYPE)
    return left @ torch.randn(rank, n, generator=generator, dtype=DTYPE)


def non_conflicting(num_tasks: int, n: int, seed: int) -> Tensor:
    """[K, n] rows with non-negative entries: no pair has a negative inner product."""
    return normal(num_tasks, n, seed).abs()


def parallel(n: int, seed: int) -> Tensor:
    """[3, n] rows g, 2g, g/2."""
    row = normal(1, n, seed)[0]
    return torch.stack([row, 2.0 * row, 0.5 * row])


def anti_parallel(n: int, seed: int) -> Tensor:
    """[2, n] rows g, −g (the mean is 0)."""
    row = normal(1, n, seed)[0]
    return torch.stack([row, -row])


def anti_parallel_unequal(n: int, seed: int) -> Tensor:
    """[2, n] rows g, −2g."""
    row = normal(1, n, seed)[0]
    return torch.stack([row, -2.0 * row])


# (K, n, seed) for the comparisons with torchjd and with the float64 references.
RANDOM_SHAPES = [(k, n, 100 * k + n) for k in range(2, 11) for n in (3, 7, 40)]


def random_matrices() -> list[Tensor]:
    """The matrices of ``RANDOM_SHAPES``, plus two of rank K − 1."""
    matrices = [normal(k, n, seed) for k, n, seed in RANDOM_SHAPES]
    return [*matrices, of_rank(4, 9, 3, 1), of_rank(6, 20, 5, 2)]


def edge_cases() -> dict[str, Tensor]:
    """Matrices on which every method must return a finite [n] vector."""
    base = normal(4, 6, 7)
    return {
        "zero": torch.zeros(3, 5, dtype=DTYPE),
        "zero_row": torch.cat([base[:2], torch.zeros(1, 6, dtype=DTYPE)]),
        "parallel": parallel(5, 8),
        "anti_parallel": anti_parallel(5, 9),
        "anti_parallel_unequal": anti_parallel_unequal(5, 10),
        "rank_deficient": of_rank(5, 8, 2, 11),
        "more_tasks_than_entries": normal(6, 2, 12),
        "scaled_1e-15": base * 1e-15,
        "scaled_1e+15": base * 1e15,
        "one_task": base[:1],
    }
