"""Hypervolume (moocore) against hand-worked cases and a brute-force grid count; preference sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from taskprio.pareto import evaluation_preferences, hypervolume, simplex_grid


def test_two_dimensional_hand_worked():
    # Boxes [0, 0.9]×[0, 0.5] (0.45) and [0, 0.6]×[0, 0.8] (0.48) overlap on 0.6×0.5 = 0.30.
    assert hypervolume([[0.9, 0.5], [0.6, 0.8]], [0.0, 0.0], maximize=True) == pytest.approx(
        0.63, abs=1e-12
    )
    # The same front, minimized, as 1 − accuracy against the reference (1, 1).
    assert hypervolume([[0.1, 0.5], [0.4, 0.2]], [1.0, 1.0]) == pytest.approx(0.63, abs=1e-12)


def test_three_dimensional_hand_worked():
    # Reference (4, 4, 4): box of (1, 2, 3) is 3·2·1 = 6, of (2, 1, 2) is 2·3·2 = 12; they
    # overlap on the box of their component-wise maximum (2, 2, 3): 2·2·1 = 4. HV = 14.
    points = torch.tensor([[1.0, 2.0, 3.0], [2.0, 1.0, 2.0]])
    assert hypervolume(points, [4.0, 4.0, 4.0]) == pytest.approx(14.0, abs=1e-12)


@pytest.mark.parametrize("num_objectives", [1, 2, 5, 11])
def test_one_point_gives_the_product_of_its_coordinates(num_objectives):
    generator = np.random.default_rng(num_objectives)
    point = generator.uniform(0.1, 0.9, num_objectives)
    assert hypervolume([point], np.zeros(num_objectives), maximize=True) == pytest.approx(
        math.prod(point), rel=1e-12
    )


def test_dominated_and_outside_points_change_nothing():
    front = [[0.9, 0.5], [0.6, 0.8]]
    base = hypervolume(front, [0.0, 0.0], maximize=True)
    assert hypervolume([*front, [0.5, 0.4]], [0.0, 0.0], maximize=True) == base
    assert hypervolume([*front, [-0.5, 2.0]], [0.0, 0.0], maximize=True) == base
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0


def _brute_force_count(points, bound):
    """Unit cells [c, c+1]^d of [0, bound]^d dominated by some point (minimized, ref = bound).

    With integer points, a cell is inside the dominated region exactly when some point is
    ≤ c in every coordinate, so the hypervolume is the number of such cells.
    """
    dimension = points.shape[1]
    count = 0
    for cell in itertools.product(range(bound), repeat=dimension):
        if any(all(p[k] <= cell[k] for k in range(dimension)) for p in points):
            count += 1
    return count


@pytest.mark.parametrize(("dimension", "num_points", "bound"), [(2, 6, 12), (3, 8, 8), (4, 10, 6)])
def test_against_a_brute_force_grid_count(dimension, num_points, bound):
    generator = np.random.default_rng(dimension)
    for _ in range(3):
        points = generator.integers(0, bound, size=(num_points, dimension))
        expected = _brute_force_count(points, bound)
        assert hypervolume(points, [bound] * dimension) == pytest.approx(expected, abs=1e-9)
        # The same set, maximized after mirroring, gives the same volume.
        mirrored = bound - points
        assert hypervolume(mirrored, [0] * dimension, maximize=True) == pytest.approx(
            expected, abs=1e-9
        )


def test_mixed_directions():
    # Objective 0 maximized (ref 0), objective 1 minimized (ref 1): boxes [0, 0.5]×[0.2, 1].
    assert hypervolume([[0.5, 0.2]], [0.0, 1.0], maximize=[True, False]) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("points", "reference", "kwargs", "message"),
    [
        ([[1.0, 2.0]], [0.0, 0.0, 0.0], {}, r"\[P, 3\]"),
        ([[1.0, float("nan")]], [0.0, 0.0], {}, r"rows \[0\]"),
        ([[1.0, 2.0]], [[0.0, 0.0]], {}, "vector"),
        ([[1.0, 2.0]], [0.0, 0.0], {"maximize": [True]}, "maximize"),
    ],
)
def test_bad_inputs_are_reported(points, reference, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hypervolume(points, reference, **kwargs)


def test_simplex_grids():
    two = simplex_grid(2, 10)
    assert two.shape == (11, 2)
    assert torch.equal(two[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(two[-1], torch.tensor([0.0, 1.0], dtype=torch.float64))
    three = simplex_grid(3, 10)
    assert three.shape == (66, 3)
    assert len({tuple(row.tolist()) for row in three}) == 66
    torch.testing.assert_close(three.sum(1), torch.ones(66, dtype=torch.float64))
    assert (three >= 0).all()


def test_evaluation_preferences():
    assert torch.equal(evaluation_preferences(2), simplex_grid(2, 10))
    assert evaluation_preferences(3).shape == (66, 3)
    many = evaluation_preferences(14)
    assert many.shape == (15, 14)
    assert torch.equal(many[:14], torch.eye(14, dtype=torch.float64))
    torch.testing.assert_close(many[14], torch.full((14,), 1 / 14, dtype=torch.float64))
    extra = evaluation_preferences(14, num_random=5)
    assert extra.shape == (20, 14)
    assert torch.equal(extra, evaluation_preferences(14, num_random=5))
    assert not torch.equal(extra, evaluation_preferences(14, num_random=5, seed=1))
