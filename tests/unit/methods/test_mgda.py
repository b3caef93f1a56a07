"""MGDA (weights sum to 1, torchjd's Frank–Wolfe) and MGDA-UB through MultiTaskStep."""

from __future__ import annotations

import pytest
import torch
from _asserts import (
    assert_finite_on_edge_cases,
    assert_permutation_invariant,
    assert_runs_in_step,
    assert_scale_equivariant,
    assert_single_task,
    assert_zero_on_zero,
)
from _inputs import J_BASE, normal, random_matrices
from torch import Tensor, nn
from torch.testing import assert_close
from torchjd.aggregation import MGDA as TorchJDMGDA

import taskprio
from taskprio.methods import MGDA, MGDAUB, create

TASKS = ("a", "b", "c")


def min_norm_two_rows(matrix: Tensor) -> Tensor:
    """The exact min-norm weights of two rows: α = clamp((g₂ − g₁)·g₂ / ‖g₁ − g₂‖², 0, 1)."""
    first, second = matrix
    difference = first - second
    alpha = ((second - first) @ second / (difference @ difference)).clamp(0.0, 1.0)
    return torch.stack([alpha, 1.0 - alpha])


@pytest.mark.parametrize("matrix", random_matrices(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_torchjd(matrix):
    # Same Frank–Wolfe iterations: equal to rounding.
    assert_close(MGDA()(matrix), TorchJDMGDA()(matrix), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("seed", range(10))
def test_two_tasks_exact_min_norm(seed):
    matrix = normal(2, 6, 300 + seed)
    method = MGDA()
    weights = method.weights(matrix)
    assert_close(weights, min_norm_two_rows(matrix), rtol=1e-12, atol=1e-12)


def test_weights_sum_to_one():
    # Convention: torchjd and LibMTL; Nash-MTL multiplies by K.
    for matrix in random_matrices():
        weights = MGDA().weights(matrix)
        assert_close(weights.sum(), weights.new_tensor(1.0), rtol=1e-12, atol=1e-12)
        assert bool((weights >= 0).all())


def test_pinned_value():
    method = MGDA()
    assert_close(method(J_BASE), J_BASE.new_tensor([0.0, 1.0, 1.0]), atol=1e-12, rtol=0)
    assert_close(torch.tensor(method.diagnostics()["task_weights"]), torch.tensor([0.6, 0.4]))


def test_properties():
    assert_finite_on_edge_cases(MGDA)
    assert_runs_in_step(MGDA)
    assert_runs_in_step(MGDAUB)
    assert_zero_on_zero(MGDA)
    assert_single_task(MGDA)
    assert_permutation_invariant(MGDA)
    assert_scale_equivariant(MGDA)


def test_options_are_validated():
    with pytest.raises(ValueError, match="`epsilon` must be a positive number"):
        MGDA(epsilon=0.0)
    with pytest.raises(ValueError, match="`max_iters` must be a positive integer"):
        MGDA(max_iters=0)
    assert repr(MGDA(max_iters=5)) == "MGDA(epsilon=0.001, max_iters=5)"
    assert isinstance(create("mgda_ub"), MGDAUB)


# -- MGDA-UB through MultiTaskStep -------------------------------------------------------


def _model() -> nn.ModuleDict:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    heads = nn.ModuleDict({t: nn.Linear(4, 2) for t in TASKS})
    return nn.ModuleDict({"trunk": trunk, "heads": heads}).double()


def _batch() -> tuple[Tensor, dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    targets = {t: torch.randn(5, 2, generator=generator, dtype=torch.float64) for t in TASKS}
    return x, targets


def _losses(model: nn.ModuleDict, z: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    return {t: ((model["heads"][t](z) - targets[t]) ** 2).mean() for t in TASKS}


def reference_ub_grads(model, weights_of) -> tuple[dict[str, Tensor], Tensor]:
    """float64: α from the [K, B·d] representation gradients, then Σ_t α_t ∇θ L_t per parameter."""
    x, targets = _batch()
    z = model["trunk"](x)
    losses = _losses(model, z, targets)
    representation = torch.stack(
        [torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1) for t in TASKS]
    )
    alpha = weights_of(representation)
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for k, task in enumerate(TASKS):
        grads = torch.autograd.grad(
            losses[task], list(model.parameters()), retain_graph=True, allow_unused=True
        )
        for (name, _), grad in zip(model.named_parameters(), grads, strict=True):
            if grad is not None:
                expected[name] += alpha[k] * grad
    return expected, alpha


@pytest.mark.parametrize("method", ["mgda_ub", "aligned_mtl_ub"])
def test_ub_trunk_gradient(method):
    model = _model()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.0), TASKS, method=method
    )
    weights_of = create(method.removesuffix("_ub")).weights  # the same weights on a plain matrix
    expected, alpha = reference_ub_grads(model, weights_of)
    x, targets = _batch()
    z = model["trunk"](x)
    record = step(_losses(model, z, targets), features=z)
    assert_close(torch.tensor(record.diagnostics["task_weights"], dtype=torch.float64), alpha)
    for name, param in model.named_parameters():
        # The trunk gets J_zᵀ Σ α_t ∇_z L_t, each head α_t ∇ L_t.
        assert_close(param.grad, expected[name], rtol=1e-12, atol=1e-14, msg=name)


def test_ub_weights_are_mgda_of_representation_gradients():
    # Independent of the library's solver for two tasks: the closed-form min-norm weights.
    model = _model()
    x, targets = _batch()
    z = model["trunk"](x)
    losses = _losses(model, z, targets)
    representation = torch.stack(
        [torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1) for t in TASKS[:2]]
    )
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.0), TASKS, method="mgda_ub"
    )
    record = step({t: losses[t] for t in TASKS[:2]}, features=z)
    assert_close(
        torch.tensor(record.diagnostics["task_weights"], dtype=torch.float64),
        min_norm_two_rows(representation),
        rtol=1e-12,
        atol=1e-12,
    )


def test_ub_needs_features():
    model = _model()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.0), TASKS, method=MGDAUB()
    )
    x, targets = _batch()
    with pytest.raises(TypeError, match="features=z"):
        step(_losses(model, model["trunk"](x), targets))
