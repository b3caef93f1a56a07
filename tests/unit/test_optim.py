"""MultiTaskStep: weighting, method, partial supervision and bad input."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

import taskprio
from taskprio.methods import Method

TASKS = ("a", "b")


class SumByRows(Method):
    """The plain sum through the general per-task path (not the one-backward shortcut)."""

    name = "sum_by_rows"
    summary = "test only"

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        return per_task_grads.sum(dim=0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "trunk": nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU()),
            "a": nn.Linear(5, 1),
            "b": nn.Linear(5, 1),
        }
    ).double()


def _losses(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    features = model["trunk"](x)
    return {
        "a": ((model["a"](features).squeeze(1) - y[:, 0]) ** 2).mean(),
        "b": (model["b"](features).squeeze(1) - y[:, 1]).abs().mean(),
    }


def _data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(8, 3, generator=generator, dtype=torch.float64),
        torch.randn(8, 2, generator=generator, dtype=torch.float64),
    )


def _expected_sgd_step(model: nn.Module, weights: dict[str, float], lr: float) -> list[Tensor]:
    """Parameters after one SGD step on Σ w_t L_t, from a plain autograd reference."""
    reference = copy.deepcopy(model)
    x, y = _data()
    losses = _losses(reference, x, y)
    total = sum(weights[t] * losses[t] for t in weights)
    grads = torch.autograd.grad(total, list(reference.parameters()), allow_unused=True)
    return [
        p.detach() - lr * (g if g is not None else 0)
        for p, g in zip(reference.parameters(), grads, strict=True)
    ]


@pytest.mark.parametrize("method", ["sum", SumByRows()])
def test_weighted_step_equals_step_on_weighted_loss(method):
    model = _net()
    weights = {"a": 2.0, "b": 0.5}
    expected = _expected_sgd_step(model, weights, lr=0.1)
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method=method,
        weighting=taskprio.weighting.Manual(weights=weights),
    )
    x, y = _data()
    record = step(_losses(model, x, y))
    assert record.weights == weights
    assert set(record.losses) == set(TASKS)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-14)


def test_general_path_records_conflict_statistics():
    model = _net()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method=SumByRows()
    )
    x, y = _data()
    record = step(_losses(model, x, y))
    assert record.diagnostics["conflicting_pairs"] in (0.0, 1.0)
    assert -1.0 <= record.diagnostics["min_cosine"] <= 1.0


def test_closure_form_with_task_norms_sums_task_gradients():
    torch.manual_seed(2)
    model = _net()
    taskprio.nn.make_task_specific(model["trunk"], TASKS)
    reference = copy.deepcopy(model)
    x, y = _data()

    def closure_for(net: nn.Module):
        def task_loss(task: str) -> Tensor:
            with taskprio.nn.active_task(net, task):
                return _losses(net, x, y)[task]

        return task_loss

    expected_grads = [torch.zeros_like(p) for p in reference.parameters()]
    for task in TASKS:
        loss = closure_for(reference)(task)
        for acc, g in zip(
            expected_grads,
            torch.autograd.grad(loss, list(reference.parameters()), allow_unused=True),
            strict=True,
        ):
            if g is not None:
                acc += g
    step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS)
    step(closure_for(model))
    for p, p0, g in zip(model.parameters(), reference.parameters(), expected_grads, strict=True):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * g, rtol=1e-12, atol=1e-14)
    # Each task's norm was updated by its own task only: the other task's norm rows are intact.
    norm = model["trunk"][1]
    assert not torch.equal(norm.norms["a"].weight, norm.norms["b"].weight)


@pytest.mark.parametrize("method", ["sum", SumByRows()])
def test_task_without_labels_is_left_out(method):
    model = _net()
    head_b_before = [p.detach().clone() for p in model["b"].parameters()]
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method=method
    )
    x, y = _data()
    record = step({"a": _losses(model, x, y)["a"]})
    assert record.skipped_tasks == ("b",)
    assert set(record.losses) == {"a"}
    for p, before in zip(model["b"].parameters(), head_b_before, strict=True):
        assert torch.equal(p.detach(), before)
        assert p.grad is None
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_closure_returning_none_skips_the_task():
    model = _net()
    step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS)
    x, y = _data()
    record = step(lambda t: _losses(model, x, y)["b"] if t == "b" else None)
    assert record.skipped_tasks == ("a",)


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_non_finite_loss_stops_before_any_change(form):
    model = _net()
    before = [p.detach().clone() for p in model.parameters()]
    step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS)
    x, y = _data()
    y[0, 1] = float("nan")
    losses = _losses(model, x, y)
    argument = losses if form == "mapping" else losses.__getitem__
    with pytest.raises(FloatingPointError, match="'b' is nan"):
        step(argument)
    for p, p0 in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), p0)


def test_bad_construction_is_reported():
    model = _net()
    with pytest.raises(ValueError, match="not in `optimizer`"):
        taskprio.MultiTaskStep(model, torch.optim.SGD(model["trunk"].parameters(), lr=0.1), TASKS)
    with pytest.raises(KeyError, match="Did you mean 'sum'"):
        taskprio.MultiTaskStep(
            model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method="sun"
        )
    with pytest.raises(ValueError, match="unique"):
        taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ["a", "a"])
    step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS)
    x, y = _data()
    with pytest.raises(KeyError, match="unknown tasks"):
        step({"c": _losses(model, x, y)["a"]})


def test_registry_lists_sum():
    assert "sum" in taskprio.methods.available()
    assert isinstance(taskprio.methods.create("sum"), taskprio.methods.Sum)
    assert {"equal", "manual"} <= set(taskprio.weighting.available())


def test_conflict_statistics_hand_worked():
    # Rows (1, 0), (-1, 1), (0, 1): only the first pair conflicts (inner product -1), with
    # cosine -1/√2; the others are orthogonal (0) and aligned (1/√2).
    stats = taskprio.optim.conflict_statistics(
        torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    )
    assert stats["conflicting_pairs"] == 1.0
    assert stats["min_cosine"] == pytest.approx(-(0.5**0.5), abs=1e-12)


class RecordingMethod(Method):
    """Sums the rows and remembers the shape of every matrix it was given."""

    name = "recording"
    summary = "test only"

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        self.shapes.append(tuple(per_task_grads.shape))
        return per_task_grads.sum(dim=0)


def _trunk_sizes(model: nn.Module) -> list[int]:
    return [p.numel() for p in model["trunk"].parameters()]


@pytest.mark.parametrize("groups", ["shared", "module", "parameter", "user"])
def test_parameter_groups_split_the_shared_block(groups):
    model = _net()
    method = RecordingMethod()
    trunk = list(model["trunk"].parameters())
    parameter_groups = [trunk[:2]] if groups == "user" else groups
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method=method,
        parameter_groups=parameter_groups,
    )
    x, y = _data()
    step(_losses(model, x, y))
    sizes = _trunk_sizes(model)  # Linear weight 15, bias 5; BatchNorm weight 5, bias 5
    expected = {
        "shared": [sum(sizes)],
        "module": [sizes[0] + sizes[1], sizes[2] + sizes[3]],
        "parameter": sizes,
        "user": [sizes[0] + sizes[1], sizes[2] + sizes[3]],
    }[groups]
    assert sorted(n for _, n in method.shapes) == sorted(expected)
    assert all(k == 2 for k, _ in method.shapes)


def test_unknown_parameter_groups_is_an_error():
    model = _net()
    with pytest.raises(ValueError, match="parameter_groups"):
        taskprio.MultiTaskStep(
            model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, parameter_groups="layers"
        )


class FixedRepresentationWeights(taskprio.methods.WeightedMethod):
    """Weights (0.25, 0.75) whatever the matrix; uses representation gradients."""

    name = "fixed_rep"
    summary = "test only"
    uses_representation = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        self.seen.append(per_task_grads.clone())
        return per_task_grads.new_tensor([0.25, 0.75])


def test_representation_step_backpropagates_the_weighted_losses():
    model = _net()
    reference = copy.deepcopy(model)
    method = FixedRepresentationWeights()
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TASKS,
        method=method,
        weighting=taskprio.weighting.Manual(weights={"a": 2.0, "b": 1.0}),
    )
    x, y = _data()
    features = model["trunk"](x)
    losses = {
        "a": ((model["a"](features).squeeze(1) - y[:, 0]) ** 2).mean(),
        "b": (model["b"](features).squeeze(1) - y[:, 1]).abs().mean(),
    }
    expected_rep = torch.stack(
        [
            2.0 * torch.autograd.grad(losses["a"], features, retain_graph=True)[0].reshape(-1),
            1.0 * torch.autograd.grad(losses["b"], features, retain_graph=True)[0].reshape(-1),
        ]
    )
    record = step(losses, features=features)
    torch.testing.assert_close(method.seen[0], expected_rep)
    assert record.diagnostics["task_weights"] == [0.25, 0.75]
    ref_losses = _losses(reference, x, y)
    total = 0.25 * 2.0 * ref_losses["a"] + 0.75 * 1.0 * ref_losses["b"]
    grads = torch.autograd.grad(total, list(reference.parameters()))
    for p, p0, g in zip(model.parameters(), reference.parameters(), grads, strict=True):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * g, rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match="features=z"):
        step(_losses(model, x, y))


class SpyWeighting(taskprio.weighting.Weighting):
    """Equal weights; records what `update` receives."""

    name = "spy"
    summary = "test only"
    needs_grad_norms = True
    needs_losses_after_step = True

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[dict] = []

    def forward(self, losses, tasks, *, epoch=None):
        return losses.new_ones(losses.shape)

    def update(self, losses, tasks, *, epoch=None, grad_norms=None, losses_after=None):
        self.updates.append(
            {"losses": losses, "tasks": tuple(tasks), "norms": grad_norms, "after": losses_after}
        )


@pytest.mark.parametrize("form", ["mapping", "closure"])
def test_weighting_update_gets_norms_and_losses_after(form):
    model = _net()
    reference = copy.deepcopy(model)
    spy = SpyWeighting()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, weighting=spy
    )
    x, y = _data()
    if form == "mapping":
        step(_losses(model, x, y))
    else:
        step(lambda task: _losses(model, x, y)[task])
    (update,) = spy.updates
    assert update["tasks"] == TASKS
    ref_losses = _losses(reference, x, y)
    expected_norms = []
    for task in TASKS:
        grads = torch.autograd.grad(
            ref_losses[task], list(reference["trunk"].parameters()), retain_graph=True
        )
        expected_norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    torch.testing.assert_close(update["norms"], torch.stack(expected_norms))
    if form == "mapping":
        assert update["after"] is None
    else:
        with torch.no_grad():
            after = _losses(model, x, y)
        torch.testing.assert_close(update["after"], torch.stack([after[t] for t in TASKS]))


def test_weighting_update_sees_only_present_tasks():
    model = _net()
    spy = SpyWeighting()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, weighting=spy
    )
    x, y = _data()
    step({"b": _losses(model, x, y)["b"]})
    assert spy.updates[0]["tasks"] == ("b",)
    assert spy.updates[0]["losses"].shape == (1,)


def test_method_update_is_driven_after_each_step():
    class Learning(SumByRows):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[tuple[str, ...], int | None]] = []

        def update(self, losses, tasks, *, epoch=None):
            self.seen.append((tuple(tasks), epoch))

    model = _net()
    method = Learning()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method=method
    )
    x, y = _data()
    step(_losses(model, x, y), epoch=3)
    step({"a": _losses(model, x, y)["a"]}, epoch=4)
    assert method.seen == [(TASKS, 3), (("a",), 4)]


def test_wpcgrad_loss_priorities_learn_through_the_step():
    model = _net()
    method = taskprio.methods.create("wpcgrad", source="loss_power")
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), TASKS, method=method
    )
    x, y = _data()
    uniform = method.probabilities(TASKS, 2)
    for epoch in range(3):
        record = step(_losses(model, x, y), epoch=epoch)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "task_weights" in record.diagnostics
    # The two tasks' losses differ, so the learned priorities are no longer uniform.
    assert not torch.allclose(method.probabilities(TASKS, 2), uniform)
