"""Connection strength-based optimization (CSO), Jeong & Yoon, CVPR 2024, arXiv 2406.02996."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from taskprio.engine import PerTaskGrads
from taskprio.methods._base import METHODS, Method, check_choice
from taskprio.nn import TaskNorm
from taskprio.priority import (
    Connection,
    ConnectionTracer,
    PriorityMap,
    channel_rows,
    owner_shares,
    rows_to_weight,
)

if TYPE_CHECKING:
    from taskprio.optim import MultiTaskStep, StepRecord, TaskLossClosure

Schedule = Literal["mixed", "phase1", "phase2", "sequential"]
Draw = Literal["iteration", "epoch"]
Degenerate = Literal["sum", "project"]
TaskOrder = Literal["fixed", "shuffled"]


def project_on_owners(
    rows: Tensor, owner: Tensor, *, degenerate: Degenerate = "sum"
) -> tuple[Tensor, Tensor]:
    """Project, per group of channels, each conflicting task gradient off the owner's (Alg. 1).

    For every task i that owns a nonempty group G_i = {p : owner[p] = i}, a = the owner's rows
    of G_i flattened into one vector; for every other task j with b = its rows of G_i and
    a·b < 0 (strict), b ← b − (a·b / a·a) a. Owner rows never change and non-owners are not
    projected against each other, so the result does not depend on task order.

    Args:
        rows: [K, N, m] per-task gradients, one row of m entries per output channel.
        owner: [N] the owning task index of each channel.
        degenerate: when one task owns every channel, ``"sum"`` leaves the rows unchanged
            (ownership there is a tie, not a priority); ``"project"`` projects against the sole
            owner over the whole layer, as the paper's algorithm reads literally.

    Returns:
        ``(projected [K, N, m], projections [])``: the rows and how many (group, task) pairs
        were projected.

    >>> rows = torch.tensor([[[1.0, 0.0]], [[-1.0, 1.0]]])  # K=2, N=1, m=2
    >>> project_on_owners(rows, torch.tensor([0]), degenerate="project")[0]
    tensor([[[1., 0.]],
    <BLANKLINE>
            [[0., 1.]]])
    """
    num_tasks = rows.shape[0]
    projections = torch.zeros((), dtype=torch.int64, device=rows.device)
    if degenerate == "sum" and bool((owner == owner[0]).all()):
        return rows, projections
    result = rows.clone()
    for i in range(num_tasks):
        group = owner == i  # [N]
        if not bool(group.any()):
            continue
        grouped = rows[:, group].reshape(num_tasks, -1)  # [K, |G_i|·m]
        reference = grouped[i]
        dots = grouped @ reference  # [K]
        is_conflict = dots < 0
        is_conflict[i] = False
        # a·b < 0 implies a·a > 0, so the guarded denominator only avoids 0/0 elsewhere.
        scale = torch.where(is_conflict, dots / reference.dot(reference).clamp_min(1e-300), 0)
        projected = grouped - scale[:, None] * reference[None, :]
        result[:, group] = projected.reshape(num_tasks, -1, rows.shape[2])
        projections = projections + is_conflict.sum()
    return result, projections


@METHODS.register("cso")
class CSO(Method):
    """Connection strength-based optimization: learn task priority, then conserve it.

    Each step is Phase 1 or Phase 2. **Phase 1** (learning priority) runs K sequential
    single-task optimizer steps on the batch, one per task, each at the parameters the previous
    one left. **Phase 2** (conserving priority) forms the K task gradients; on every
    *connection* (a shared Conv/ConvTranspose/Linear whose output feeds one norm per task,
    found by forward hooks during the first step) it assigns each output channel to the task
    with the largest normalized connection strength γ²/(v+ε)·ΣW[p]², and in each group of
    channels projects the conflicting gradients of the other tasks off the owner's; every other
    parameter gets the plain sum. One optimizer step follows. The mixed schedule runs Phase 1
    with probability 1 − e/E at epoch e of E. Specification: ``spec/cso.md`` of the project.

    Args:
        epochs: E, the total number of epochs (sets the mixing schedule).
        schedule: ``"mixed"`` (default; Phase 1 iff P ≥ e/E, P ~ U(0, 1)), ``"phase1"``,
            ``"phase2"``, or ``"sequential"`` (Phase 1 for the first half of the epochs).
        draw: ``"iteration"`` (default, one draw per step, as the authors' code) or ``"epoch"``
            (one draw per epoch, as the paper's text reads).
        degenerate: policy for a connection whose channels all belong to one task: ``"sum"``
            (default, the authors' code: no projection) or ``"project"`` (the paper literally).
        task_order: Phase-1 order, ``"fixed"`` (the step's task order) or ``"shuffled"`` per step.
        phase2: another method to combine the shared gradients in Phase 2 instead of the
            per-channel-group projection (e.g. PCGrad, for "Phase 1 + PCGrad").
        connections: explicit ``(shared layer, task norm)`` pairs instead of discovery.
        seed: seeds the method's own generator (phase draws, shuffled orders); it is saved in
            ``state_dict()`` so a resumed run draws the same phases.

    Use it through :class:`taskprio.MultiTaskStep` with the closure form. Loss weights scale
    each task's loss; in Phase 1 a weighting sees one task's loss at a time.

    >>> from taskprio.nn import active_task, make_task_specific
    >>> import taskprio
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    >>> model = make_task_specific(net, ["a", "b"])
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> step = taskprio.MultiTaskStep(model, optimizer, ["a", "b"],
    ...                               method=CSO(epochs=10, schedule="phase2"))
    >>> x = torch.randn(8, 1, 6, 6)
    >>> def task_loss(task):
    ...     with active_task(model, task):
    ...         out = model(x)
    ...     return out.mean() if task == "a" else -out.square().mean()
    >>> step(task_loss, epoch=0).phase
    'phase2'
    >>> [layer.name for layer in step.method.priority_map().layers]
    ['0']
    """

    name: ClassVar[str] = "cso"
    summary: ClassVar[str] = (
        "Connection strength-based optimization: learn per-channel task priority, then project "
        "conflicting gradients off each channel group's owner (Jeong & Yoon, CVPR 2024)."
    )
    steps_optimizer: ClassVar[bool] = True

    def __init__(
        self,
        epochs: int,
        *,
        schedule: Schedule = "mixed",
        draw: Draw = "iteration",
        degenerate: Degenerate = "sum",
        task_order: TaskOrder = "fixed",
        phase2: Method | str | None = None,
        connections: Sequence[tuple[nn.Module, TaskNorm]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be a positive integer; got {epochs!r}.")
        check_choice("schedule", schedule, ("mixed", "phase1", "phase2", "sequential"))
        check_choice("draw", draw, ("iteration", "epoch"))
        check_choice("degenerate", degenerate, ("sum", "project"))
        check_choice("task_order", task_order, ("fixed", "shuffled"))
        self.epochs = epochs
        self.schedule: Schedule = schedule
        self.draw: Draw = draw
        self.degenerate: Degenerate = degenerate
        self.task_order: TaskOrder = task_order
        if isinstance(phase2, str):
            phase2 = METHODS.create(phase2)
        if phase2 is not None and phase2.steps_optimizer:
            raise ValueError(f"`phase2` must combine gradients; {phase2} runs steps itself.")
        self.phase2 = phase2
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._explicit_pairs = None if connections is None else list(connections)
        self._connections: list[Connection] | None = None
        self._tasks: tuple[str, ...] = ()
        self._epoch_draw: tuple[int, float] | None = None
        self._tracer_in_step: ConnectionTracer | None = None

    # -- schedule -------------------------------------------------------------------------

    def choose_phase(self, epoch: int | None) -> int:
        """1 or 2: the phase of the next step, drawing from the method's generator if mixed."""
        if self.schedule == "phase1":
            return 1
        if self.schedule == "phase2":
            return 2
        if epoch is None or epoch < 0:
            raise ValueError(
                f"CSO's schedule {self.schedule!r} depends on the epoch: call the step as "
                f"`step(task_loss, epoch=e)` with the 0-based epoch; got epoch={epoch!r}."
            )
        if self.schedule == "sequential":
            return 1 if epoch < self.epochs / 2 else 2
        if self.draw == "epoch":
            if self._epoch_draw is None or self._epoch_draw[0] != epoch:
                self._epoch_draw = (epoch, self._uniform())
            draw = self._epoch_draw[1]
        else:
            draw = self._uniform()
        return 1 if draw >= epoch / self.epochs else 2

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    # -- the step -------------------------------------------------------------------------

    def run_step(
        self, step: MultiTaskStep, closure: TaskLossClosure, *, epoch: int | None
    ) -> StepRecord:
        """Run Phase 1 or Phase 2 on one batch (see the class docstring)."""
        phase = self.choose_phase(epoch)
        tracer = self._tracer(step)
        if tracer is not None:
            traced = closure

            def closure(task: str) -> Tensor | None:
                with tracer.running(task):
                    return traced(task)

            self._tracer_in_step = tracer
            try:
                with tracer.trace():
                    record = self._run_phase(phase, step, closure, epoch)
                if self._connections is None:
                    self._connections = tracer.connections()
            finally:
                self._tracer_in_step = None
            return record
        return self._run_phase(phase, step, closure, epoch)

    def _run_phase(
        self, phase: int, step: MultiTaskStep, closure: TaskLossClosure, epoch: int | None
    ) -> StepRecord:
        if phase == 1:
            return self._phase1(step, closure, epoch)
        return self._phase2(step, closure, epoch)

    def _tracer(self, step: MultiTaskStep) -> ConnectionTracer | None:
        """A tracer for the first step; explicit pairs are named without one."""
        if self._connections is not None and self._tasks == step.tasks:
            return None
        self._tasks = step.tasks
        if self._explicit_pairs is None:
            return ConnectionTracer(step.model, step.tasks)
        names = {id(module): name for name, module in step.model.named_modules()}
        self._connections = [
            Connection(name=names.get(id(layer), type(layer).__name__), layer=layer, norm=norm)
            for layer, norm in self._explicit_pairs
        ]
        return None

    def _phase1(
        self, step: MultiTaskStep, closure: TaskLossClosure, epoch: int | None
    ) -> StepRecord:
        order = list(step.tasks)
        if self.task_order == "shuffled":
            order = [order[k] for k in torch.randperm(len(order), generator=self.generator)]
        present, losses, weights = [], [], []
        for task in order:
            step.optimizer.zero_grad(set_to_none=True)
            loss = closure(task)
            if step.gradient_sync is not None:
                # The task's weighted gradient on the global batch, reduced before its step.
                synced = step.gradient_sync.task_gradient(step, task, loss, epoch=epoch)
                if synced is None:
                    continue
                loss, weight = synced[0], synced[1].reshape(1)
            else:
                if loss is None:
                    continue
                step.check_finite_loss(task, loss)
                weight = step.weighting(loss.detach().reshape(1), (task,), epoch=epoch)
                torch.autograd.backward(weight[0].to(loss.dtype) * loss.reshape(()))
            step.optimizer.step()
            present.append(task)
            losses.append(loss.detach().reshape(()))
            weights.append(weight[0])
        if not present:
            raise ValueError("No task has a loss in this step: the closure returned None for all.")
        step.optimizer.zero_grad(set_to_none=True)
        return step.make_record(present, torch.stack(losses), torch.stack(weights), phase="phase1")

    def _phase2(
        self, step: MultiTaskStep, closure: TaskLossClosure, epoch: int | None
    ) -> StepRecord:
        step.optimizer.zero_grad(set_to_none=True)
        grads = step.task_gradients(closure)
        weights = step.weighting(grads.losses, grads.tasks, epoch=epoch)
        if self.phase2 is not None:
            diagnostics = step.combine_and_write(grads, weights, self.phase2)
        else:
            diagnostics = self._project_and_write(step, grads.tasks, grads, weights)
        step.optimizer.step()
        step.after_step(grads.tasks, grads.losses, epoch=epoch, grads=grads, closure=closure)
        return step.make_record(
            grads.tasks, grads.losses, weights, phase="phase2", diagnostics=diagnostics
        )

    def _project_and_write(
        self, step: MultiTaskStep, tasks: Sequence[str], grads: PerTaskGrads, weights: Tensor
    ) -> dict[str, Any]:
        # Connections are found during the forwards of this very step, so they are read here.
        connections = {id(c.layer.weight): c for c in self._current_connections()}
        all_tasks = len(tasks) == len(step.tasks)
        projections = torch.zeros((), dtype=torch.int64)
        shares: dict[str, dict[str, float]] = {}
        cosines: dict[str, dict[str, float]] = {}
        num_degenerate = 0
        for i, param in enumerate(step.params):
            stacked = grads.grads[i]
            if stacked is None:
                continue
            touched = grads.touched[:, i]
            view = (-1,) + (1,) * param.ndim
            rows = stacked[touched] * weights[touched].to(stacked.dtype).view(view)
            connection = connections.get(id(param))
            if connection is not None and all_tasks and bool(touched.all()):
                owner = connection.owner(tasks)
                if bool((owner == owner[0]).all()):
                    num_degenerate += 1
                per_channel = channel_rows(rows, connection.layer)  # [K, N, m]
                cosines[connection.name] = _owner_cosines(per_channel, owner, tasks)
                projected, count = project_on_owners(
                    per_channel, owner.to(rows.device), degenerate=self.degenerate
                )
                projections = projections + count.cpu()
                rows = rows_to_weight(projected, connection.layer)
                shares[connection.name] = dict(
                    zip(tasks, owner_shares(owner, len(tasks)).tolist(), strict=True)
                )
            param.grad = rows.sum(dim=0)
        return {
            "projections": int(projections),
            "degenerate_layers": num_degenerate,
            "priority_shares": shares,
            "owner_cosines": cosines,
        }

    def _current_connections(self) -> list[Connection]:
        if self._connections is None and self._tracer_in_step is not None:
            # First step: the tracer has seen this step's forwards, which is all it needs.
            self._connections = self._tracer_in_step.connections()
        return [] if self._connections is None else self._connections

    # -- inspection and state -------------------------------------------------------------

    def priority_map(self) -> PriorityMap:
        """The current owner of every channel of every connection, and the shares per task."""
        if self._connections is None:
            raise RuntimeError(
                "CSO has not seen the model yet: run one step first (connections are found "
                "during its forwards), or pass `connections=` explicitly."
            )
        return PriorityMap.from_connections(self._connections, self._tasks)

    @property
    def connections(self) -> list[Connection]:
        """The connections found (empty before the first step)."""
        return [] if self._connections is None else list(self._connections)

    def get_extra_state(self) -> dict[str, Any]:
        """The generator state and the current epoch draw, so a resumed run draws alike."""
        epoch, draw = self._epoch_draw if self._epoch_draw is not None else (-1, math.nan)
        return {"generator": self.generator.get_state(), "epoch": epoch, "epoch_draw": draw}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self.generator.set_state(state["generator"])
        epoch = int(state["epoch"])
        self._epoch_draw = None if epoch < 0 else (epoch, float(state["epoch_draw"]))

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """CSO needs the model's structure; it runs whole steps through :meth:`run_step`."""
        raise TypeError(
            "CSO runs whole steps: use it as `MultiTaskStep(model, optimizer, tasks, "
            "method=CSO(...))` with a closure, not on a bare gradient matrix."
        )

    def extra_repr(self) -> str:
        """The options."""
        phase2 = "" if self.phase2 is None else f", phase2={self.phase2}"
        return (
            f"epochs={self.epochs}, schedule={self.schedule!r}, draw={self.draw!r}, "
            f"degenerate={self.degenerate!r}, task_order={self.task_order!r}{phase2}, "
            f"seed={self.seed}"
        )


def _owner_cosines(rows: Tensor, owner: Tensor, tasks: Sequence[str]) -> dict[str, float]:
    """Cosine of each non-owner's group gradient with the owner's, before projection.

    Keys are ``"owner>task"``; groups with a zero vector are left out.
    """
    cosines = {}
    for i, owner_task in enumerate(tasks):
        group = (owner == i).to(rows.device)
        if not bool(group.any()):
            continue
        grouped = rows[:, group].reshape(rows.shape[0], -1)
        norms = grouped.norm(dim=1)
        for j, task in enumerate(tasks):
            if j != i and norms[i] > 0 and norms[j] > 0:
                cosine = grouped[i].dot(grouped[j]) / (norms[i] * norms[j])
                cosines[f"{owner_task}>{task}"] = float(cosine)
    return cosines
