"""Hypervolume of a front (computed by ``moocore``) and the preference sets a front is read at.

The hypervolume (HV) of points y_1..y_P with reference point r is the volume of the region
they dominate and that dominates r: for minimized objectives, the union of the boxes
[y_p, r]; for maximized ones, [r, y_p]. A point that does not strictly improve on r in every
objective adds nothing. HV is computed by ``moocore`` (exact, any dimension), imported only
when called.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from taskprio.pareto._method import sample_dirichlet


def _as_array(values: ArrayLike | Tensor) -> NDArray[np.float64]:
    if isinstance(values, Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def hypervolume(
    points: ArrayLike | Tensor,
    reference: ArrayLike | Tensor,
    *,
    maximize: bool | Sequence[bool] = False,
) -> float:
    """The hypervolume of ``points`` with respect to ``reference`` (``moocore.hypervolume``).

    Args:
        points: [P, m] one objective vector per row (P may be 0).
        reference: [m] the reference point r; only the part of each point's box on the good
            side of r counts.
        maximize: whether each objective is maximized (one bool for all, or m of them).

    Returns:
        HV ≥ 0.

    Raises:
        ValueError: wrong shapes, or a non-finite coordinate.

    Hand-worked (maximized, r = origin): the boxes of (0.9, 0.5) and (0.6, 0.8) have areas 0.45
    and 0.48 and overlap on 0.6 × 0.5 = 0.30, so HV = 0.45 + 0.48 − 0.30 = 0.63.

    >>> round(hypervolume([[0.9, 0.5], [0.6, 0.8]], [0.0, 0.0], maximize=True), 12)
    0.63
    >>> round(hypervolume([[1.0, 2.0, 3.0]], [2.0, 4.0, 6.0]), 12)  # minimized: 1·2·3
    6.0
    """
    array = _as_array(points)
    ref = _as_array(reference)
    if ref.ndim != 1 or ref.size < 1:
        raise ValueError(f"`reference` must be a vector [m]; got shape {ref.shape}.")
    num_objectives = ref.size
    if array.size == 0:
        array = array.reshape(0, num_objectives)
    if array.ndim != 2 or array.shape[1] != num_objectives:
        raise ValueError(
            f"`points` must be [P, {num_objectives}] (one row per point, one column per entry "
            f"of `reference`); got shape {array.shape}."
        )
    if not np.isfinite(ref).all():
        raise ValueError(f"`reference` must be finite; got {ref.tolist()}.")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"`points` rows {bad_rows.tolist()} are not finite (e.g. a task with no labelled "
            "test sample); drop them or fix their metrics."
        )
    flags = (
        [bool(maximize)] * num_objectives
        if isinstance(maximize, (bool, np.bool_))
        else [bool(flag) for flag in maximize]
    )
    if len(flags) != num_objectives:
        raise ValueError(
            f"`maximize` must be one bool or {num_objectives} of them; got {len(flags)}."
        )
    if len(array) == 0:
        return 0.0
    import moocore  # type: ignore[import-untyped]

    return float(moocore.hypervolume(array, ref=ref, maximise=flags))


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Each tuple of ``parts`` non-negative ints summing to ``total``, largest first entry first."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total, -1, -1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def simplex_grid(num_tasks: int, divisions: int) -> Tensor:
    """Every α on the simplex whose entries are multiples of 1/``divisions``.

    C(divisions + m − 1, m − 1) points: 11 for m = 2 and 10 divisions, 66 for m = 3. Ordered
    from e_1 onwards (first entry decreasing, then the second, ...).

    Args:
        num_tasks: m.
        divisions: n ≥ 1.

    Returns:
        [P, m] float64.

    >>> simplex_grid(2, 4)
    tensor([[1.0000, 0.0000],
            [0.7500, 0.2500],
            [0.5000, 0.5000],
            [0.2500, 0.7500],
            [0.0000, 1.0000]], dtype=torch.float64)
    >>> len(simplex_grid(3, 10))
    66
    """
    if num_tasks < 1 or divisions < 1:
        raise ValueError(
            f"`num_tasks` and `divisions` must be positive; got {num_tasks} and {divisions}."
        )
    rows = list(_compositions(divisions, num_tasks))
    return torch.tensor(rows, dtype=torch.float64) / divisions


def evaluation_preferences(
    num_tasks: int, *, divisions: int = 10, num_random: int = 0, seed: int = 0
) -> Tensor:
    """The preferences a trained front is evaluated at (PaMaL's sets).

    - m ≤ 3: the grid :func:`simplex_grid` (m = 2: 11 evenly spaced; m = 3: 66 points);
    - m > 3: the m vertices e_i, then the centroid 1/m.
    - ``num_random`` > 0 appends that many Dir(1) draws from ``torch.Generator`` seeded with
      ``seed``: the same set for every method and run.

    Args:
        num_tasks: m.
        divisions: the grid's resolution for m ≤ 3.
        num_random: extra seeded Dirichlet draws.
        seed: their seed.

    Returns:
        [P, m] float64, rows on the simplex.

    >>> evaluation_preferences(4)
    tensor([[1.0000, 0.0000, 0.0000, 0.0000],
            [0.0000, 1.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 1.0000, 0.0000],
            [0.0000, 0.0000, 0.0000, 1.0000],
            [0.2500, 0.2500, 0.2500, 0.2500]], dtype=torch.float64)
    """
    if num_random < 0:
        raise ValueError(f"`num_random` must be non-negative, but got {num_random}.")
    if num_tasks <= 3:
        fixed = simplex_grid(num_tasks, divisions)
    else:
        centroid = torch.full((1, num_tasks), 1.0 / num_tasks, dtype=torch.float64)
        fixed = torch.cat([torch.eye(num_tasks, dtype=torch.float64), centroid])
    if num_random == 0:
        return fixed
    generator = torch.Generator().manual_seed(seed)
    drawn = sample_dirichlet(num_random, num_tasks, concentration=1.0, generator=generator)
    return torch.cat([fixed, drawn])
