import copy
import logging
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from taskprio.nn import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskGroupNorm,
    TaskLayerNorm,
    TaskNorm,
    active_task,
    make_task_specific,
    task_norms,
)

TASKS = ("a", "b")
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def _cnn(**options: object) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8, **options),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3),
        nn.BatchNorm2d(4, **options),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _mlp(**options: object) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, **options), nn.ReLU(), nn.Linear(8, 2))


def _layer_norm_block() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 6))


def _group_norm_block(affine: bool = True) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8, affine=affine), nn.ReLU())


IMAGE = (4, 3, 7, 7)
VECTOR = (5, 6)
MODELS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], torch.dtype]] = [
    ("cnn", _cnn, IMAGE, torch.float32),
    ("cnn_no_running_stats", lambda: _cnn(track_running_stats=False), IMAGE, torch.float32),
    ("cnn_momentum_none", lambda: _cnn(momentum=None), IMAGE, torch.float32),
    ("mlp", _mlp, VECTOR, torch.float32),
    ("mlp_not_affine", lambda: _mlp(affine=False), VECTOR, torch.float32),
    ("mlp_float64", lambda: _mlp().double(), VECTOR, torch.float64),
    ("layer_norm", _layer_norm_block, VECTOR, torch.float32),
    ("layer_norm_float64", lambda: _layer_norm_block().double(), VECTOR, torch.float64),
    ("group_norm", _group_norm_block, IMAGE, torch.float32),
    ("group_norm_not_affine", lambda: _group_norm_block(affine=False), IMAGE, torch.float32),
]


def _randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give norm parameters and running statistics values a wrong copy would not reproduce."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORM_TYPES):
                for tensor in [*module.parameters(), *module.buffers()]:
                    if tensor.is_floating_point():
                        noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                        tensor.copy_(noise + 0.5)


def _norm_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def _assert_equal_states(actual: nn.Module, expected: nn.Module) -> None:
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        assert torch.equal(actual_state[key], value), key


@pytest.mark.parametrize(("name", "build", "shape", "dtype"), MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("is_training", [True, False])
@pytest.mark.parametrize("task", TASKS)
def test_converted_model_computes_what_the_original_did(
    name: str,
    build: Callable[[], nn.Module],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    is_training: bool,
    task: str,
) -> None:
    generator = torch.Generator().manual_seed(0)
    original = build()
    _randomize_norms(original, generator)
    converted = make_task_specific(copy.deepcopy(original), TASKS)
    norm_names = _norm_names(original)
    assert norm_names
    assert len(task_norms(converted)) == len(norm_names)
    assert _norm_names(converted) == [f"{n}.norms.{t}" for n in norm_names for t in TASKS]
    original.train(is_training)
    converted.train(is_training)
    before = copy.deepcopy(converted)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    with active_task(converted, task):
        output = converted(x)
    assert output.dtype == dtype
    assert torch.equal(output, original(x))
    other = "b" if task == "a" else "a"
    for norm_name in norm_names:
        expected = original.get_submodule(norm_name)
        _assert_equal_states(converted.get_submodule(f"{norm_name}.norms.{task}"), expected)
        untouched = before.get_submodule(f"{norm_name}.norms.{other}")
        _assert_equal_states(converted.get_submodule(f"{norm_name}.norms.{other}"), untouched)


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))])
        self.heads = nn.ModuleDict({"x": nn.BatchNorm1d(4)})
        self.norm = nn.GroupNorm(2, 4)
        self.other = nn.InstanceNorm1d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.heads["x"](self.blocks[0](self.stem(x))))


def test_norms_in_every_container_are_converted_exact_types_only() -> None:
    model = _Nested()
    assert make_task_specific(model, TASKS) is model
    assert isinstance(model.stem[1], TaskBatchNorm1d)
    assert isinstance(model.blocks[0][1], TaskLayerNorm)
    assert isinstance(model.heads["x"], TaskBatchNorm1d)
    assert isinstance(model.norm, TaskGroupNorm)
    assert type(model.other) is nn.InstanceNorm1d
    assert [name for name, _ in task_norms(model)] == ["stem.1", "blocks.0.1", "heads.x", "norm"]


def test_batch_norm_subclass_is_left_alone() -> None:
    class MyBatchNorm(nn.BatchNorm2d):
        pass

    model = nn.Sequential(MyBatchNorm(3), nn.BatchNorm2d(3))
    make_task_specific(model, TASKS)
    assert type(model[0]) is MyBatchNorm
    assert isinstance(model[1], TaskBatchNorm2d)


@pytest.mark.parametrize("under_is_name", [True, False])
def test_under_converts_only_that_subtree(under_is_name: bool) -> None:
    model = _Nested()
    under = "blocks" if under_is_name else model.blocks
    make_task_specific(model, TASKS, under=under)
    assert [name for name, _ in task_norms(model)] == ["blocks.0.1"]
    assert type(model.stem[1]) is nn.BatchNorm1d
    assert type(model.norm) is nn.GroupNorm


def test_under_may_be_the_norm_itself() -> None:
    model = _Nested()
    make_task_specific(model, TASKS, under="heads.x")
    assert [name for name, _ in task_norms(model)] == ["heads.x"]


def test_unknown_under_raises() -> None:
    model = _Nested()
    with pytest.raises(ValueError, match=r"`under`='blocks\.0\.2' names no .*'blocks\.0\.1'"):
        make_task_specific(model, TASKS, under="blocks.0.2")
    with pytest.raises(ValueError, match=r"`under` .BatchNorm1d. is not a submodule of `model`"):
        make_task_specific(model, TASKS, under=nn.BatchNorm1d(4))
    assert not task_norms(model)


@pytest.mark.parametrize("tasks", [(), "a", ("a", "a"), ("a.b",), ("",)])
def test_invalid_tasks_raise(tasks: tuple[str, ...]) -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="`tasks`"):
        make_task_specific(model, tasks)
    assert not task_norms(model)


def test_sync_batch_norm_raises_and_leaves_model_unchanged() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Sequential(nn.SyncBatchNorm(3)))
    with pytest.raises(ValueError, match=r"1\.0 is a SyncBatchNorm.*BatchNorm first"):
        make_task_specific(model, TASKS)
    assert type(model[0]) is nn.BatchNorm2d


def test_uninitialized_lazy_batch_norm_raises_until_one_forward() -> None:
    model = nn.Sequential(nn.LazyBatchNorm2d())
    with pytest.raises(ValueError, match=r"LazyBatchNorm2d that is still uninitialized.*forward"):
        make_task_specific(model, TASKS)
    model(torch.zeros(2, 3, 4, 4))
    make_task_specific(model, TASKS)
    assert isinstance(model[0], TaskBatchNorm2d)


def test_model_without_norm_raises() -> None:
    with pytest.raises(ValueError, match="found no BatchNorm/LayerNorm/GroupNorm under `model`"):
        make_task_specific(nn.Sequential(nn.Linear(2, 2), nn.InstanceNorm1d(2)), TASKS)
    with pytest.raises(ValueError, match=r"under `model\.stem\.0`"):
        make_task_specific(_Nested(), TASKS, under="stem.0")


def test_shared_norm_object_stays_shared() -> None:
    norm = nn.BatchNorm1d(4)
    inner = nn.Sequential(nn.Linear(4, 4), norm)
    model = nn.Sequential(inner, norm, nn.ModuleList([norm, inner]))
    make_task_specific(model, TASKS)
    task_norm = model[1]
    assert isinstance(task_norm, TaskBatchNorm1d)
    assert model[0][1] is task_norm
    assert model[2][0] is task_norm
    assert model[2][1] is model[0]
    assert len(task_norms(model)) == 1
    assert len(list(model.parameters())) == 2 + 2 * len(TASKS)


def test_top_level_norm_returns_the_replacement() -> None:
    norm = nn.LayerNorm(3)
    converted = make_task_specific(norm, TASKS)
    assert isinstance(converted, TaskLayerNorm)
    assert type(converted.norms["a"]) is nn.LayerNorm
    assert converted.norms["a"] is not norm


def test_converting_again_keeps_task_norms_with_same_tasks_only() -> None:
    model = make_task_specific(_mlp(), TASKS)
    task_norm = model[1]
    model.append(nn.BatchNorm1d(2))
    make_task_specific(model, list(TASKS))
    assert model[1] is task_norm
    assert isinstance(model[4], TaskBatchNorm1d)
    model.append(nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match=r"1 is already a TaskBatchNorm1d for tasks \('a', 'b'\)"):
        make_task_specific(model, ("a", "c"))
    assert type(model[5]) is nn.BatchNorm1d


def test_already_task_specific_model_is_not_an_error() -> None:
    model = nn.Sequential(TaskBatchNorm1d(3, TASKS))
    assert make_task_specific(model, TASKS) is model
    assert isinstance(make_task_specific(model[0], TASKS), TaskNorm)


def test_logs_how_many_were_converted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="taskprio.nn._convert"):
        make_task_specific(_cnn(), TASKS)
    assert "Converted 2 norms under `model`" in caplog.text
