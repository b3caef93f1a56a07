"""LORPMAN training: objective terms, sampling, freezing, registry."""

from __future__ import annotations

import logging

import pytest
import torch
from _pareto_inputs import TASKS, TwoHeadConvNet, regression_splits, small_qm9
from torch.nn import functional

from taskprio.pareto import (
    LORPMAN,
    LowRankParetoModel,
    available_pareto_methods,
    get_pareto_method,
    sample_dirichlet,
    train_pareto,
)


def _state(model: LowRankParetoModel) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _main_keys(state):
    return [name for name in state if "lora_" not in name]


def test_registry_lists_the_three_methods_and_suggests_names():
    assert available_pareto_methods() == ["cosmos", "lorpman", "pamal"]
    assert isinstance(get_pareto_method("lorpman", rank=2), LORPMAN)
    with pytest.raises(KeyError, match="Did you mean 'lorpman'"):
        get_pareto_method("lorpmann")


def test_dirichlet_draws_are_seeded_and_centred():
    generator = torch.Generator().manual_seed(0)
    alphas = sample_dirichlet(4000, 4, concentration=1.0, generator=generator)
    assert alphas.dtype == torch.float64 and (alphas >= 0).all()
    torch.testing.assert_close(alphas.sum(1), torch.ones(4000, dtype=torch.float64))
    torch.testing.assert_close(alphas.mean(0), torch.full((4,), 0.25, dtype=torch.float64),
                               atol=0.01, rtol=0)  # fmt: skip
    again = sample_dirichlet(4000, 4, concentration=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(alphas, again)
    # A large p concentrates at the centroid, a small one at the vertices.
    wide = sample_dirichlet(2000, 3, concentration=100.0, generator=generator)
    sparse = sample_dirichlet(2000, 3, concentration=0.05, generator=generator)
    assert wide.std() < 0.05 < sparse.std()


def test_objective_without_regularizers_is_the_weighted_loss():
    method = LORPMAN(rank=1, multi_forward_weight=0.0, orthogonality_weight=0.0)
    model = method.build(lambda: TwoHeadConvNet(), ["left", "right"])
    preferences = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    losses = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    objective = method.objective(model, preferences, losses, generator=torch.Generator())
    torch.testing.assert_close(objective.loss, torch.tensor(0.2 + 1.6 + 1.8 + 1.6))
    assert set(objective.terms) == {"weighted_loss"}


def test_objective_adds_gated_multi_forward_and_orthogonality():
    torch.manual_seed(0)
    method = LORPMAN(rank=2)
    model = method.build(lambda: TwoHeadConvNet(), ["left", "right"])
    preferences = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    losses = torch.tensor([[0.5, 0.3], [0.1, 0.3]])
    objective = method.objective(model, preferences, losses, generator=torch.Generator())
    weighted = 0.8 * 0.5 + 0.2 * 0.3 + 0.2 * 0.1 + 0.8 * 0.3
    assert objective.terms["multi_forward"] == pytest.approx(0.4)
    assert objective.terms["orthogonality"] == pytest.approx(model.orthogonality().item())
    torch.testing.assert_close(
        objective.loss, torch.tensor(weighted + 0.4 + objective.terms["orthogonality"])
    )
    # Gate: λ_p R_p ≥ J is left out.
    gated = LORPMAN(rank=2, multi_forward_weight=10.0, orthogonality_weight=0.0)
    result = gated.objective(model, preferences, losses, generator=torch.Generator())
    torch.testing.assert_close(result.loss, torch.tensor(weighted))
    ungated = LORPMAN(rank=2, multi_forward_weight=10.0, orthogonality_weight=0.0, gate=False)
    result = ungated.objective(model, preferences, losses, generator=torch.Generator())
    torch.testing.assert_close(result.loss, torch.tensor(weighted + 4.0))


def test_one_task_reduces_to_a_single_network():
    method = LORPMAN(rank=1)
    model = method.build(lambda: TwoHeadConvNet(("only",)), ["only"])
    losses = torch.tensor([[0.7], [0.2], [0.4]])
    objective = method.objective(model, torch.ones(3, 1), losses, generator=torch.Generator())
    torch.testing.assert_close(objective.loss, torch.tensor(1.3))
    assert objective.terms["orthogonality"] == 0.0


@pytest.mark.parametrize(
    ("freeze_epoch", "epochs", "expected"),
    [("auto", 10, 8), ("auto", 3, None), ("auto", 5, 4), (None, 5, None), (5, 5, None), (2, 5, 2)],
)
def test_freeze_epoch_resolution(freeze_epoch, epochs, expected):
    assert LORPMAN(freeze_epoch=freeze_epoch).resolve_freeze_epoch(epochs) == expected


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="freeze_epoch"):
        LORPMAN(freeze_epoch=-1)
    with pytest.raises(ValueError, match="window"):
        LORPMAN(window=0)
    with pytest.raises(ValueError, match="orthogonality_tasks"):
        LORPMAN(orthogonality_tasks=1)


def test_freeze_at_epoch_zero_warns_and_empties_the_main_optimizer(caplog):
    torch.manual_seed(0)
    method = LORPMAN(rank=1, freeze_epoch=0)
    model = method.build(lambda: TwoHeadConvNet(), ["left", "right"])
    optimizer = torch.optim.Adam(model.parameters())
    with caplog.at_level(logging.WARNING, logger="taskprio.pareto._lorpman"):
        method.on_epoch_start(model, optimizer, epoch=0, epochs=3)
    assert "freeze_epoch=0" in caplog.text
    kept = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert kept == {id(p) for p in model.low_rank_parameters()}


class _KeepModel(LORPMAN):
    """LORPMAN that keeps a handle on the model it builds."""

    def build(self, make_model, tasks):
        self.model = super().build(make_model, tasks)
        return self.model


def test_main_network_is_bit_identical_after_the_freeze_epoch():
    method = _KeepModel(rank=2, freeze_epoch=1)
    snapshots = {}
    run = train_pareto(
        small_qm9(),
        method=method,
        tasks=TASKS,
        epochs=3,
        splits=regression_splits(),
        on_epoch=lambda epoch, record: snapshots.setdefault(epoch, _state(method.model)),
        eval_preferences=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    )
    assert run.steps == 9
    before, during, after = snapshots[0], snapshots[1], snapshots[2]
    main = _main_keys(before)
    assert any("running_mean" in name for name in main)
    # Epoch 0 trained the main network; from epoch 1 on it never changes, bit for bit
    # (weights, biases, BatchNorm affine parameters and running statistics).
    for name in main:
        assert torch.equal(before[name], during[name]), name
        assert torch.equal(during[name], after[name]), name
    low_rank = [name for name in before if "lora_" in name]
    assert all(not torch.equal(during[name], after[name]) for name in low_rank)
    assert run.model is method.model and method.model.is_main_frozen


def test_frozen_main_stays_fixed_under_direct_steps():
    torch.manual_seed(0)
    method = LORPMAN(rank=2, freeze_epoch=1, multi_forward_weight=1.0)
    model = method.build(lambda: TwoHeadConvNet(), ["left", "right"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 2, 8, 8)
    y = {"left": torch.randint(3, (8,)), "right": torch.randint(3, (8,))}
    generator = torch.Generator().manual_seed(0)

    def step():
        model.train()
        preferences = method.sample_preferences(2, generator).float()
        losses = torch.stack(
            [
                torch.stack([functional.cross_entropy(model(x, a)[t], y[t]) for t in y])
                for a in preferences
            ]
        )
        loss = method.objective(model, preferences, losses, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    method.on_epoch_start(model, optimizer, epoch=0, epochs=3)
    step()
    method.on_epoch_start(model, optimizer, epoch=1, epochs=3)
    frozen = _state(model)
    for _ in range(3):
        step()
    now = _state(model)
    for name in _main_keys(frozen):
        assert torch.equal(frozen[name], now[name]), name
    assert not torch.equal(frozen["model.trunk.0.lora_a"], now["model.trunk.0.lora_a"])
    assert all(p.grad is None for p in model.main_parameters())
