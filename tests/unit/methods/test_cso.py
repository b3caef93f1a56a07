"""CSO: projection properties, schedules, records, resume and bad input."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn import functional

import taskprio
from taskprio.methods import CSO, project_on_owners
from taskprio.nn import active_task, make_task_specific

TASKS = ("a", "b", "c")


def _rows(num_tasks: int, channels: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, channels, width, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_owner_rows_never_change_and_conflicts_are_removed(num_tasks):
    rows = _rows(num_tasks, 8, 3, seed=num_tasks)
    owner = torch.arange(8) % num_tasks
    projected, count = project_on_owners(rows, owner)
    for p in range(8):
        assert torch.equal(projected[owner[p], p], rows[owner[p], p])
    for i in range(num_tasks):
        group = owner == i
        reference = rows[i, group].reshape(-1)
        for j in range(num_tasks):
            dot = projected[j, group].reshape(-1) @ reference
            assert dot >= -1e-12 * reference.norm() ** 2
    assert 0 <= int(count) <= num_tasks * (num_tasks - 1)


def test_task_order_does_not_matter():
    rows = _rows(4, 6, 5, seed=1)
    owner = torch.tensor([0, 1, 2, 3, 1, 0])
    projected, _ = project_on_owners(rows, owner)
    permutation = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(permutation)
    permuted, _ = project_on_owners(rows[permutation], inverse[owner])
    torch.testing.assert_close(permuted, projected[permutation], rtol=0, atol=0)


def test_no_conflict_is_the_plain_rows():
    rows = _rows(3, 4, 2, seed=2).abs()  # all entries positive: every inner product > 0
    projected, count = project_on_owners(rows, torch.tensor([0, 1, 2, 0]))
    assert int(count) == 0
    assert torch.equal(projected, rows)


def test_two_tasks_is_one_sided_pcgrad_per_group():
    rows = _rows(2, 4, 3, seed=3)
    owner = torch.tensor([0, 0, 1, 1])
    projected, _ = project_on_owners(rows, owner)
    for i, group in ((0, slice(0, 2)), (1, slice(2, 4))):
        j = 1 - i
        a, b = rows[i, group].reshape(-1), rows[j, group].reshape(-1)
        expected = b - min(a @ b, 0.0) / (a @ a) * a  # PCGrad of b against a; a unchanged
        torch.testing.assert_close(projected[j, group].reshape(-1), expected)


def test_zero_owner_gradient_gives_no_nan():
    rows = _rows(2, 3, 2, seed=4)
    rows[0] = 0
    projected, count = project_on_owners(rows, torch.tensor([0, 0, 1]))
    assert torch.isfinite(projected).all()
    assert int(count) <= 1


def test_degenerate_policies():
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]]])  # a·b = -1
    owner = torch.tensor([0, 0])
    summed, count = project_on_owners(rows, owner, degenerate="sum")
    assert torch.equal(summed, rows)
    assert int(count) == 0
    projected, count = project_on_owners(rows, owner, degenerate="project")
    # b − (a·b / a·a) a with a = (1, 0, 0, 1), b = (−1, 0, 0, 1): a·b = 0 → no conflict? No:
    # a·b = −1 + 1 = 0, so nothing changes even when projecting.
    assert torch.equal(projected, rows)
    rows[1, 1, 1] = 0.0  # now a·b = −1 < 0: b ← b + ½ a = (−½, 0, 0, ½)
    projected, count = project_on_owners(rows, owner, degenerate="project")
    assert int(count) == 1
    torch.testing.assert_close(projected[1], torch.tensor([[-0.5, 0.0], [0.0, 0.5]]))


class _Net(nn.Module):
    def __init__(self, tasks=TASKS) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 6, 3, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks})

    def forward_task(self, x, task):
        return self.heads[task](self.trunk(x)).squeeze(1)


def _setup(seed=0, **options):
    torch.manual_seed(seed)
    model = _Net()
    make_task_specific(model.trunk, TASKS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = taskprio.MultiTaskStep(model, optimizer, TASKS, method=CSO(epochs=4, **options))
    return model, optimizer, step


def _batch(index):
    generator = torch.Generator().manual_seed(100 + index)
    x = torch.randn(6, 1, 8, 8, generator=generator)
    y = torch.randn(6, 3, generator=generator)
    return x, y


def _closure(model, x, y):
    def task_loss(task):
        with active_task(model, task):
            prediction = model.forward_task(x, task)
        return functional.mse_loss(prediction, y[:, TASKS.index(task)])

    return task_loss


def _train(model, step, batches, epoch_of=lambda i: i // 3):
    records = []
    for i in batches:
        x, y = _batch(i)
        records.append(step(_closure(model, x, y), epoch=epoch_of(i)))
    return records


def test_records_phase_shares_and_projections():
    model, _, step = _setup(schedule="phase2")
    (record,) = _train(model, step, [0])
    assert record.phase == "phase2"
    assert set(record.diagnostics["priority_shares"]) == {"trunk.0", "trunk.3"}
    assert isinstance(record.diagnostics["projections"], int)
    # Fresh task norms are identical across tasks: both layers are degenerate at the start.
    assert record.diagnostics["degenerate_layers"] == 2
    snapshot = step.method.priority_map()
    assert [layer.name for layer in snapshot.layers] == ["trunk.0", "trunk.3"]


def test_phase1_record():
    model, _, step = _setup(schedule="phase1")
    (record,) = _train(model, step, [0])
    assert record.phase == "phase1"
    assert set(record.losses) == set(TASKS)


def test_resume_continues_exactly():
    def epoch_of(i):
        return min(i, 3)  # Phase 1 with probability 1, 3/4, 1/2, 1/4, 1/4, 1/4

    model, optimizer, step = _setup(seed=3)
    _train(model, step, range(6), epoch_of)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    model, optimizer, step = _setup(seed=3)
    records = _train(model, step, range(3), epoch_of)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model, optimizer, step = _setup(seed=99)  # a different init, all overwritten by the load
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    step.load_state_dict(saved["step"])
    records += _train(model, step, range(3, 6), epoch_of)
    for p, expected in zip(model.parameters(), uninterrupted, strict=True):
        assert torch.equal(p.detach(), expected)
    assert {r.phase for r in records} == {"phase1", "phase2"}


def test_mixed_schedule_phase1_frequency_follows_one_minus_e_over_e():
    method = CSO(epochs=4, seed=0)
    draws = 4000
    for epoch in range(4):
        phase1 = sum(method.choose_phase(epoch) == 1 for _ in range(draws)) / draws
        expected = 1 - epoch / 4
        # Binomial standard deviation ≤ 0.008; five of them.
        assert abs(phase1 - expected) < 0.04, (epoch, phase1)


def test_epoch_draw_is_one_draw_per_epoch():
    method = CSO(epochs=10, draw="epoch", seed=1)
    for epoch in range(10):
        phases = {method.choose_phase(epoch) for _ in range(20)}
        assert len(phases) == 1


def test_sequential_and_fixed_schedules():
    method = CSO(epochs=4, schedule="sequential")
    assert [method.choose_phase(e) for e in range(4)] == [1, 1, 2, 2]
    assert CSO(epochs=4, schedule="phase1").choose_phase(None) == 1
    assert CSO(epochs=4, schedule="phase2").choose_phase(None) == 2


def test_same_seed_same_phases_and_state_dict_round_trip():
    first, second = CSO(epochs=5, seed=7), CSO(epochs=5, seed=7)
    assert [first.choose_phase(2) for _ in range(50)] == [second.choose_phase(2) for _ in range(50)]
    state = copy.deepcopy(first.state_dict())
    ahead = [first.choose_phase(3) for _ in range(20)]
    restored = CSO(epochs=5, seed=0)
    restored.load_state_dict(state)
    assert [restored.choose_phase(3) for _ in range(20)] == ahead


def test_shuffled_order_is_seeded():
    runs = []
    for options in ({"task_order": "shuffled"}, {"task_order": "shuffled"}, {}):
        model, _, step = _setup(seed=0, schedule="phase1", **options)
        _train(model, step, range(4))
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(runs[0], runs[1], strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(runs[0], runs[2], strict=True))


def test_phase2_with_another_aggregator_is_that_aggregator_on_the_shared_block():
    model, _, step = _setup(schedule="phase2", phase2="sum")
    reference_model, _, reference = _setup(schedule="phase2")
    reference.method.degenerate = "sum"
    x, y = _batch(0)
    record = step(_closure(model, x, y), epoch=0)
    reference(_closure(reference_model, x, y), epoch=0)
    assert "priority_shares" not in record.diagnostics
    # At initialization every connection is degenerate, so CSO's own Phase 2 is the plain sum.
    for p, q in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_bad_use_is_reported():
    with pytest.raises(ValueError, match="`epochs`"):
        CSO(epochs=0)
    with pytest.raises(ValueError, match="`schedule`"):
        CSO(epochs=3, schedule="mix")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch=e"):
        CSO(epochs=3).choose_phase(None)
    model, _, step = _setup()
    x, y = _batch(0)
    with pytest.raises(TypeError, match="closure"):
        step({t: _closure(model, x, y)(t) for t in TASKS}, epoch=0)
    with pytest.raises(TypeError, match="whole steps"):
        CSO(epochs=3)(torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="run one step first"):
        CSO(epochs=3).priority_map()
    assert "cso" in taskprio.methods.available()
