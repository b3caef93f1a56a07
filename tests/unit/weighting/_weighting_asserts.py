"""Shared checks for loss weightings: state round trip, partial supervision, end to end."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

import taskprio
from taskprio.weighting import Weighting
from taskprio.weighting._per_task import LearnableWeighting, PerTaskWeighting

TASKS = ("a", "b", "c")


class Feed:
    """A seeded stream of step inputs: positive losses, gradient norms, losses after the step."""

    def __init__(self, seed: int, dtype: torch.dtype = torch.float64) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.dtype = dtype

    def losses(self, num_tasks: int) -> Tensor:
        return torch.rand(num_tasks, generator=self.generator, dtype=self.dtype) * 2 + 0.1

    def step(self, num_tasks: int) -> dict[str, Tensor]:
        losses = self.losses(num_tasks)
        shrink = torch.rand(num_tasks, generator=self.generator, dtype=self.dtype) * 0.5 + 0.5
        return {
            "losses": losses,
            "grad_norms": self.losses(num_tasks),
            "losses_after": losses * shrink,
        }


def drive(
    weighting: Weighting,
    feed: Feed,
    steps: int,
    tasks: Sequence[str] = TASKS,
    *,
    start_step: int = 0,
    steps_per_epoch: int = 2,
) -> list[Tensor]:
    """Call forward then update ``steps`` times, as the step does; return the weights."""
    all_weights = []
    for i in range(start_step, start_step + steps):
        inputs = feed.step(len(tasks))
        epoch = i // steps_per_epoch
        weights = weighting(inputs["losses"], tasks, epoch=epoch)
        assert weights.shape == (len(tasks),)
        assert torch.isfinite(weights).all()
        all_weights.append(weights)
        weighting.update(
            inputs["losses"],
            tasks,
            epoch=epoch,
            grad_norms=inputs["grad_norms"] if weighting.needs_grad_norms else None,
            losses_after=inputs["losses_after"] if weighting.needs_losses_after_step else None,
        )
    return all_weights


def saved_and_loaded(weighting: Weighting) -> dict[str, object]:
    """The weighting's state dict after a trip through a file, as a checkpoint would take."""
    buffer = io.BytesIO()
    torch.save(weighting.state_dict(), buffer)
    buffer.seek(0)
    state: dict[str, object] = torch.load(buffer, weights_only=True)
    return state


def assert_state_round_trip(make: Callable[[], Weighting], *, steps_per_epoch: int = 2) -> None:
    """Mid-training state, loaded into a fresh weighting, gives the same next weights."""
    original = make()
    drive(original, Feed(0), 5, steps_per_epoch=steps_per_epoch)
    restored = make()
    restored.load_state_dict(saved_and_loaded(original))
    expected = drive(original, Feed(1), 6, start_step=5, steps_per_epoch=steps_per_epoch)
    got = drive(restored, Feed(1), 6, start_step=5, steps_per_epoch=steps_per_epoch)
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g), (e, g)
    if isinstance(original, LearnableWeighting):
        assert isinstance(restored, LearnableWeighting)
        assert original.task_values() == restored.task_values()


def task_state(weighting: PerTaskWeighting, task: str) -> dict[str, Tensor]:
    """Every tensor that belongs to one task: its buffer rows, its scalar, its optimizer state."""
    row = weighting.tasks.index(task)
    state = {name: getattr(weighting, name)[row].clone() for name in weighting.task_buffers}
    if isinstance(weighting, LearnableWeighting):
        parameter = weighting.task_parameters[row]
        state["parameter"] = parameter.detach().clone()
        assert weighting._optimizer is not None
        for key, value in weighting._optimizer.state[parameter].items():
            state[f"optimizer.{key}"] = value.clone()
    return state


def assert_absent_task_untouched(make: Callable[[], PerTaskWeighting]) -> PerTaskWeighting:
    """Steps without task c leave c's state exactly as it was, and stay finite."""
    weighting = make()
    drive(weighting, Feed(0), 4)
    before = task_state(weighting, "c")
    others = {task: task_state(weighting, task) for task in ("a", "b")}
    drive(weighting, Feed(1), 5, tasks=("b", "a"), start_step=4)
    after = task_state(weighting, "c")
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    if isinstance(weighting, LearnableWeighting):
        for task in ("a", "b"):
            assert not torch.equal(
                others[task]["parameter"], task_state(weighting, task)["parameter"]
            )
    # c comes back with its old state; every weight is finite.
    drive(weighting, Feed(2), 2, start_step=9)
    return weighting


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.trunk = nn.Linear(3, 4).double()
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1).double() for t in ("a", "b")})
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def loss(self, task: str, x: Tensor, y: Tensor) -> Tensor:
        features = torch.tanh(self.trunk(x))
        column = 0 if task == "a" else 1
        return ((self.heads[task](features).squeeze(1) - y[:, column]) ** 2).mean()


def tiny_problem() -> tuple[_Net, Tensor, Tensor]:
    """A two-task regression with a shared trunk, in float64."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(16, 2, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 5.0])
    return _Net(), x, y.double()


def run_steps(weighting: Weighting, form: str, steps: int = 4) -> list[taskprio.StepRecord]:
    """Train the tiny problem through MultiTaskStep in the mapping or closure form."""
    model, x, y = tiny_problem()
    step = taskprio.MultiTaskStep(
        model, torch.optim.SGD(model.parameters(), lr=0.05), ["a", "b"], weighting=weighting
    )
    records = []
    for i in range(steps):
        epoch = i // 2
        if form == "mapping":
            record = step({t: model.loss(t, x, y) for t in ("a", "b")}, epoch=epoch)
        else:
            record = step(lambda t: model.loss(t, x, y), epoch=epoch)
        records.append(record)
        for value in [*record.weights.values(), *record.losses.values()]:
            assert torch.isfinite(torch.tensor(value))
    for parameter in model.parameters():
        assert torch.isfinite(parameter).all()
    return records
