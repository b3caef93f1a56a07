"""R_p (multi-forward ordering) and R_o (orthogonality): hand-worked values, float64 loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from taskprio.pareto import (
    LowRankParetoModel,
    choose_task_subset,
    low_rank_cosines,
    multi_forward_regularizer,
    orthogonality_penalty,
)


def _reference_multi_forward(alphas, losses, tau):
    """Plain loops in float64: sort by α_t, consecutive strict pairs, log-mean-exp."""
    total = 0.0
    for task in range(alphas.shape[1]):
        order = sorted(range(alphas.shape[0]), key=lambda w: -float(alphas[w, task]))
        penalties = []
        for hi, lo in itertools.pairwise(order):
            if float(alphas[hi, task]) > float(alphas[lo, task]):
                penalties.append(max(float(losses[hi, task]) - float(losses[lo, task]), 0.0))
        if penalties:
            total += math.log(sum(math.exp(tau * p) for p in penalties) / len(penalties))
    return total


def test_multi_forward_hand_worked():
    alphas = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    # Task 0: the larger weight (0.8) has the larger loss (0.5 vs 0.1): pen = 0.4, R = 0.4.
    value = multi_forward_regularizer(alphas, torch.tensor([[0.5, 0.0], [0.1, 0.0]]))
    torch.testing.assert_close(value, torch.tensor(0.4))
    swapped = multi_forward_regularizer(alphas, torch.tensor([[0.1, 0.0], [0.5, 0.0]]))
    assert swapped.item() == 0.0
    # τ scales the single penalty: log(exp(2·0.4)) = 0.8.
    torch.testing.assert_close(
        multi_forward_regularizer(alphas, torch.tensor([[0.5, 0.0], [0.1, 0.0]]), tau=2.0),
        torch.tensor(0.8),
    )


def test_multi_forward_matches_loops_in_float64():
    generator = torch.Generator().manual_seed(0)
    for window, num_tasks in [(2, 2), (4, 3), (6, 5)]:
        alphas = torch.rand(window, num_tasks, generator=generator, dtype=torch.float64)
        alphas = alphas / alphas.sum(1, keepdim=True)
        losses = torch.rand(window, num_tasks, generator=generator, dtype=torch.float64) * 3
        for tau in (0.5, 1.0, 3.0):
            value = multi_forward_regularizer(alphas, losses, tau=tau)
            assert value.dtype == torch.float64
            assert value.item() == pytest.approx(
                _reference_multi_forward(alphas, losses, tau), rel=1e-12, abs=1e-14
            )


def test_multi_forward_ties_and_single_forward_give_zero_with_finite_gradients():
    alphas = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # ties everywhere: no edge
    losses = torch.tensor([[3.0, 1.0], [1.0, 2.0]], requires_grad=True)
    value = multi_forward_regularizer(alphas, losses)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(losses.grad, torch.zeros(2, 2))
    single = multi_forward_regularizer(torch.tensor([[0.3, 0.7]]), torch.tensor([[5.0, 1.0]]))
    assert single.item() == 0.0


def test_multi_forward_does_not_overflow_on_large_losses():
    alphas = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    losses = torch.tensor([[1000.0, 0.0], [0.0, 0.0]], requires_grad=True)
    value = multi_forward_regularizer(alphas, losses)
    value.backward()
    torch.testing.assert_close(value, torch.tensor(1000.0))
    assert torch.isfinite(losses.grad).all()


def test_multi_forward_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[W, m\]"):
        multi_forward_regularizer(torch.zeros(2, 2), torch.zeros(2, 3))


def test_cosines_r_by_r_identity_equals_flattened_products_float64():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(4, 3, 7, generator=generator, dtype=torch.float64)  # [k, r, d_in]
    b = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)  # [k, d_out, r]
    flat = torch.stack([(b[i] @ a[i]).flatten() for i in range(4)])  # [k, d_out·d_in]
    inner = flat @ flat.T
    norms = flat.norm(dim=1)
    expected = inner / (norms[:, None] * norms[None, :] + 1e-8)
    torch.testing.assert_close(low_rank_cosines(a, b), expected, rtol=1e-12, atol=1e-14)


def test_cosines_hand_worked():
    b = torch.tensor([[[1.0], [0.0]], [[1.0], [0.0]]])
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    # B1A1 = [[1, 0], [0, 0]] and B2A2 = [[0, 1], [0, 0]]: orthogonal, c = 0.
    assert float(orthogonality_penalty(low_rank_cosines(a, b))) == 0.0
    # B2A2 = 2·B1A1: c = 1, R_o = 1.
    doubled_a = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]])
    cosines = low_rank_cosines(doubled_a, b)
    torch.testing.assert_close(cosines[0, 1], torch.tensor(1.0))
    torch.testing.assert_close(orthogonality_penalty(cosines), torch.tensor(1.0))


def test_penalty_is_zero_for_orthogonal_products():
    # B_i = disjoint column blocks of an orthogonal matrix: B_iᵀB_j = 0, so every
    # ⟨B_iA_i, B_jA_j⟩ = 0 whatever the A_i.
    generator = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=generator, dtype=torch.float64))
    b = torch.stack([q[:, 3 * i : 3 * i + 3] for i in range(3)])  # [3, 9, 3]
    a = torch.randn(3, 3, 5, generator=generator, dtype=torch.float64)
    penalty = orthogonality_penalty(low_rank_cosines(a, b))
    assert penalty.item() == pytest.approx(0.0, abs=1e-28)
    # and positive once two products share a direction
    a[1] = a[0]
    b[1] = b[0]
    assert float(orthogonality_penalty(low_rank_cosines(a, b))) == pytest.approx(1.0)


def test_zero_product_has_zero_cosine_and_finite_gradient():
    a = torch.randn(2, 2, 3, requires_grad=True)
    b = torch.zeros(2, 4, 2, requires_grad=True)
    penalty = orthogonality_penalty(low_rank_cosines(a, b))
    penalty.backward()
    assert penalty.item() == 0.0
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_subset_of_three_distinct_tasks_for_many_tasks():
    generator = torch.Generator().manual_seed(0)
    draws = [choose_task_subset(40, 3, generator) for _ in range(50)]
    assert all(len(set(d)) == 3 and d == sorted(d) and d[0] >= 0 and d[-1] < 40 for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    assert choose_task_subset(3, 3, generator) is None
    assert choose_task_subset(2, 3, generator) is None


def test_model_orthogonality_uses_exactly_the_subset():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    model = LowRankParetoModel(net, [f"t{i}" for i in range(40)], rank=2)
    subset = [3, 17, 29]
    expected = torch.stack(
        [
            orthogonality_penalty(low_rank_cosines(layer.lora_a[subset], layer.lora_b[subset]))
            for layer in model.layers
        ]
    ).mean()
    torch.testing.assert_close(model.orthogonality(subset), expected)
    # Only the three chosen tasks receive a gradient.
    model.orthogonality(subset).backward()
    touched = model.layers[0].lora_a.grad.abs().sum(dim=(1, 2)).nonzero().flatten().tolist()
    assert touched == subset


def test_sgd_on_the_orthogonality_term_lowers_it():
    torch.manual_seed(0)
    model = LowRankParetoModel(nn.Sequential(nn.Linear(8, 8)), ["a", "b", "c"], rank=2)
    # Cosines are scale-free, so their gradient grows like 1/‖factor‖: the factors start at
    # ~1e-2, hence a small step.
    optimizer = torch.optim.SGD(model.low_rank_parameters(), lr=1e-5)
    values = []
    for _ in range(5):
        penalty = model.orthogonality()
        values.append(penalty.item())
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
