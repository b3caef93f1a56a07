import pytest
import torch
from torch import nn

from taskprio.nn import TaskBatchNorm1d, TaskLayerNorm, active_task, task_norms

TASKS = ("a", "b", "c")


def _model() -> nn.Sequential:
    shared = TaskLayerNorm(4, TASKS)
    return nn.Sequential(
        nn.Linear(4, 4), TaskBatchNorm1d(4, TASKS), shared, nn.Sequential(shared, nn.ReLU())
    )


def _active_tasks(model: nn.Module) -> list[str | None]:
    return [norm.active_task for _, norm in task_norms(model)]


def test_task_norms_lists_each_object_once_with_its_name() -> None:
    model = _model()
    assert [(name, type(norm)) for name, norm in task_norms(model)] == [
        ("1", TaskBatchNorm1d),
        ("2", TaskLayerNorm),
    ]
    assert task_norms(nn.Linear(2, 2)) == []
    assert task_norms(model[1]) == [("", model[1])]


def test_active_task_sets_every_norm_and_restores_it() -> None:
    model = _model()
    with active_task(model, "b"):
        assert _active_tasks(model) == ["b", "b"]
        model(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    assert _active_tasks(model) == [None, None]
    assert model[1].norms["b"].num_batches_tracked.item() == 1
    assert model[1].norms["a"].num_batches_tracked.item() == 0


def test_active_task_nests_and_restores_each_previous_value() -> None:
    model = _model()
    model[2].active_task = "c"
    with active_task(model, "a"):
        with active_task(model, "b"):
            assert _active_tasks(model) == ["b", "b"]
        assert _active_tasks(model) == ["a", "a"]
    assert _active_tasks(model) == [None, "c"]


def test_active_task_restores_after_an_exception() -> None:
    model = _model()
    with pytest.raises(ZeroDivisionError), active_task(model, "a"):
        assert _active_tasks(model) == ["a", "a"]
        _ = 1 / 0
    assert _active_tasks(model) == [None, None]


def test_unknown_task_raises_listing_tasks_and_changes_nothing() -> None:
    model = _model()
    model[2] = TaskLayerNorm(4, ("a", "b"))
    with (
        pytest.raises(ValueError, match=r"`task`='c' is not a task of 2 .*\('a', 'b'\)"),
        active_task(model, "c"),
    ):
        pass  # pragma: no cover
    assert _active_tasks(model) == [None, None, None]
    with pytest.raises(ValueError, match=r"`task`='d'.*\('a', 'b', 'c'\)"), active_task(model, "d"):
        pass  # pragma: no cover


def test_model_without_task_norms_is_a_no_op() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with active_task(model, "anything"):
        output = model(x)
    assert output.shape == (3, 4)
