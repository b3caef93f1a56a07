"""GradNorm: hand-worked steps, a float64 reference of Algorithm 1, state and partial labels."""

from __future__ import annotations

import copy

import pytest
import torch
from _weighting_asserts import (
    Feed,
    assert_absent_task_untouched,
    assert_state_round_trip,
    drive,
    run_steps,
    tiny_problem,
)

import taskprio
from taskprio.weighting import GradNorm, gradnorm_objective


def test_hand_worked_two_steps():
    """Two SGD steps (lr 0.1, α = 1.5) with gradient norms g = (1, 3).

    Step 1: L = L(0) = (1, 1), so r = (1, 1); w = (1, 1) gives G = (1, 3), Ḡ = 2, targets
    (2, 2); ∂L_grad/∂w = sign(G − target) g = (−1, 3); w = (1.1, 0.7), renormalized to sum 2:
    (11/9, 7/9).
    Step 2: L = (0.5, 1), ratios (0.5, 1), r = (2/3, 4/3), r^1.5 = (0.544, 1.540); G = (11/9,
    21/9), Ḡ = 16/9, targets (0.968, 2.737): signs (+, −), gradient (1, −3); w = (101/90,
    97/90), sum 198/90, renormalized: (101/99, 97/99).
    """
    gradnorm = GradNorm(optimizer="sgd", lr=0.1)
    norms = torch.tensor([1.0, 3.0], dtype=torch.float64)
    gradnorm.update(torch.tensor([1.0, 1.0]).double(), ["x", "y"], grad_norms=norms)
    assert gradnorm.weights == pytest.approx({"x": 11 / 9, "y": 7 / 9}, rel=1e-15)
    losses = torch.tensor([0.5, 1.0], dtype=torch.float64)
    gradnorm.update(losses, ["x", "y"], grad_norms=norms)
    assert gradnorm.weights == pytest.approx({"x": 101 / 99, "y": 97 / 99}, rel=1e-15)
    assert gradnorm(losses, ["x", "y"]).tolist() == pytest.approx([101 / 99, 97 / 99])


def test_objective_gradient_is_sign_times_norm():
    weights = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    norms = torch.tensor([2.0, 1.0], dtype=torch.float64)
    ratios = torch.tensor([1.0, 3.0], dtype=torch.float64)
    # G = (1, 2), Ḡ = 1.5, r = (0.5, 1.5), α = 1: targets (0.75, 2.25): signs (+, −).
    objective = gradnorm_objective(weights, norms, ratios, alpha=1.0)
    assert objective.item() == pytest.approx(0.25 + 0.25)
    (grad,) = torch.autograd.grad(objective, weights)
    assert grad.tolist() == [2.0, -1.0]


def _reference_run(alpha: float, steps: int, optimizer: str):
    """Algorithm 1 of the paper in float64, with G_t = ‖∇_W (w_t L_t)‖ by double backward."""
    model, x, y = tiny_problem()
    shared = list(model.trunk.parameters())
    weights = torch.ones(2, dtype=torch.float64, requires_grad=True)
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    weight_optimizer = make([weights], lr=0.025)
    model_optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    initial = None
    for _ in range(steps):
        losses = torch.stack([model.loss(t, x, y) for t in ("a", "b")])
        if initial is None:
            initial = losses.detach()
        norms = []
        for t in range(2):
            grads = torch.autograd.grad(weights[t] * losses[t], shared, create_graph=True)
            norms.append(torch.cat([g.flatten() for g in grads]).norm())
        g_norms = torch.stack(norms)
        ratios = losses.detach() / initial
        relative = ratios / ratios.mean()
        target = (g_norms.mean() * relative**alpha).detach()
        l_grad = (g_norms - target).abs().sum()
        (weight_grad,) = torch.autograd.grad(l_grad, weights, retain_graph=True)
        model_optimizer.zero_grad()
        (weights.detach() * losses).sum().backward()
        model_optimizer.step()
        weights.grad = weight_grad
        weight_optimizer.step()
        with torch.no_grad():
            weights.copy_(weights * 2 / weights.sum())
    return model, weights.detach()


@pytest.mark.parametrize(("form", "optimizer"), [("mapping", "adam"), ("closure", "sgd")])
def test_matches_float64_reference_of_algorithm_1(form, optimizer):
    reference_model, reference_weights = _reference_run(alpha=1.5, steps=5, optimizer=optimizer)
    model, x, y = tiny_problem()
    gradnorm = GradNorm(optimizer=optimizer)
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.05), ["a", "b"], weighting=gradnorm
    )
    for _ in range(5):
        if form == "mapping":
            step({t: model.loss(t, x, y) for t in ("a", "b")})
        else:
            step(lambda t: model.loss(t, x, y))
    got = torch.tensor([gradnorm.weights["a"], gradnorm.weights["b"]], dtype=torch.float64)
    torch.testing.assert_close(got, reference_weights, rtol=1e-13, atol=0)
    assert not torch.equal(got, torch.ones(2, dtype=torch.float64))
    for ours, expected in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-13, atol=1e-15)


def test_weights_keep_sum_k_and_stay_non_negative():
    gradnorm = GradNorm(lr=0.5)
    drive(gradnorm, Feed(0), 30)
    values = torch.tensor(list(gradnorm.weights.values()), dtype=torch.float64)
    assert values.sum().item() == pytest.approx(3.0, rel=1e-14)
    assert (values >= 0).all()


def test_without_grad_norms_it_records_initial_losses_only():
    gradnorm = GradNorm()
    gradnorm.update(torch.tensor([2.0, 4.0]), ["a", "b"])
    gradnorm.update(torch.tensor([1.0, 1.0]), ["a", "b"])
    assert gradnorm.weights == {"a": 1.0, "b": 1.0}
    assert gradnorm.initial_losses.tolist() == [2.0, 4.0]


def test_state_round_trip_with_optimizer_state():
    assert_state_round_trip(GradNorm)


def test_absent_task_untouched_and_present_total_kept():
    gradnorm = assert_absent_task_untouched(GradNorm)
    assert sum(gradnorm.weights.values()) == pytest.approx(3.0, rel=1e-14)


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_end_to_end_learns(form):
    gradnorm = GradNorm()
    records = run_steps(gradnorm, form)
    assert records[0].weights == {"a": 1.0, "b": 1.0}
    assert records[-1].weights["a"] != 1.0
    assert sum(gradnorm.weights.values()) == pytest.approx(2.0)


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="`alpha`"):
        GradNorm(alpha=-1.0)
    with pytest.raises(ValueError, match=r"task 'b' starts at 0\.0"):
        GradNorm().update(torch.tensor([1.0, 0.0]), ["a", "b"], grad_norms=torch.ones(2))
    with pytest.raises(ValueError, match="`grad_norms`"):
        GradNorm().update(torch.tensor([1.0, 2.0]), ["a", "b"], grad_norms=torch.ones(3))
    assert repr(GradNorm()) == "GradNorm(alpha=1.5, optimizer='adam', lr=0.025)"
    assert GradNorm.needs_grad_norms
    assert isinstance(taskprio.weighting.create("gradnorm", alpha=0.5), GradNorm)
    assert copy.deepcopy(GradNorm()).alpha == 1.5
