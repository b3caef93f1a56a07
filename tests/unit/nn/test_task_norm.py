import copy

import pytest
import torch
from torch import nn

from taskprio.nn import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskBatchNorm3d,
    TaskGroupNorm,
    TaskLayerNorm,
    TaskNorm,
    active_task,
)

TASKS = ("a", "b")


def _assert_same_module(copied: nn.Module, original: nn.Module) -> None:
    assert type(copied) is type(original)
    assert copied is not original
    assert copied.training == original.training
    assert copied.extra_repr() == original.extra_repr()
    original_state = original.state_dict()
    copied_state = copied.state_dict()
    assert copied_state.keys() == original_state.keys()
    for key, value in original_state.items():
        assert copied_state[key].dtype == value.dtype
        assert torch.equal(copied_state[key], value)
        assert copied_state[key].data_ptr() != value.data_ptr()


@pytest.mark.parametrize(
    ("task_norm", "expected_type"),
    [
        (TaskBatchNorm1d(4, TASKS), nn.BatchNorm1d),
        (TaskBatchNorm2d(4, TASKS, momentum=None), nn.BatchNorm2d),
        (TaskBatchNorm3d(4, TASKS, affine=False), nn.BatchNorm3d),
        (TaskLayerNorm([3, 4], TASKS, bias=False), nn.LayerNorm),
        (TaskGroupNorm(2, 4, TASKS, eps=1e-3), nn.GroupNorm),
    ],
)
def test_constructor_builds_one_torch_norm_per_task(
    task_norm: TaskNorm, expected_type: type[nn.Module]
) -> None:
    assert task_norm.tasks == TASKS
    assert task_norm.active_task is None
    assert type(task_norm).shared_module_type is expected_type
    assert all(type(norm) is expected_type for norm in task_norm.norms.values())
    assert task_norm.norms["a"] is not task_norm.norms["b"]
    assert repr(task_norm).startswith(f"{type(task_norm).__name__}(")
    assert repr(task_norm).endswith("tasks=('a', 'b'))")
    assert repr(task_norm.norms["a"])[len(expected_type.__name__) : -1] in repr(task_norm)


def test_constructor_options_reach_each_task() -> None:
    task_norm = TaskBatchNorm2d(
        5, ("x",), eps=1e-3, momentum=0.5, track_running_stats=False, dtype=torch.float64
    )
    norm = task_norm.norms["x"]
    assert (norm.eps, norm.momentum, norm.track_running_stats) == (1e-3, 0.5, False)
    assert norm.weight.dtype == torch.float64
    assert norm.running_mean is None


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm1d(3, momentum=0.3),
        nn.BatchNorm2d(3, eps=1e-3).double(),
        nn.BatchNorm3d(3, affine=False),
        nn.BatchNorm2d(3, track_running_stats=False),
        nn.LayerNorm([2, 3], elementwise_affine=False),
        nn.GroupNorm(1, 3).eval(),
    ],
)
def test_from_module_copies_exactly(norm: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*norm.parameters(), *norm.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype))
            else:
                tensor.fill_(7)
    task_norm_type = {
        nn.BatchNorm1d: TaskBatchNorm1d,
        nn.BatchNorm2d: TaskBatchNorm2d,
        nn.BatchNorm3d: TaskBatchNorm3d,
        nn.LayerNorm: TaskLayerNorm,
        nn.GroupNorm: TaskGroupNorm,
    }[type(norm)]
    task_norm = task_norm_type.from_module(norm, TASKS)
    assert type(task_norm) is task_norm_type
    assert task_norm.training == norm.training
    for task in TASKS:
        _assert_same_module(task_norm.norms[task], norm)


def test_base_from_module_wraps_any_module_and_subclass_checks_type() -> None:
    task_norm = TaskNorm.from_module(nn.InstanceNorm2d(3), TASKS)
    assert type(task_norm) is TaskNorm
    assert all(type(norm) is nn.InstanceNorm2d for norm in task_norm.norms.values())
    with pytest.raises(TypeError, match=r"`norm` must be exactly a BatchNorm2d.*SyncBatchNorm"):
        TaskBatchNorm2d.from_module(nn.SyncBatchNorm(3), TASKS)
    with pytest.raises(TypeError, match="BatchNorm1d"):
        TaskBatchNorm1d.from_module(nn.BatchNorm2d(3), TASKS)


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ((), "at least one task"),
        ("ab", "not a string"),
        (("a", "a"), "each task once"),
        (("",), "non-empty"),
        (("a.b",), "without '.'"),
        ((1,), "non-empty strings"),
        (("train",), "nn.ModuleDict attribute"),
    ],
)
def test_invalid_tasks_raise(tasks: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        TaskBatchNorm2d(3, tasks)
    assert "`tasks`" in str(error.value)
    with pytest.raises(ValueError, match=match):
        TaskLayerNorm.from_module(nn.LayerNorm(3), tasks)


def test_forward_without_active_task_raises() -> None:
    task_norm = TaskBatchNorm2d(64, ("left", "right"))
    with pytest.raises(RuntimeError, match="active_task") as error:
        task_norm(torch.zeros(2, 64, 1, 1))
    message = str(error.value)
    assert message.startswith("TaskBatchNorm2d(64, ")
    assert "has no active task" in message
    assert "active_task(model, 'left')" in message
    assert "'left', 'right'" in message
    task_norm.active_task = "middle"
    with pytest.raises(RuntimeError, match="has no task 'middle'"):
        task_norm(torch.zeros(2, 64, 1, 1))


def test_forward_is_the_active_tasks_module() -> None:
    generator = torch.Generator().manual_seed(0)
    task_norm = TaskLayerNorm(4, TASKS)
    with torch.no_grad():
        task_norm.norms["b"].weight.copy_(torch.randn(4, generator=generator))
    x = torch.randn(3, 4, generator=generator)
    for task in TASKS:
        with active_task(task_norm, task):
            assert torch.equal(task_norm(x), task_norm.norms[task](x))
    with active_task(task_norm, "a"):
        assert not torch.equal(task_norm(x), task_norm.norms["b"](x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_follow_each_tasks_inputs_only(
    dtype: torch.dtype, momentum: float | None
) -> None:
    generator = torch.Generator().manual_seed(0)
    task_norm = TaskBatchNorm2d(3, TASKS, momentum=momentum, dtype=dtype)
    reference = {task: nn.BatchNorm2d(3, momentum=momentum, dtype=dtype) for task in TASKS}
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5, generator=generator, dtype=dtype)
        inputs = {"a": x, "b": 3 * x + 1}
        for task in TASKS:
            other = "b" if task == "a" else "a"
            other_state = copy.deepcopy(task_norm.norms[other].state_dict())
            with active_task(task_norm, task):
                output = task_norm(inputs[task])
            assert torch.equal(output, reference[task](inputs[task]))
            for key, value in task_norm.norms[other].state_dict().items():
                assert torch.equal(value, other_state[key])
    for task in TASKS:
        for key, value in reference[task].state_dict().items():
            assert torch.equal(task_norm.norms[task].state_dict()[key], value)
    running_mean_a = task_norm.norms["a"].running_mean
    running_mean_b = task_norm.norms["b"].running_mean
    running_var_a = task_norm.norms["a"].running_var
    running_var_b = task_norm.norms["b"].running_var
    assert running_mean_a is not None and running_mean_b is not None
    assert running_var_a is not None and running_var_b is not None
    assert not torch.allclose(running_mean_a, running_mean_b)
    assert not torch.allclose(running_var_a, running_var_b)


@pytest.mark.parametrize(
    "task_norm",
    [TaskBatchNorm1d(3, TASKS), TaskLayerNorm(3, TASKS), TaskGroupNorm(1, 3, TASKS)],
)
def test_backward_reaches_only_active_tasks_parameters(task_norm: TaskNorm) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=generator)
    with active_task(task_norm, "a"):
        (task_norm(x) * torch.randn(5, 3, generator=generator)).sum().backward()
    for parameter in task_norm.norms["a"].parameters():
        assert parameter.grad is not None
        assert parameter.grad.abs().sum() > 0
    for parameter in task_norm.norms["b"].parameters():
        assert parameter.grad is None


def test_state_dict_round_trips_and_to_moves_every_task() -> None:
    generator = torch.Generator().manual_seed(0)
    task_norm = TaskBatchNorm1d(3, TASKS)
    with active_task(task_norm, "b"):
        task_norm(torch.randn(4, 3, generator=generator))
    assert "norms.b.running_mean" in task_norm.state_dict()
    loaded = TaskBatchNorm1d(3, TASKS)
    loaded.load_state_dict(task_norm.state_dict())
    for key, value in task_norm.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    loaded.double()
    assert all(norm.weight.dtype == torch.float64 for norm in loaded.norms.values())
