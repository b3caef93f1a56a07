"""wPCGrad: the specification's worked examples and identities, sampling, state and properties."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from torch import nn

import taskprio
from taskprio.methods._wpcgrad import (
    WeightedPCGrad,
    loss_power_probabilities,
    project_in_order,
    project_pairs,
    project_symmetric,
    sample_order,
    sample_pairs,
    static_probabilities,
)
from taskprio.weighting import Manual

# The specification's K = 2 example: g1·g2 = -1.
G2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
# Its K = 3 example.
G3 = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]], dtype=torch.float64)
# Chi-square 0.999 quantiles (α = 0.001) by degrees of freedom.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matrices: thread start-up on a shared machine costs more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows(num_tasks: int, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, n, generator=generator, dtype=torch.float64)


def _combined(rows: torch.Tensor, order, reference="original", eps=1e-30) -> torch.Tensor:
    coefficients, _ = project_in_order(rows @ rows.T, order, reference=reference, eps=eps)
    return (coefficients @ rows).sum(dim=0)


def _pcgrad(rows: torch.Tensor) -> torch.Tensor:
    """Reference PCGrad for K = 2 (order does not matter), with explicit vectors."""
    g1, g2 = rows
    dot = g1 @ g2
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / (g2 @ g2) * g2) + (g2 - dot / (g1 @ g1) * g1)


def _conflicting_pair(seed: int) -> torch.Tensor:
    rows = _rows(2, 5, seed)
    if rows[0] @ rows[1] >= 0:
        rows[1] = -rows[1]
    return rows


# -- worked examples ---------------------------------------------------------------------------


def test_two_task_orders():
    """Order (1, 2): h2 = g2 + g1 = (0, 1), G = (1, 1). (2, 1): h1 = g1 + ½g2, G = (-½, 3/2)."""
    torch.testing.assert_close(_combined(G2, [0, 1]), torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        _combined(G2, [1, 0]), torch.tensor([-0.5, 1.5], dtype=torch.float64)
    )


def test_two_task_pcgrad_and_plain_sum():
    permutations = torch.tensor([[0, 1], [1, 0]])
    coefficients, projections = project_symmetric(G2 @ G2.T, permutations)
    torch.testing.assert_close(
        (coefficients @ G2).sum(0), torch.tensor([0.5, 1.5], dtype=torch.float64)
    )
    assert projections == 2
    torch.testing.assert_close(G2.sum(0), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_one_hot_priorities_through_the_method():
    assert torch.equal(
        WeightedPCGrad(priorities=[1.0, 0.0])(G2), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )
    assert torch.equal(
        WeightedPCGrad(priorities=[0.0, 1.0])(G2), torch.tensor([-0.5, 1.5], dtype=torch.float64)
    )


def test_expectation_with_priorities_enumerated():
    """p = (0.8, 0.2): E[G] = 0.8 (1, 1) + 0.2 (-0.5, 1.5) = (0.7, 1.1)."""
    expected = 0.8 * _combined(G2, [0, 1]) + 0.2 * _combined(G2, [1, 0])
    torch.testing.assert_close(expected, torch.tensor([0.7, 1.1], dtype=torch.float64))


@pytest.mark.parametrize(
    ("priorities", "expected"), [((0.8, 0.2), (0.7, 1.1)), ((0.5, 0.5), (0.25, 1.25))]
)
def test_expectation_monte_carlo(priorities, expected):
    generator = torch.Generator().manual_seed(0)
    orders = sample_order(torch.tensor(priorities), generator, num_samples=20_000)
    first_is_zero = float((orders[:, 0] == 0).double().mean())
    estimate = first_is_zero * _combined(G2, [0, 1]) + (1 - first_is_zero) * _combined(G2, [1, 0])
    torch.testing.assert_close(estimate, torch.tensor(expected).double(), rtol=0, atol=1e-2)


def test_expectation_monte_carlo_through_the_method():
    method = WeightedPCGrad(priorities=[0.8, 0.2], seed=3)
    total = sum(method(G2) for _ in range(2_000))
    torch.testing.assert_close(
        total / 2_000, torch.tensor([0.7, 1.1], dtype=torch.float64), rtol=0, atol=4e-2
    )


@pytest.mark.parametrize("seed", range(5))
def test_uniform_expectation_is_half_plain_sum_plus_pcgrad(seed):
    """For K = 2 with a conflict, E[G] under uniform p = ½ (Σ g + PCGrad), exactly."""
    rows = G2 if seed == 0 else _conflicting_pair(seed)
    expected = 0.5 * (rows.sum(0) + _pcgrad(rows))
    averaged = 0.5 * (_combined(rows, [0, 1]) + _combined(rows, [1, 0]))
    torch.testing.assert_close(averaged, expected, rtol=0, atol=1e-12)
    if seed == 0:
        torch.testing.assert_close(averaged, torch.tensor([0.25, 1.25], dtype=torch.float64))


def test_uniform_priorities_are_not_pcgrad():
    # Every single draw keeps one gradient intact; PCGrad projects both.
    method = WeightedPCGrad(seed=0)
    outcomes = {tuple(method(G2).tolist()) for _ in range(50)}
    assert outcomes == {(1.0, 1.0), (-0.5, 1.5)}
    assert (0.5, 1.5) not in outcomes


def test_three_task_example():
    """Order (1, 2, 3). Original: h2 = (0, 1, 0), h3 = g3 + ½ g2; projected: h3 = g3 + h2."""
    torch.testing.assert_close(
        _combined(G3, [0, 1, 2]), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        _combined(G3, [0, 1, 2], reference="projected"),
        torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
    )
    coefficients, _ = project_in_order(G3 @ G3.T, [0, 1, 2])
    torch.testing.assert_close(
        coefficients @ G3,
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.5, -0.5, 1.0]]).double(),
    )


def test_scheme_probabilities():
    losses = torch.tensor([1.0, 3.0], dtype=torch.float64)
    close = {"rtol": 0, "atol": 1e-10}
    expected_1 = torch.tensor([0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(loss_power_probabilities(losses, gamma=1.0), expected_1, **close)
    expected_2 = torch.tensor([0.1, 0.9], dtype=torch.float64)
    torch.testing.assert_close(loss_power_probabilities(losses, gamma=2.0), expected_2, **close)
    uniform = torch.tensor([0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(loss_power_probabilities(losses, gamma=0.0), uniform, **close)
    torch.testing.assert_close(
        loss_power_probabilities(torch.zeros(2, dtype=torch.float64), gamma=1.0), uniform
    )
    torch.testing.assert_close(
        static_probabilities(torch.tensor([2.0, 2.0, 4.0])), torch.tensor([0.25, 0.25, 0.5])
    )


# -- symmetric mode is PCGrad ------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 7])
def test_symmetric_mode_matches_torchjd_pcgrad(num_tasks):
    from torchjd.aggregation import PCGrad

    rows = _rows(num_tasks, 6, seed=num_tasks)
    ours = WeightedPCGrad(mode="symmetric", seed=11)
    # torchjd draws one torch.randperm(K) per task from the global generator, as the method
    # does from its own: the same seed gives the same orders.
    torch.manual_seed(11)
    theirs = PCGrad()
    for _ in range(3):
        torch.testing.assert_close(ours(rows), theirs(rows), rtol=0, atol=1e-12)


# -- invariants ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sequential", "pairwise", "symmetric"])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_no_conflict_is_the_plain_sum_bit_for_bit(mode, num_tasks):
    rows = _rows(num_tasks, 7, seed=num_tasks).abs()  # positive entries: no conflict
    method = WeightedPCGrad(mode=mode, seed=num_tasks)
    for _ in range(3):
        assert torch.equal(method(rows), rows.sum(dim=0))
        assert method.diagnostics()["projections"] == 0


def test_conflict_is_strict():
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    method = WeightedPCGrad(mode="symmetric")
    assert torch.equal(method(orthogonal), orthogonal.sum(dim=0))
    assert method.diagnostics()["projections"] == 0


@pytest.mark.parametrize("reference", ["original", "projected"])
@pytest.mark.parametrize("seed", range(6))
def test_first_untouched_and_norms_shrink(reference, seed):
    num_tasks = 2 + seed % 4
    rows = _rows(num_tasks, 4, seed=seed)
    order = torch.randperm(num_tasks, generator=torch.Generator().manual_seed(seed))
    coefficients, _ = project_in_order(rows @ rows.T, order, reference=reference, eps=1e-30)
    projected = coefficients @ rows
    first = int(order[0])
    assert torch.equal(coefficients[first], torch.eye(num_tasks, dtype=torch.float64)[first])
    assert bool((projected.norm(dim=1) <= rows.norm(dim=1) + 1e-12).all())


@pytest.mark.parametrize("mode", ["sequential", "pairwise", "symmetric"])
@pytest.mark.parametrize("scale", [1e-3, 7.5, 1e6])
def test_positive_homogeneity(mode, scale):
    rows = _rows(4, 6, seed=21)
    plain = WeightedPCGrad(mode=mode, seed=5)
    scaled = WeightedPCGrad(mode=mode, seed=5)
    for _ in range(3):
        torch.testing.assert_close(scaled(scale * rows), scale * plain(rows), rtol=1e-11, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_two_tasks_update_keeps_the_first_in_full(seed):
    rows = _conflicting_pair(seed)
    for order in ([0, 1], [1, 0]):
        first = rows[order[0]]
        assert float(_combined(rows, order) @ first) >= float(first @ first) * (1 - 1e-12)


@pytest.mark.parametrize(
    "priorities", [(0.5, 0.3, 0.2), (0.1, 0.1, 0.8), (0.25, 0.25, 0.25, 0.25), (0.7, 0.0, 0.3)]
)
def test_first_drawn_frequency_is_p(priorities):
    p = torch.tensor(priorities, dtype=torch.float64)
    orders = sample_order(p, torch.Generator().manual_seed(1), num_samples=20_000)
    counts = torch.bincount(orders[:, 0], minlength=len(priorities)).double()
    positive = p > 0
    assert float(counts[~positive].sum()) == 0
    expected = 20_000 * p[positive]
    chi_square = float(((counts[positive] - expected) ** 2 / expected).sum())
    assert chi_square < CHI2_999[int(positive.sum()) - 1]


def test_zero_priority_tasks_come_last_in_uniform_order():
    p = torch.tensor([0.0, 1.0, 0.0, 0.0])
    orders = sample_order(p, torch.Generator().manual_seed(2), num_samples=6_000)
    assert bool((orders[:, 0] == 1).all())
    second = torch.bincount(orders[:, 1], minlength=4).double()[[0, 2, 3]]
    chi_square = float(((second - 2_000) ** 2 / 2_000).sum())
    assert chi_square < CHI2_999[2]


def test_one_hot_priorities_keep_that_task_intact():
    method = WeightedPCGrad(priorities={"a": 0.0, "b": 1.0, "c": 0.0}, seed=4)
    rows = _rows(3, 5, seed=4)
    for _ in range(20):
        method(rows, ["a", "b", "c"])
        assert method.diagnostics()["first_task"] == "b"


def test_pairwise_two_tasks_has_the_sequential_distribution():
    # Task 0 is projected with probability p_1 under both rules.
    p = torch.tensor([0.8, 0.2])
    draws = torch.stack([sample_pairs(p, torch.Generator().manual_seed(s))[0] for s in range(4000)])
    projected_zero = float((draws[:, 0] == 0).double().mean())
    assert abs(projected_zero - 0.2) < 0.02
    for pair in ([0, 1], [1, 0]):
        coefficients, _ = project_pairs(G2 @ G2.T, torch.tensor([pair]))
        order = [pair[1], pair[0]]  # the reference is drawn first
        torch.testing.assert_close((coefficients @ G2).sum(0), _combined(G2, order))


def _pairwise_expectation(rows: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    pairs = [(0, 1), (0, 2), (1, 2)]
    total = torch.zeros(rows.shape[1], dtype=torch.float64)
    for visit in itertools.permutations(pairs):
        for flips in itertools.product([False, True], repeat=3):
            probability = 1 / 6
            drawn = []
            for (i, j), flip in zip(visit, flips, strict=True):
                loser, winner = (j, i) if flip else (i, j)
                probability *= float(p[winner] / (p[i] + p[j]))
                drawn.append([loser, winner])
            coefficients, _ = project_pairs(rows @ rows.T, torch.tensor(drawn))
            total = total + probability * (coefficients @ rows).sum(0)
    return total


def _sequential_expectation(rows: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(rows.shape[1], dtype=torch.float64)
    for order in itertools.permutations(range(3)):
        probability, left = 1.0, 1.0
        for task in order:
            probability *= float(p[task]) / left
            left -= float(p[task])
        total = total + probability * _combined(rows, list(order))
    return total


def test_pairwise_differs_from_sequential_for_three_tasks():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    pairwise = _pairwise_expectation(G3, p)
    sequential = _sequential_expectation(G3, p)
    assert float((pairwise - sequential).abs().max()) > 1e-3


# -- priorities from losses and weightings ------------------------------------------------------


def test_loss_power_uses_previous_epoch_means():
    method = WeightedPCGrad(source="loss_power", gamma=1.0)
    tasks = ["a", "b"]
    torch.testing.assert_close(method.probabilities(tasks, 2), torch.full((2,), 0.5).double())
    method.update(torch.tensor([1.0, 2.0]), tasks, epoch=0)
    method.update(torch.tensor([1.0, 4.0]), tasks, epoch=0)
    # Still epoch 0: uniform.
    torch.testing.assert_close(method.probabilities(tasks, 2), torch.full((2,), 0.5).double())
    method.update(torch.tensor([5.0, 5.0]), tasks, epoch=1)  # closes epoch 0: means (1, 3)
    expected = torch.tensor([0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(method.probabilities(tasks, 2), expected, rtol=0, atol=1e-10)


def test_loss_power_relative_to_first_epoch():
    method = WeightedPCGrad(source="loss_power", gamma=1.0, relative_to_first_epoch=True)
    tasks = ["a", "b"]
    method.update(torch.tensor([2.0, 4.0]), tasks, epoch=0)
    method.update(torch.tensor([1.0, 3.0]), tasks, epoch=1)
    torch.testing.assert_close(method.probabilities(tasks, 2), torch.full((2,), 0.5).double())
    method.update(torch.tensor([1.0, 1.0]), tasks, epoch=2)  # ratios (1/2, 3/4)
    expected = torch.tensor([0.4, 0.6], dtype=torch.float64)
    torch.testing.assert_close(method.probabilities(tasks, 2), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_loss_power_rejects_bad_losses(bad):
    method = WeightedPCGrad(source="loss_power")
    with pytest.raises(ValueError, match="task 'b' has"):
        method.update(torch.tensor([1.0, bad]), ["a", "b"], epoch=0)
    with pytest.raises(ValueError, match="epoch=e"):
        method.update(torch.tensor([1.0, 1.0]), ["a", "b"])


def test_priorities_from_a_weighting():
    method = WeightedPCGrad(source="weighting", weighting=Manual(weights={"a": 3.0, "b": 1.0}))
    torch.testing.assert_close(method.probabilities(["a", "b"], 2), torch.full((2,), 0.5).double())
    method.update(torch.tensor([0.5, 0.5]), ["a", "b"], epoch=0)
    expected = torch.tensor([0.75, 0.25], dtype=torch.float64)
    torch.testing.assert_close(method.probabilities(["a", "b"], 2), expected)


# -- reproducibility and state ------------------------------------------------------------------


def test_seeded_reproducibility():
    rows = _rows(4, 6, seed=30)
    first, second, other = (WeightedPCGrad(seed=s) for s in (7, 7, 8))
    results = [(first(rows), second(rows), other(rows)) for _ in range(20)]
    assert all(torch.equal(a, b) for a, b, _ in results)
    assert any(not torch.equal(a, c) for a, _, c in results)


def test_state_round_trip_and_reset():
    rows = _rows(3, 5, seed=31)
    tasks = ["a", "b", "c"]
    method = WeightedPCGrad(source="loss_power", resample_every=2, seed=9)
    method.update(torch.tensor([1.0, 2.0, 3.0]), tasks, epoch=0)
    method.update(torch.tensor([1.0, 1.0, 3.0]), tasks, epoch=1)
    for _ in range(3):
        method(rows, tasks)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    resumed = WeightedPCGrad(source="loss_power", resample_every=2, seed=9)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(resumed.probabilities(tasks, 3), method.probabilities(tasks, 3))
    for _ in range(6):
        assert torch.equal(resumed(rows, tasks), method(rows, tasks))
    method.reset()
    fresh = WeightedPCGrad(source="loss_power", resample_every=2, seed=9)
    for _ in range(4):
        assert torch.equal(method(rows, tasks), fresh(rows, tasks))


def test_resample_every_keeps_the_order():
    rows = _rows(4, 6, seed=32)
    method = WeightedPCGrad(resample_every=3, seed=1)
    firsts = []
    for _ in range(9):
        method(rows)
        firsts.append(method.diagnostics()["first_task"])
    assert firsts[0:3] == [firsts[0]] * 3
    assert firsts[3:6] == [firsts[3]] * 3


# -- conventions and properties -----------------------------------------------------------------


def test_sum_convention_and_mean_option():
    rows = _rows(3, 4, seed=33)
    summed = WeightedPCGrad(seed=2)(rows)
    averaged = WeightedPCGrad(seed=2, reduction="mean")(rows)
    torch.testing.assert_close(averaged, summed / 3)


def _special_rows() -> dict[str, torch.Tensor]:
    g = _rows(1, 5, seed=34)[0]
    return {
        "zero": torch.zeros(3, 5, dtype=torch.float64),
        "parallel": torch.stack([g, 3 * g]),
        "anti-parallel": torch.stack([g, -2 * g]),
        "zero row": torch.stack([g, torch.zeros_like(g), -g]),
        "tiny": _rows(4, 6, seed=35) * 1e-15,
        "huge": _rows(4, 6, seed=36) * 1e15,
        "one task": g[None],
    }


@pytest.mark.parametrize("name", list(_special_rows()))
@pytest.mark.parametrize("mode", ["sequential", "pairwise", "symmetric"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite(name, mode, dtype):
    rows = _special_rows()[name].to(dtype)
    result = WeightedPCGrad(mode=mode)(rows)
    assert result.dtype == dtype and result.shape == (rows.shape[1],)
    assert bool(torch.isfinite(result).all())


def test_anti_parallel_first_survives_and_the_other_vanishes():
    g = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)
    rows = torch.stack([g, -2 * g])
    torch.testing.assert_close(_combined(rows, [0, 1]), g, rtol=0, atol=1e-15)
    torch.testing.assert_close(_combined(rows, [1, 0]), -2 * g, rtol=0, atol=1e-15)


def test_one_task_is_returned_unchanged():
    g = _rows(1, 5, seed=37)
    method = WeightedPCGrad()
    state = method.generator.get_state()
    assert torch.equal(method(g), g[0])
    assert torch.equal(method.generator.get_state(), state)  # nothing drawn


def test_head_gradients_are_single_task_gradients():
    torch.manual_seed(0)
    model = nn.ModuleDict({"trunk": nn.Linear(3, 4), "a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
    x = torch.randn(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = taskprio.MultiTaskStep(model, optimizer, ["a", "b"], method=WeightedPCGrad())

    def losses():
        features = model["trunk"](x)
        return {"a": model["a"](features).mean(), "b": -model["b"](features).square().mean()}

    step(losses())
    for task in ("a", "b"):
        expected = torch.autograd.grad(losses()[task], model[task].weight)[0]
        torch.testing.assert_close(model[task].weight.grad, expected)


def test_registry_and_repr():
    method = taskprio.methods.create("wpcgrad", priorities={"a": 2.0, "b": 1.0}, seed=3)
    assert isinstance(method, WeightedPCGrad)
    assert repr(method) == (
        "WeightedPCGrad(priorities={'a': 2.0, 'b': 1.0}, source='static', mode='sequential', "
        "reference='original', seed=3)"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "random"}, "`mode` must be one of"),
        ({"source": "static"}, "`source='static'` needs `priorities`"),
        ({"priorities": [1.0, -1.0]}, r"`priorities\[1\]` must be a finite number"),
        ({"priorities": {"a": math.nan}}, r"`priorities\['a'\]` must be a finite number"),
        ({"priorities": [0.0, 0.0]}, "`priorities` are all 0"),
        ({"priorities": [1.0], "source": "uniform"}, "Drop `priorities`"),
        ({"mode": "symmetric", "reference": "projected"}, "set reference='original'"),
        ({"resample_every": 0}, "`resample_every` must be a positive integer"),
        ({"eps": -1.0}, "`eps` must be finite and non-negative"),
        ({"gamma": math.inf}, "`gamma` must be a finite number"),
        ({"source": "weighting"}, "`source='weighting'` needs `weighting`"),
        ({"weighting": "equal"}, "Drop `weighting`"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        WeightedPCGrad(**options)


def test_bad_calls():
    rows = _rows(2, 3, seed=38)
    with pytest.raises(ValueError, match="needs the task names"):
        WeightedPCGrad(priorities={"a": 1.0, "b": 1.0})(rows)
    with pytest.raises(KeyError, match=r"no weight for task\(s\) \['b'\]"):
        WeightedPCGrad(priorities={"a": 1.0})(rows, ["a", "b"])
    with pytest.raises(ValueError, match="has 3 weights but the gradients have 2 rows"):
        WeightedPCGrad(priorities=[1.0, 1.0, 1.0])(rows)
