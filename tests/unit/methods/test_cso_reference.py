"""CSO against an independent float64 re-implementation written with explicit loops.

The reference below follows the CSO spec (``cso.md``) step by step, per connection, per channel, per
task and per group, in plain Python floats where it decides something (strengths, shares,
owners, dot products); it never calls the library's priority or projection code. The models
and their connections, listed by hand, are in ``_cso_models.py``; every norm there keeps its
running statistics fixed during forwards (``momentum=0.0``), so the owners the implementation
reads are those the reference reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from _cso_models import (
    DTYPE,
    MODELS,
    AlignedReadout,
    HandWorked,
    build_model,
    task_names,
)
from torch import Tensor, nn

import taskprio
from taskprio.nn import TaskNorm
from taskprio.priority import channel_owner, normalized_shares

LR = 0.1
EPOCHS = 10
Grads = dict[str, Tensor | None]  # parameter name → gradient


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on these tiny tensors it is much faster (several threads spin and
    contend when the CPU is busy) and every reduction runs in one fixed order."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------


def channel_rows(layer: nn.Module, tensor: Tensor) -> list[Tensor]:
    """Views of `tensor` (the layer's weight, or a gradient of it), one per output channel.

    Conv and Linear: channel p is ``W[p]``. ConvTranspose: the weight is
    [in, out/groups, ...]; channel p lies in group g = p // (out/groups) and is
    ``W[g·in/groups : (g+1)·in/groups, p mod out/groups]``.
    """
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        in_per_group = layer.in_channels // layer.groups
        out_per_group = layer.out_channels // layer.groups
        rows = []
        for p in range(layer.out_channels):
            group, q = divmod(p, out_per_group)
            rows.append(tensor[group * in_per_group : (group + 1) * in_per_group, q])
        return rows
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return [tensor[p] for p in range(tensor.shape[0])]
    raise TypeError(f"not a connected layer: {type(layer).__name__}")


def norm_factors(norm: nn.Module) -> list[float]:
    """γ_p² / (v_p + ε) per channel of one task's norm (v + ε := 1 without running stats)."""
    if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        channels = norm.num_features
    elif isinstance(norm, nn.LayerNorm):
        channels = norm.normalized_shape[-1]
    elif isinstance(norm, nn.GroupNorm):
        assert norm.num_groups == norm.num_channels
        channels = norm.num_channels
    else:
        raise TypeError(type(norm).__name__)
    factors = []
    for p in range(channels):
        gamma = 1.0 if norm.weight is None else float(norm.weight.detach()[p])
        running_var = getattr(norm, "running_var", None)
        denominator = 1.0 if running_var is None else float(running_var[p]) + norm.eps
        factors.append(gamma * gamma / denominator)
    return factors


def reference_strengths(
    layer: nn.Module, norm: TaskNorm, tasks: Sequence[str]
) -> list[list[float]]:
    """S[t][p] = γ_t,p²/(v_t,p+ε_t) · Σ W[p]² (Eqs. 4, 6; no 1/k²)."""
    rows = channel_rows(layer, layer.weight.detach())
    energies = [sum(w * w for w in row.flatten().tolist()) for row in rows]
    strengths = []
    for task in tasks:
        factors = norm_factors(norm.norms[task])
        assert len(factors) == len(energies)
        strengths.append([factors[p] * energies[p] for p in range(len(energies))])
    return strengths


def reference_owners(layer: nn.Module, norm: TaskNorm, tasks: Sequence[str]) -> list[int]:
    """ν_p = argmax_t Ŝ[t][p] (first maximum wins), Ŝ[t] = S[t] / Σ_p S[t][p] (0 if Σ = 0)."""
    strengths = reference_strengths(layer, norm, tasks)
    shares = []
    for row in strengths:
        total = sum(row)
        shares.append([s / total if total != 0 else 0.0 for s in row])
    owners = []
    for p in range(len(strengths[0])):
        best = 0
        for t in range(1, len(tasks)):
            if shares[t][p] > shares[best][p]:
                best = t
        owners.append(best)
    return owners


def reference_combined_grads(
    model: nn.Module,
    tasks: Sequence[str],
    task_grads: dict[str, Grads],
    *,
    degenerate: str = "sum",
) -> tuple[Grads, dict[nn.Module, int]]:
    """Algorithm 1, Phase 2: per-group projections on connections, then the sum over tasks.

    Args:
        model: has ``connections``, the hand-listed (shared layer, task norm) pairs.
        tasks: the tasks in step order (ties go to the first).
        task_grads: task → parameter name → its gradient, or None.
        degenerate: ``"sum"`` or ``"project"``.

    Returns:
        parameter name → Σ_t (projected) g_t, and connection layer → projections made there.
    """
    projected = {
        t: {n: None if g is None else g.clone() for n, g in task_grads[t].items()} for t in tasks
    }
    name_of = {id(p): n for n, p in model.named_parameters()}
    projections: dict[nn.Module, int] = {}
    for layer, norm in model.connections:
        name = name_of[id(layer.weight)]
        projections[layer] = 0
        if any(projected[t][name] is None for t in tasks):
            continue
        owners = reference_owners(layer, norm, tasks)
        if len(set(owners)) == 1 and degenerate == "sum":
            continue
        rows = {t: channel_rows(layer, projected[t][name]) for t in tasks}  # views: write-through
        for i, owner in enumerate(tasks):
            group = [p for p in range(len(owners)) if owners[p] == i]
            if not group:
                continue
            a = [v for p in group for v in rows[owner][p].flatten().tolist()]
            a_dot_a = sum(v * v for v in a)
            for other in tasks:
                if other == owner:
                    continue
                b = [v for p in group for v in rows[other][p].flatten().tolist()]
                a_dot_b = sum(u * v for u, v in zip(a, b, strict=True))
                if a_dot_b < 0:  # strict: an orthogonal or zero gradient is left alone
                    coefficient = a_dot_b / a_dot_a
                    b = [v - coefficient * u for u, v in zip(a, b, strict=True)]
                    projections[layer] += 1
                    offset = 0
                    for p in group:
                        size = rows[other][p].numel()
                        values = torch.tensor(b[offset : offset + size], dtype=DTYPE)
                        rows[other][p].copy_(values.view_as(rows[other][p]))
                        offset += size
    combined: Grads = {}
    for name in task_grads[tasks[0]]:
        present = [projected[t][name] for t in tasks if projected[t][name] is not None]
        combined[name] = None
        for g in present:
            combined[name] = g.clone() if combined[name] is None else combined[name] + g
    return combined, projections


def per_task_gradients(
    model: nn.Module,
    tasks: Sequence[str],
    x: Tensor,
    targets: dict[str, Tensor],
    weights: dict[str, float] | None = None,
) -> dict[str, Grads]:
    """One separate ``torch.autograd.grad`` of w_t·L_t per task: task → name → gradient."""
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    result = {}
    for task in tasks:
        weight = 1.0 if weights is None else weights[task]
        loss = weight * model.task_loss(task, x, targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        result[task] = dict(zip(names, grads, strict=True))
    return result


def reference_sgd_step(
    model: nn.Module,
    x: Tensor,
    targets: dict[str, Tensor],
    *,
    tasks: Sequence[str] | None = None,
    lr: float = LR,
    degenerate: str = "sum",
    weights: dict[str, float] | None = None,
) -> tuple[dict[str, Tensor], dict[nn.Module, int]]:
    """Parameters after one reference Phase-2 SGD step (on a copy; `model` is left as it is).

    Returns:
        name → expected parameter, and the projections per connection layer of `model`.
    """
    reference = copy.deepcopy(model)
    tasks = tuple(tasks or model.tasks)
    grads = per_task_gradients(reference, tasks, x, targets, weights)
    combined, projections = reference_combined_grads(reference, tasks, grads, degenerate=degenerate)
    expected = {}
    for name, p in reference.named_parameters():
        g = combined[name]
        expected[name] = p.detach().clone() if g is None else p.detach() - lr * g
    # Key the projection counts by the original model's layers.
    layer_of = dict(zip(reference.modules(), model.modules(), strict=True))
    return expected, {layer_of[layer]: n for layer, n in projections.items()}


# ---------------------------------------------------------------------------------------------
# Running the implementation
# ---------------------------------------------------------------------------------------------


def cso_step(
    model: nn.Module,
    x: Tensor,
    targets: dict[str, Tensor],
    *,
    tasks: Sequence[str] | None = None,
    lr: float = LR,
    weights: dict[str, float] | None = None,
    **options: object,
) -> taskprio.StepRecord:
    """One ``schedule="phase2"`` CSO step with plain SGD, through the public step API."""
    cso = taskprio.methods.CSO(epochs=EPOCHS, schedule="phase2", **options)
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        tuple(tasks or model.tasks),
        method=cso,
        weighting="equal" if weights is None else taskprio.weighting.Manual(weights=weights),
    )
    return step(lambda task: model.task_loss(task, x, targets), epoch=0)


def assert_parameters(
    model: nn.Module, expected: dict[str, Tensor], *, rtol: float = 1e-13, atol: float = 1e-15
) -> None:
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=rtol, atol=atol, msg=name)


def total(projections: dict[nn.Module, int]) -> int:
    return sum(projections.values())


# ---------------------------------------------------------------------------------------------
# 1. The hand-worked example
# ---------------------------------------------------------------------------------------------


def test_hand_worked_example():
    """K=2 tasks a, b; one connection with N=2 channels (``HandWorked`` in ``_cso_models``).

    W = [[1, 0], [1, 1]] → r = Σ_q W[p, q]² = (1, 2). With v+ε: a (1, 4), b (4, 1);
    γ: a (1, 1), b (1, 2):

        S_a = (1²/1·1, 1²/4·2) = (1, 1/2)      Ŝ_a = (2/3, 1/3)
        S_b = (1²/4·1, 2²/1·2) = (1/4, 8)      Ŝ_b = (1/33, 32/33)

    Owners ν = (a, b): a owns channel 0, b owns channel 1, one row each.

    Gradients, dL_t/dW[p, q] = C_t[q, p]·γ_t,p/√(v_t,p+ε) with γ/√(v+ε) = a (1, 1/2), b (1/2, 2)
    and C_a = [[2, 2], [1, -2]], C_b = [[-6, 0], [2, 1]]:

        g_a = [[2, 1], [1, -1]]        g_b = [[-3, 1], [0, 2]]

    Group of a (row 0): g_a·g_b = -6 + 1 = -5 < 0, |g_a|² = 5:
        g_b[0] ← (-3, 1) - (-5/5)·(2, 1) = (-1, 2)             (now ⊥ (2, 1)); g_a[0] unchanged.
    Group of b (row 1): g_b·g_a = 0 - 2 = -2 < 0, |g_b|² = 4:
        g_a[1] ← (1, -1) - (-2/4)·(0, 2) = (1, 0)              (now ⊥ (0, 2)); g_b[1] unchanged.

    Sum: G = [[2 - 1, 1 + 2], [1 + 0, 0 + 2]] = [[1, 3], [1, 2]] (the plain sum would be
    [[-1, 2], [1, 1]]); 2 projections. SGD with lr 1/2: W ← W - G/2 = [[0.5, -1.5], [0.5, 0]].

    The norms get their own task's gradient only. With y[n, p] = W[p, n] = [[1, 1], [0, 1]] and
    running mean 0, dL_t/dγ_t,p = Σ_n C_t[n, p]·y[n, p]/√(v_t,p+ε) and dL_t/dβ_t,p = Σ_n C_t[n, p]:
        γ_a: (2, 0) → (1, 1) - (1, 0) = (0, 1);   β_a: (3, 0) → (-1.5, 0)
        γ_b: (-3, 1) → (1, 2) - (-1.5, 0.5) = (2.5, 1.5);   β_b: (-4, 1) → (2, -0.5)
    """
    strengths = torch.tensor([[1.0, 0.5], [0.25, 8.0]], dtype=DTYPE)
    shares = normalized_shares(strengths)
    torch.testing.assert_close(
        shares,
        torch.tensor([[2 / 3, 1 / 3], [1 / 33, 32 / 33]], dtype=DTYPE),
        rtol=0,
        atol=1e-16,
    )
    assert channel_owner(shares).tolist() == [0, 1]
    assert channel_owner(shares).dtype == torch.int64

    expected = {
        "fc.weight": torch.tensor([[0.5, -1.5], [0.5, 0.0]], dtype=DTYPE),
        "norm.norms.a.weight": torch.tensor([0.0, 1.0], dtype=DTYPE),
        "norm.norms.a.bias": torch.tensor([-1.5, 0.0], dtype=DTYPE),
        "norm.norms.b.weight": torch.tensor([2.5, 1.5], dtype=DTYPE),
        "norm.norms.b.bias": torch.tensor([2.0, -0.5], dtype=DTYPE),
    }
    model = HandWorked()
    x, targets = model.make_batch(0)

    # The reference reproduces the hand derivation...
    assert reference_strengths(model.fc, model.norm, model.tasks) == [[1.0, 0.5], [0.25, 8.0]]
    assert reference_owners(model.fc, model.norm, model.tasks) == [0, 1]
    grads = per_task_gradients(model, model.tasks, x, targets)
    torch.testing.assert_close(grads["a"]["fc.weight"], torch.tensor([[2.0, 1], [1, -1]]).to(DTYPE))
    torch.testing.assert_close(grads["b"]["fc.weight"], torch.tensor([[-3.0, 1], [0, 2]]).to(DTYPE))
    reference, projections = reference_sgd_step(model, x, targets, lr=0.5)
    assert total(projections) == 2
    assert_parameters_exact(reference, expected)

    # ...and so does the implementation.
    record = cso_step(model, x, targets, lr=0.5)
    assert record.phase == "phase2"
    assert record.diagnostics["projections"] == 2
    assert_parameters_exact(dict(model.named_parameters()), expected)


def assert_parameters_exact(params: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert set(params) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(params[name].detach(), value, rtol=0, atol=1e-15, msg=name)


def test_normalized_shares_and_owner_edge_cases():
    # A zero row (a task whose γ are all zero) gets zero shares, not NaN.
    shares = normalized_shares(torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 0.0]], dtype=DTYPE))
    torch.testing.assert_close(
        shares, torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.75, 0.0]], dtype=DTYPE), rtol=0, atol=0
    )
    # Ties go to the lowest task index; equal rows make task 0 own everything.
    tied = torch.tensor([[0.2, 0.8, 0.5], [0.8, 0.2, 0.5], [0.8, 0.2, 0.5]], dtype=DTYPE)
    assert channel_owner(tied).tolist() == [1, 0, 0]
    assert channel_owner(torch.full((4, 3), 1 / 3, dtype=DTYPE)).tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------------------------
# 2. Every model, K = 2..5, against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 5])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_phase2_step_matches_reference(model_name: str, num_tasks: int):
    model = build_model(model_name, num_tasks, seed=num_tasks)
    x, targets = model.make_batch(seed=10 + num_tasks)
    expected, projections = reference_sgd_step(model, x, targets)
    record = cso_step(model, x, targets)
    assert record.phase == "phase2"
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)


@pytest.mark.parametrize("model_name", ["plain_cnn", "transposed_cnn", "resnet"])
def test_each_tasks_eps_enters_the_strength(model_name: str):
    """S = γ²/(v + ε_t)·r with task t's own ε: large, different ε per task move owners."""
    model = build_model(model_name, 3, seed=111)
    generator = torch.Generator().manual_seed(116)
    for module in model.modules():
        if isinstance(module, TaskNorm):
            for norm in module.norms.values():
                norm.eps = 0.1 + 4.9 * torch.rand((), generator=generator, dtype=DTYPE).item()
    without_eps = copy.deepcopy(model)
    for module in without_eps.modules():
        if isinstance(module, TaskNorm):
            for norm in module.norms.values():
                norm.eps = 0.0
    assert any(
        reference_owners(layer, norm, model.tasks) != reference_owners(layer_0, norm_0, model.tasks)
        for (layer, norm), (layer_0, norm_0) in zip(
            model.connections, without_eps.connections, strict=True
        )
    )
    x, targets = model.make_batch(seed=113)
    expected, projections = reference_sgd_step(model, x, targets)
    record = cso_step(model, x, targets)
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_reference_cases_have_conflicts(model_name: str):
    """Guard for the test above: at K=3 each model makes the reference project somewhere."""
    model = build_model(model_name, 3, seed=3)
    x, targets = model.make_batch(seed=13)
    _, projections = reference_sgd_step(model, x, targets)
    assert total(projections) > 0


@pytest.mark.parametrize("model_name", list(MODELS))
def test_explicit_connections_match_reference(model_name: str):
    model = build_model(model_name, 3, seed=7)
    x, targets = model.make_batch(seed=17)
    expected, projections = reference_sgd_step(model, x, targets)
    record = cso_step(model, x, targets, connections=list(model.connections))
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)


@pytest.mark.parametrize("model_name", ["resnet", "linear_layernorm"])
def test_loss_weights_scale_task_gradients(model_name: str):
    """g_t = ∇(w_t·L_t) enters the projections and the sum."""
    model = build_model(model_name, 3, seed=121)
    weights = {"t0": 3.0, "t1": 0.25, "t2": 1.7}
    x, targets = model.make_batch(seed=122)
    expected, projections = reference_sgd_step(model, x, targets, weights=weights)
    record = cso_step(model, x, targets, weights=weights)
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)


# ---------------------------------------------------------------------------------------------
# 3. Properties
# ---------------------------------------------------------------------------------------------


def _groups(model: nn.Module, tasks: Sequence[str]) -> list[tuple[str, nn.Module, int, list[int]]]:
    """(weight name, layer, owner index, channels) for every nonempty group of every
    non-degenerate connection."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for layer, norm in model.connections:
        if layer in model.degenerate_layers:
            continue
        owners = reference_owners(layer, norm, tasks)
        assert len(set(owners)) > 1
        for i in range(len(tasks)):
            channels = [p for p, owner in enumerate(owners) if owner == i]
            if channels:
                groups.append((name_of[id(layer.weight)], layer, i, channels))
    return groups


def _flat_group(layer: nn.Module, tensor: Tensor, channels: list[int]) -> Tensor:
    rows = channel_rows(layer, tensor)
    return torch.cat([rows[p].flatten() for p in channels])


def _sgd_update(model: nn.Module, run) -> dict[str, Tensor]:
    """Run `run()` (one step with lr 1) and return name → parameter before - after."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_two_tasks_is_one_sided_pcgrad_per_group(model_name: str):
    """K=2: on each group, update = a + b - min(0, a·b)/|a|²·a, a the owner's gradient; where
    they conflict, the update's component along a is exactly |a|² (the owner's rows are kept)."""
    model = build_model(model_name, 2, seed=22)
    x, targets = model.make_batch(seed=23)
    tasks = model.tasks
    grads = per_task_gradients(copy.deepcopy(model), tasks, x, targets)
    groups = _groups(model, tasks)
    update = _sgd_update(model, lambda: cso_step(model, x, targets, lr=1.0))
    num_conflicts = 0
    for name, layer, i, channels in groups:
        a = _flat_group(layer, grads[tasks[i]][name], channels)
        b = _flat_group(layer, grads[tasks[1 - i]][name], channels)
        got = _flat_group(layer, update[name], channels)
        a_dot_b = torch.dot(a, b)
        want = a + b - torch.clamp(a_dot_b, max=0) / torch.dot(a, a) * a
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        if a_dot_b < 0:
            num_conflicts += 1
            torch.testing.assert_close(torch.dot(got, a), torch.dot(a, a), rtol=1e-12, atol=1e-14)
    assert num_conflicts > 0


@pytest.mark.parametrize("num_tasks", [3, 5])
@pytest.mark.parametrize("model_name", ["plain_cnn", "resnet", "linear_layernorm"])
def test_owner_component_is_kept(model_name: str, num_tasks: int):
    """Owner rows never change: on each group the update's component along the owner's gradient
    a is |a|² + Σ a·b_j over the non-owners that do not conflict (conflicting ones end up ⊥ a)."""
    model = build_model(model_name, num_tasks, seed=31)
    x, targets = model.make_batch(seed=32)
    tasks = model.tasks
    grads = per_task_gradients(copy.deepcopy(model), tasks, x, targets)
    groups = _groups(model, tasks)  # before the step: owners depend on W
    update = _sgd_update(model, lambda: cso_step(model, x, targets, lr=1.0))
    for name, layer, i, channels in groups:
        a = _flat_group(layer, grads[tasks[i]][name], channels)
        want = torch.dot(a, a)
        for j, other in enumerate(tasks):
            if j != i:
                a_dot_b = torch.dot(a, _flat_group(layer, grads[other][name], channels))
                want = want + torch.clamp(a_dot_b, min=0)
        got = torch.dot(_flat_group(layer, update[name], channels), a)
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_task_order_does_not_matter(model_name: str):
    model = build_model(model_name, 4, seed=41)
    permuted = copy.deepcopy(model)
    x, targets = model.make_batch(seed=42)
    record = cso_step(model, x, targets)
    record_permuted = cso_step(permuted, x, targets, tasks=("t2", "t0", "t3", "t1"))
    assert record.diagnostics["projections"] == record_permuted.diagnostics["projections"]
    assert_parameters(permuted, {n: p.detach() for n, p in model.named_parameters()})


def test_no_conflict_gives_plain_sum():
    model = AlignedReadout(task_names(3))
    summed = copy.deepcopy(model)
    x, targets = model.make_batch(seed=51)
    _, projections = reference_sgd_step(model, x, targets)
    assert total(projections) == 0
    owners = reference_owners(model.conv, model.norm, model.tasks)
    assert len(set(owners)) > 1  # not degenerate: the groups exist and were compared
    record = cso_step(model, x, targets)
    assert record.diagnostics["projections"] == 0
    step = taskprio.MultiTaskStep(
        summed, torch.optim.SGD(summed.parameters(), lr=LR), summed.tasks, method="sum"
    )
    step(lambda task: summed.task_loss(task, x, targets))
    assert_parameters(model, {n: p.detach() for n, p in summed.named_parameters()})


def test_uniform_scaling_of_a_task_leaves_shares_and_owners():
    """Scaling task t's γ by c (or its v+ε by 1/c²) within a layer scales its S row by c²: Ŝ and
    ν are unchanged (strengths built here from γ, v+ε and r as in Eq. 6)."""
    generator = torch.Generator().manual_seed(61)
    gamma = 0.5 + 1.5 * torch.rand(4, 6, generator=generator, dtype=DTYPE)
    var_eps = 0.5 + 1.5 * torch.rand(4, 6, generator=generator, dtype=DTYPE)
    energy = torch.rand(6, generator=generator, dtype=DTYPE)
    shares = normalized_shares(gamma**2 / var_eps * energy)
    for scale in (1e-3, 0.5, 3.0, 1e4):
        scaled_gamma = gamma.clone()
        scaled_gamma[2] *= scale
        scaled_shares = normalized_shares(scaled_gamma**2 / var_eps * energy)
        torch.testing.assert_close(scaled_shares, shares, rtol=1e-14, atol=0)
        assert torch.equal(channel_owner(scaled_shares), channel_owner(shares))
    assert len(set(channel_owner(shares).tolist())) > 1


def test_uniform_rescaling_of_running_variance_changes_no_step():
    """In train mode the forward ignores running_var, which enters only the owners; rescaling
    one task's v+ε uniformly inside one layer must leave the whole step bit for bit."""
    model = build_model("resnet", 3, seed=71)
    rescaled = copy.deepcopy(model)
    norm = rescaled.block2.bn1.norms["t1"]
    with torch.no_grad():
        norm.running_var.copy_(4.0 * (norm.running_var + norm.eps) - norm.eps)
    x, targets = model.make_batch(seed=72)
    record = cso_step(model, x, targets)
    record_rescaled = cso_step(rescaled, x, targets)
    assert record.diagnostics["projections"] == record_rescaled.diagnostics["projections"]
    for (name, p), q in zip(model.named_parameters(), rescaled.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("model_name", "degenerate"),
    [("plain_cnn", "sum"), ("degenerate_cnn", "sum"), ("degenerate_cnn", "project")],
)
def test_zero_owner_gradient_gives_no_nan(model_name: str, degenerate: str):
    """A zero head makes task t0's gradient exactly zero on the whole trunk, also where t0 owns
    the group (and, in the degenerate layers, everything): no projection, no division by 0."""
    model = build_model(model_name, 3, seed=81)
    with torch.no_grad():
        model.heads["t0"].weight.zero_()
        model.heads["t0"].bias.zero_()
    assert any(0 in reference_owners(layer, norm, model.tasks) for layer, norm in model.connections)
    x, targets = model.make_batch(seed=82)
    expected, projections = reference_sgd_step(model, x, targets, degenerate=degenerate)
    record = cso_step(model, x, targets, degenerate=degenerate)
    assert record.diagnostics["projections"] == total(projections)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert_parameters(model, expected)


# ---------------------------------------------------------------------------------------------
# 4. Phase 1
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "weights"),
    [(name, None) for name in MODELS] + [("resnet", {"t0": 2.0, "t1": 0.5, "t2": 4.0})],
)
def test_phase1_equals_sequential_single_task_adam_steps(
    model_name: str, weights: dict[str, float] | None
):
    """Phase 1 on one batch = for t in tasks: zero_grad(set_to_none); (w_t·L_t).backward();
    step().

    Adam with weight decay: a head that got a zero gradient instead of none would still move
    (decay and momentum), so heads of other tasks must be skipped exactly as here. Weights are
    powers of two, so scaling the loss or its gradient gives the same bits.
    """
    model = build_model(model_name, 3, seed=91)
    reference = copy.deepcopy(model)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.01)
    step = taskprio.MultiTaskStep(
        model,
        torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01),
        model.tasks,
        method=taskprio.methods.CSO(epochs=EPOCHS, schedule="phase1"),
        weighting="equal" if weights is None else taskprio.weighting.Manual(weights=weights),
    )
    for seed in (92, 93):
        x, targets = model.make_batch(seed)
        record = step(lambda task, x=x, targets=targets: model.task_loss(task, x, targets), epoch=0)
        assert record.phase == "phase1"
        for task in reference.tasks:
            reference_optimizer.zero_grad(set_to_none=True)
            weight = 1.0 if weights is None else weights[task]
            (weight * reference.task_loss(task, x, targets)).backward()
            reference_optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------------------------------------
# 5. Degenerate connections
# ---------------------------------------------------------------------------------------------


def test_degenerate_sum_leaves_degenerate_layers_to_the_plain_sum():
    model = build_model("degenerate_cnn", 3, seed=101)
    x, targets = model.make_batch(seed=102)
    for layer, norm in model.connections:
        owners = reference_owners(layer, norm, model.tasks)
        assert (set(owners) == {0}) == (layer in model.degenerate_layers)
    grads = per_task_gradients(copy.deepcopy(model), model.tasks, x, targets)
    expected, projections = reference_sgd_step(model, x, targets, degenerate="sum")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = cso_step(model, x, targets, degenerate="sum")
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)
    params = dict(model.named_parameters())
    for name in ("narrow.weight", "same.weight"):
        plain_sum = sum(grads[t][name] for t in model.tasks)
        torch.testing.assert_close(
            params[name].detach(), before[name] - LR * plain_sum, rtol=1e-13, atol=1e-15
        )


def test_degenerate_project_projects_against_the_sole_owner():
    model = build_model("degenerate_cnn", 3, seed=101)
    x, targets = model.make_batch(seed=102)
    expected_sum, _ = reference_sgd_step(model, x, targets, degenerate="sum")
    expected, projections = reference_sgd_step(model, x, targets, degenerate="project")
    assert projections[model.narrow] > 0
    assert projections[model.same] > 0
    record = cso_step(model, x, targets, degenerate="project")
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)
    params = dict(model.named_parameters())
    assert not torch.allclose(params["narrow.weight"], expected_sum["narrow.weight"])
    assert not torch.allclose(params["same.weight"], expected_sum["same.weight"])


def test_degenerate_project_owner_is_the_first_task_of_the_step():
    """Ties go to the lowest task index, the index in the step's task list (rows of the
    gradient matrix), not in the norms' own order: with the tasks permuted, t2 owns the
    degenerate layers. (So with ``"project"`` the result depends on the task order.)"""
    model = build_model("degenerate_cnn", 3, seed=101)
    x, targets = model.make_batch(seed=102)
    tasks = ("t2", "t0", "t1")
    expected, projections = reference_sgd_step(model, x, targets, tasks=tasks, degenerate="project")
    record = cso_step(model, x, targets, tasks=tasks, degenerate="project")
    assert record.diagnostics["projections"] == total(projections)
    assert_parameters(model, expected)
