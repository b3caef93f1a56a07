"""Per-task gradients against float64 central finite differences, an independent reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import taskprio
from taskprio.engine import flat_grad_matrix, per_task_grads, unflatten_like

TASKS = ("a", "b", "c")


class SharedNormNet(nn.Module):
    """Shared trunk with a shared BatchNorm, one head per task, plus two special parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in TASKS})
        self.only_a = nn.Parameter(torch.tensor(0.7))  # reached by task "a" only
        self.unused = nn.Parameter(torch.tensor(1.0))  # reached by no task

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        out = {t: self.heads[t](features).squeeze(1) for t in TASKS}
        return {
            "a": ((self.only_a * out["a"] - y[:, 0]) ** 2).mean(),
            "b": (out["b"] - y[:, 1]).abs().mean(),
            "c": torch.nn.functional.softplus(out["c"] * y[:, 2]).mean(),
        }


class TaskNormNet(nn.Module):
    """Shared linear layers, each followed by a task-specific BatchNorm; one forward per task."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3), nn.BatchNorm1d(3)
        )
        taskprio.nn.make_task_specific(self.trunk, TASKS)
        self.heads = nn.ModuleDict({t: nn.Linear(3, 1) for t in TASKS})

    def loss(self, task: str, x: Tensor, y: Tensor) -> Tensor:
        with taskprio.nn.active_task(self, task):
            out = self.heads[task](torch.tanh(self.trunk(x))).squeeze(1)
        return ((out - y[:, TASKS.index(task)]) ** 2).mean()


def _inputs(seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    return x, y


def _finite_difference(loss_fn, params: list[Tensor], step: float = 1e-6) -> list[Tensor]:
    """Central differences of a scalar function of ``params``, one entry at a time."""
    grads = []
    with torch.no_grad():
        for p in params:
            grad = torch.zeros_like(p)
            flat, flat_grad = p.view(-1), grad.view(-1)
            for j in range(flat.numel()):
                original = flat[j].item()
                flat[j] = original + step
                plus = loss_fn().item()
                flat[j] = original - step
                minus = loss_fn().item()
                flat[j] = original
                flat_grad[j] = (plus - minus) / (2 * step)
            grads.append(grad)
    return grads


@pytest.mark.parametrize("strategy", ["loop", "vmap", "auto"])
def test_mapping_form_matches_finite_differences(strategy):
    torch.manual_seed(0)
    model = SharedNormNet().double()
    x, y = _inputs(1)
    params = list(model.parameters())
    result = per_task_grads(model.losses(x, y), params, strategy=strategy)
    assert result.tasks == TASKS
    for k, task in enumerate(TASKS):
        reference = _finite_difference(lambda task=task: model.losses(x, y)[task], params)
        for i, (param, expected) in enumerate(zip(params, reference, strict=True)):
            got = result.rows(i)[k]
            if param is model.unused or (param is model.only_a and task != "a"):
                assert got is None
                assert not result.touched[k, i]
                continue
            is_other_head = any(
                param is q for t in TASKS if t != task for q in model.heads[t].parameters()
            )
            if is_other_head:
                assert got is None
                continue
            assert got is not None
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
    assert result.grads[params.index(model.unused)] is None


def test_loop_and_vmap_agree_in_float64():
    torch.manual_seed(3)
    model = SharedNormNet().double()
    x, y = _inputs(4)
    params = list(model.parameters())
    loop = per_task_grads(model.losses(x, y), params, strategy="loop")
    vmap = per_task_grads(model.losses(x, y), params, strategy="vmap")
    assert torch.equal(loop.touched, vmap.touched)
    torch.testing.assert_close(loop.losses, vmap.losses, rtol=0, atol=0)
    for g_loop, g_vmap in zip(loop.grads, vmap.grads, strict=True):
        assert (g_loop is None) == (g_vmap is None)
        if g_loop is not None:
            torch.testing.assert_close(g_loop, g_vmap, rtol=1e-12, atol=1e-14)


def test_features_path_equals_the_loop_in_float64():
    torch.manual_seed(7)
    model = SharedNormNet().double()
    x, y = _inputs(8)
    params = list(model.parameters())
    loop = per_task_grads(model.losses(x, y), params, strategy="loop")
    features = model.trunk(x)
    out = {t: model.heads[t](features).squeeze(1) for t in TASKS}
    losses = {
        "a": ((model.only_a * out["a"] - y[:, 0]) ** 2).mean(),
        "b": (out["b"] - y[:, 1]).abs().mean(),
        "c": torch.nn.functional.softplus(out["c"] * y[:, 2]).mean(),
    }
    through = per_task_grads(losses, params, features=features)
    assert torch.equal(loop.touched, through.touched)
    for g_loop, g_through in zip(loop.grads, through.grads, strict=True):
        assert (g_loop is None) == (g_through is None)
        if g_loop is not None:
            torch.testing.assert_close(g_loop, g_through, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_features_path_strategies_equal_the_loop_in_float64(strategy):
    # "loop" carries the representation gradients through the trunk one task at a time.
    torch.manual_seed(7)
    model = SharedNormNet().double()
    x, y = _inputs(8)
    params = list(model.parameters())
    loop = per_task_grads(model.losses(x, y), params, strategy="loop")
    features = model.trunk(x)
    out = {t: model.heads[t](features).squeeze(1) for t in TASKS}
    losses = {
        "a": ((model.only_a * out["a"] - y[:, 0]) ** 2).mean(),
        "b": (out["b"] - y[:, 1]).abs().mean(),
        "c": torch.nn.functional.softplus(out["c"] * y[:, 2]).mean(),
    }
    through = per_task_grads(losses, params, features=features, strategy=strategy)
    assert torch.equal(loop.touched, through.touched)
    for g_loop, g_through in zip(loop.grads, through.grads, strict=True):
        assert (g_loop is None) == (g_through is None)
        if g_loop is not None:
            torch.testing.assert_close(g_loop, g_through, rtol=1e-12, atol=1e-14)


def test_features_path_loops_over_a_convolutional_trunk_on_cpu(monkeypatch):
    torch.manual_seed(11)
    trunk = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()).double()
    heads = nn.ModuleList([nn.Linear(2 * 4 * 4, 1).double() for _ in range(3)])
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    params = [*trunk.parameters(), *heads.parameters()]
    batched_calls = []
    grad = torch.autograd.grad

    def spy(*args, **kwargs):
        batched_calls.append(bool(kwargs.get("is_grads_batched", False)))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    results = {}
    for strategy in ("auto", "vmap"):
        batched_calls.clear()
        features = trunk(x).flatten(1)
        losses = {str(k): (head(features) ** 2).mean() for k, head in enumerate(heads)}
        results[strategy] = per_task_grads(losses, params, features=features, strategy=strategy)
        # auto: 3 head and 3 trunk backward passes; vmap: 3 head passes and one batched.
        assert batched_calls == ([False] * 6 if strategy == "auto" else [False] * 3 + [True])
    for g_auto, g_vmap in zip(results["auto"].grads, results["vmap"].grads, strict=True):
        torch.testing.assert_close(g_auto, g_vmap, rtol=1e-12, atol=1e-14)


def test_features_path_with_a_head_parameter_shared_by_two_tasks():
    # Each task's head backward asks only for the parameters it reaches besides the trunk; a
    # parameter two heads share gets both rows, the others only their own.
    torch.manual_seed(9)
    model = SharedNormNet().double()
    x, y = _inputs(10)
    params = list(model.parameters())

    def losses_of(features: Tensor) -> dict[str, Tensor]:
        out = {t: model.heads[t](features).squeeze(1) for t in TASKS}
        return {
            "a": ((model.only_a * out["a"] - y[:, 0]) ** 2).mean(),
            "b": (model.only_a * out["b"] - y[:, 1]).abs().mean(),  # only_a shared by a and b
            "c": torch.nn.functional.softplus(out["c"] * y[:, 2]).mean(),
        }

    loop = per_task_grads(losses_of(model.trunk(x)), params, strategy="loop")
    features = model.trunk(x)
    through = per_task_grads(losses_of(features), params, features=features)
    shared = params.index(model.only_a)
    assert through.touched[:, shared].tolist() == [True, True, False]
    assert torch.equal(loop.touched, through.touched)
    for g_loop, g_through in zip(loop.grads, through.grads, strict=True):
        assert (g_loop is None) == (g_through is None)
        if g_loop is not None:
            torch.testing.assert_close(g_loop, g_through, rtol=1e-12, atol=1e-14)


def test_features_path_falls_back_when_a_trunk_weight_is_also_used_by_a_head():
    w = torch.tensor([[1.0, -2.0], [0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    features = x @ w  # trunk
    losses = {"a": (features @ w).sum(), "b": features.pow(2).sum()}  # "a" reuses w (tied)
    expected = [torch.autograd.grad(loss, w, retain_graph=True)[0] for loss in losses.values()]
    result = per_task_grads(losses, [w], features=features)
    torch.testing.assert_close(result.grads[0], torch.stack(expected))


def test_closure_form_with_task_norms_matches_finite_differences():
    torch.manual_seed(5)
    model = TaskNormNet().double()
    x, y = _inputs(6)
    params = list(model.parameters())
    result = per_task_grads(lambda t: model.loss(t, x, y), params, tasks=TASKS)
    for k, task in enumerate(TASKS):
        reference = _finite_difference(lambda task=task: model.loss(task, x, y), params)
        touched = [i for i in range(len(params)) if result.touched[k, i]]
        # Task k reaches the shared linear layers, its own norms and its own head only.
        own = {id(p) for p in model.heads[task].parameters()}
        own |= {id(p) for n, p in model.trunk.named_parameters() if f"norms.{task}." in n}
        own |= {id(p) for n, p in model.trunk.named_parameters() if "norms." not in n}
        assert {id(params[i]) for i in touched} == own
        for i, expected in enumerate(reference):
            got = result.rows(i)[k]
            if i in touched:
                torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
            else:
                assert got is None
                assert torch.count_nonzero(expected) == 0


def test_closure_returning_none_leaves_the_task_out():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    result = per_task_grads(
        lambda t: None if t == "b" else (w * w).sum(), [w], tasks=["a", "b", "c"]
    )
    assert result.tasks == ("a", "c")
    assert result.grads[0].shape == (2, 2)


def test_loss_graph_is_released_after_the_last_task():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    shared = torch.exp(w)
    losses = {"a": shared.sum(), "b": (shared * 2).sum()}
    per_task_grads(losses, [w], strategy="loop")
    with pytest.raises(RuntimeError, match="second time"):
        losses["b"].backward()


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_retain_graph_keeps_the_forward_for_a_later_backward(strategy):
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    shared = torch.exp(w)
    losses = {"a": shared.sum(), "b": (shared * 2).sum()}
    per_task_grads(losses, [w], strategy=strategy, retain_graph=True)
    losses["b"].backward()
    torch.testing.assert_close(w.grad, 2 * torch.exp(w.detach()))


def test_representation_gradients_of_a_non_leaf_tensor():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    features = w * 3  # a shared representation, not a leaf
    other = w * 5
    losses = {"a": features.sum(), "b": other.sum()}
    result = per_task_grads(losses, [features], strategy="vmap")
    assert result.rows(0)[1] is None
    torch.testing.assert_close(result.rows(0)[0], torch.ones(2))


def test_errors_name_the_problem():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        per_task_grads({"a": w * 2}, [w])
    with pytest.raises(ValueError, match="does not require grad"):
        per_task_grads({"a": w.detach().sum()}, [w])
    with pytest.raises(ValueError, match="`tasks` is required"):
        per_task_grads(lambda t: w.sum(), [w])
    with pytest.raises(ValueError, match="never stacked"):
        per_task_grads(lambda t: w.sum(), [w], tasks=["a"], strategy="vmap")
    with pytest.raises(ValueError, match="differ"):
        per_task_grads({"a": w.sum()}, [w], tasks=["a", "b"])
    with pytest.raises(ValueError, match="strategy"):
        per_task_grads({"a": w.sum()}, [w], strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not require grad"):
        per_task_grads({"a": w.sum()}, [torch.ones(2)])


def test_flatten_round_trip():
    like = [torch.zeros(2, 3), torch.zeros(4), torch.zeros(1, 1, 2)]
    matrix = flat_grad_matrix([torch.randn(5, *t.shape) for t in like])
    assert matrix.shape == (5, 12)
    pieces = unflatten_like(matrix[2], like)
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in pieces]), matrix[2])
    with pytest.raises(ValueError, match="shape"):
        unflatten_like(torch.zeros(3), like)
