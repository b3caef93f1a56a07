"""GradientSync: every method sees the per-task gradients of the global batch."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from taskprio.distributed._env import collective_device
from taskprio.distributed._sync_norm import DistributedBatchNorm
from taskprio.engine import PerTaskGrads, per_task_grads
from taskprio.engine._per_task_grads import _check_loss
from taskprio.methods import WeightedMethod
from taskprio.methods._base import check_choice

if TYPE_CHECKING:
    from taskprio.optim import MultiTaskStep, StepRecord, TaskLossClosure

Bucket = Literal["all", "task"]
Buffers = Literal["average", "broadcast", "keep"]
SampleCounts = Mapping[str, int | Tensor]


@dataclass(frozen=True)
class _Layout:
    """Where each parameter's gradient sits in one row of the flat bucket.

    A row holds, for one task: the flattened gradients of all P parameters (n entries), one
    flag per parameter (1 where the task's loss reached it), the count-scaled loss and the
    sample count: n + P + 2 entries, all in one dtype so that one all-reduce carries them.
    """

    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    num_entries: int
    dtype: torch.dtype
    device: torch.device

    @property
    def width(self) -> int:
        return self.num_entries + len(self.sizes) + 2


class GradientSync:
    """Makes a :class:`taskprio.MultiTaskStep` act on the global batch of all ranks.

    Pass it as ``MultiTaskStep(..., gradient_sync=GradientSync())`` on every rank of a process
    group (:func:`init_from_env`). Each rank computes the per-task gradients of its own shard;
    they are averaged across the ranks (flat buckets, :attr:`bucket`) *before* any loss
    weighting or method, so every method sees the per-task gradients of the global batch, and
    each rank takes the step one process would take on the concatenated batch. The loss values
    that records, weightings and methods see are averaged alike. Without a process group (or
    with one rank) the step is that of a single process.

    Partial supervision. Task t's loss on rank r is taken as the mean over the n_r,t samples of
    the shard that carry its label; the global loss is the mean over the global batch,
    L_t = Σ_r n_r,t L_r,t / N_t with N_t = Σ_r n_r,t, and its gradient is Σ_r n_r,t ∇L_r,t / N_t.
    Each rank therefore scales its loss by its count before the backward, the bucket sums
    gradients, scaled losses and counts, and the sums are divided by N_t. A task without labels
    on a rank (no loss, count 0) adds nothing there; a task without labels on every rank is left
    out of the step on every rank. The counts are the step's ``sample_counts`` (e.g.
    :func:`label_counts` of the batch's masks); without them each rank with a loss counts 1,
    which is exact when every rank's losses average the same number of samples (equal shards,
    full supervision) and otherwise weighs the ranks, not the samples, equally.

    Identical decisions. All ranks reduce to bitwise identical gradients and losses, and the
    stochastic methods and weightings (PCGrad's orders, GradDrop's draws, wPCGrad's orders,
    RLW's weights, CSO's phase and task order) draw from their own generators: seeded alike
    (the default seeds are, or use :func:`broadcast_seed`), they take the same decision on
    every rank. With ``check_replicas`` the first step verifies that the parameters and those
    generators are the same on every rank and names the first that differs.

    CSO. Phase 1 all-reduces each task's gradients (and its loss and count) before each of its
    K optimizer steps (:meth:`task_gradient`); Phase 2 uses the synchronized per-task gradients
    (:meth:`task_gradients`). Another method that runs the optimizer itself
    (``steps_optimizer``) must use these two as CSO does. The running
    statistics its priority reads are made identical on every rank by :attr:`buffers`, or are
    global statistics with :func:`sync_batch_norms`.

    Args:
        bucket: ``"all"`` (default): one all-reduce carries every task's gradients; ``"task"``:
            one all-reduce per task, started as soon as that task's backward is done, so in the
            closure form it overlaps the next task's forward and backward.
        buffers: what happens, after each step's forwards, to the floating-point buffers of
            the model (batch norm running statistics) that are not already synchronized:
            ``"average"`` (default) averages them across ranks, ``"broadcast"`` copies rank 0's
            (DistributedDataParallel's ``broadcast_buffers``), ``"keep"`` leaves each rank its
            own (then CSO's priority may differ between ranks: use it only with
            :func:`sync_batch_norms` or norms without running statistics).
        group: the process group (None: the default group).
        check_replicas: on the first step, check that every rank holds the same parameters
            and the same method and weighting generator states; raise naming the first that
            differs.

    >>> import taskprio
    >>> model = nn.Linear(3, 2)
    >>> step = taskprio.MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1),
    ...                               ["a", "b"], method="pcgrad", gradient_sync=GradientSync())
    >>> out = model(torch.ones(4, 3))
    >>> record = step({"a": out[:, 0].mean(), "b": -out[:, 1].mean()},
    ...               sample_counts={"a": 4, "b": 4})
    >>> sorted(record.losses)
    ['a', 'b']
    """

    def __init__(
        self,
        *,
        bucket: Bucket = "all",
        buffers: Buffers = "average",
        group: dist.ProcessGroup | None = None,
        check_replicas: bool = True,
    ) -> None:
        check_choice("bucket", bucket, ("all", "task"))
        check_choice("buffers", buffers, ("average", "broadcast", "keep"))
        self.bucket: Bucket = bucket
        self.buffers: Buffers = buffers
        self.group = group
        self.check_replicas = check_replicas
        self._counts: SampleCounts | None = None
        self._is_verified = False

    def __repr__(self) -> str:
        return (
            f"GradientSync(bucket={self.bucket!r}, buffers={self.buffers!r}, "
            f"check_replicas={self.check_replicas})"
        )

    @property
    def world_size(self) -> int:
        """The number of ranks that share gradients (1 without a process group)."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(self.group)
        return 1

    # -- the step -------------------------------------------------------------------------

    def step(
        self,
        step: MultiTaskStep,
        losses_or_closure: Mapping[str, Tensor] | TaskLossClosure,
        *,
        epoch: int | None,
        features: Tensor | None = None,
        sample_counts: SampleCounts | None = None,
    ) -> StepRecord:
        """Run one synchronized step of ``step`` (what :class:`MultiTaskStep` calls).

        Args:
            step: the step object.
            losses_or_closure: ``{task: loss}`` or ``task -> loss | None`` on this rank's shard.
            epoch: the 0-based epoch.
            features: the shared representation (mapping form).
            sample_counts: task → this rank's number of labelled samples of that task.

        Returns:
            The record, with the global batch's losses, the same on every rank.
        """
        self._prepare(step, sample_counts)
        self._counts = sample_counts
        try:
            method = step.method
            if method.steps_optimizer:
                if isinstance(losses_or_closure, Mapping):
                    raise TypeError(
                        f"{method} runs one forward per task: call the step with a closure "
                        "`task -> loss` (see the class docstring), not a mapping of losses."
                    )
                return method.run_step(step, losses_or_closure, epoch=epoch)
            if method.uses_representation:
                if not isinstance(losses_or_closure, Mapping) or features is None:
                    raise TypeError(
                        f"{method} weights the tasks from the gradients of the shared "
                        "representation: call the step with the losses of one forward and the "
                        "representation, `step({task: loss}, features=z)`."
                    )
                return self._representation_step(step, losses_or_closure, features, epoch)
            if isinstance(losses_or_closure, Mapping):
                return self._mapping_step(step, losses_or_closure, features, epoch)
            return self._closure_step(step, losses_or_closure, epoch)
        finally:
            self._counts = None

    def _mapping_step(
        self,
        step: MultiTaskStep,
        losses: Mapping[str, Tensor],
        features: Tensor | None,
        epoch: int | None,
    ) -> StepRecord:
        layout = self._layout(step)
        scaled = self._scaled_losses(step, losses, layout)
        grads: PerTaskGrads | None = None
        diagnostics: dict[str, Any] = {}
        if step.method.is_linear and not step.weighting.needs_grad_norms:
            # One backward of Σ_t w_t (n_t / N_t) L_t, then one all-reduce of `.grad`: the
            # weights need the global losses first, so a small all-reduce goes ahead.
            present, loss_values, totals = self._global_losses(step, scaled, layout)
            weights = step.weighting(loss_values, present, epoch=epoch)
            step.optimizer.zero_grad(set_to_none=True)
            if scaled:
                total = sum(
                    (
                        (weights[present.index(t)] / totals[step.tasks.index(t)]) * loss
                        for t, loss in scaled.items()
                    ),
                    start=torch.zeros((), dtype=layout.dtype, device=layout.device),
                )
                torch.autograd.backward(total)
            self._reduce_grad_attributes(step, layout)
        else:
            step.optimizer.zero_grad(set_to_none=True)
            matrix = torch.zeros(
                len(step.tasks), layout.width, dtype=layout.dtype, device=layout.device
            )
            if scaled:
                local = per_task_grads(
                    scaled,
                    step.params,
                    tasks=tuple(scaled),
                    strategy=step.strategy,
                    features=features,
                )
                for j, task in enumerate(local.tasks):
                    k = step.tasks.index(task)
                    count = self._count(task, scaled[task], layout)
                    _fill_row(matrix[k], layout, local.task_grads(task), local.losses[j], count)
                del local
            grads = self._reduce_rows(step, matrix, layout, filled=False)
            present, loss_values = grads.tasks, grads.losses
            weights = step.weighting(loss_values, present, epoch=epoch)
            diagnostics = step.combine_and_write(grads, weights)
        step.optimizer.step()
        step.after_step(present, loss_values, epoch=epoch, grads=grads, closure=None)
        return step.make_record(present, loss_values, weights, diagnostics=diagnostics)

    def _closure_step(
        self, step: MultiTaskStep, closure: TaskLossClosure, epoch: int | None
    ) -> StepRecord:
        step.optimizer.zero_grad(set_to_none=True)
        grads = self.task_gradients(step, closure)
        weights = step.weighting(grads.losses, grads.tasks, epoch=epoch)
        diagnostics = step.combine_and_write(grads, weights)
        step.optimizer.step()
        step.after_step(grads.tasks, grads.losses, epoch=epoch, grads=grads, closure=closure)
        return step.make_record(grads.tasks, grads.losses, weights, diagnostics=diagnostics)

    def _representation_step(
        self,
        step: MultiTaskStep,
        losses: Mapping[str, Tensor],
        features: Tensor,
        epoch: int | None,
    ) -> StepRecord:
        from taskprio.optim import conflict_statistics

        layout = self._layout(step)
        scaled = self._scaled_losses(step, losses, layout)
        present, loss_values, totals = self._global_losses(step, scaled, layout)
        weights = step.weighting(loss_values, present, epoch=epoch)
        step.optimizer.zero_grad(set_to_none=True)
        scale = {t: weights[j] / totals[step.tasks.index(t)] for j, t in enumerate(present)}
        gramian = torch.zeros(len(present), len(present), dtype=layout.dtype, device=layout.device)
        if scaled:
            representation = per_task_grads(
                scaled, [features], tasks=tuple(scaled), retain_graph=True
            )
            stacked = representation.grads[0]
            if stacked is None:
                raise ValueError(
                    "No task loss depends on `features`; pass the shared representation."
                )
            rows = stacked.new_zeros(len(present), stacked[0].numel()).to(layout.dtype)
            for j, task in enumerate(representation.tasks):
                rows[present.index(task)] = stacked[j].reshape(-1) * scale[task]
            # The global matrix is the column-wise concatenation of the ranks' [K, b·d] rows,
            # so its Gramian is the sum of theirs.
            gramian = rows @ rows.T
        self._all_reduce(gramian)
        factor = _gramian_factor(gramian)  # [K, K] F with F Fᵀ = G: the methods read G only
        method = step.method
        assert isinstance(method, WeightedMethod)  # checked by MultiTaskStep
        task_weights = method.weights(factor, present).to(weights.dtype)
        if scaled:
            total = sum(
                (task_weights[present.index(t)] * scale[t] * loss for t, loss in scaled.items()),
                start=torch.zeros((), dtype=layout.dtype, device=layout.device),
            )
            torch.autograd.backward(total)
        self._reduce_grad_attributes(step, layout)
        step.optimizer.step()
        step.after_step(present, loss_values, epoch=epoch, grads=None, closure=None)
        diagnostics = {"task_weights": task_weights.tolist(), **conflict_statistics(factor)}
        return step.make_record(present, loss_values, weights, diagnostics=diagnostics)

    # -- building blocks that MultiTaskStep and CSO call ----------------------------------

    def task_gradients(self, step: MultiTaskStep, closure: TaskLossClosure) -> PerTaskGrads:
        """The global batch's per-task gradients, one forward per task on this rank's shard.

        Each task's forward and backward run on this rank; its gradients, count-scaled loss
        and count go to one row of the bucket, all-reduced per task (``bucket="task"``, while
        the next task runs) or all at once. Does not touch ``.grad``.

        Returns:
            The per-task gradients of the tasks with a loss on some rank, the same on every rank.

        Raises:
            FloatingPointError: a global loss is NaN or infinite (on every rank alike).
        """
        layout = self._layout(step)
        matrix = torch.zeros(
            len(step.tasks), layout.width, dtype=layout.dtype, device=layout.device
        )
        works = []
        for k, task in enumerate(step.tasks):
            loss = closure(task)
            if loss is not None:
                loss = _check_loss(loss, task)
                count = self._count(task, loss, layout)
                scaled = loss * count
                grads = torch.autograd.grad(scaled, step.params, allow_unused=True)
                _fill_row(matrix[k], layout, grads, scaled.detach(), count)
            else:
                self._count(task, None, layout)  # checks the counts
            if self.bucket == "task":
                works.append(self._all_reduce(matrix[k], async_op=True))
        return self._reduce_rows(step, matrix, layout, filled=self.bucket == "task", works=works)

    def task_gradient(
        self, step: MultiTaskStep, task: str, loss: Tensor | None, *, epoch: int | None
    ) -> tuple[Tensor, Tensor] | None:
        """One task's global gradient, weighted, into ``.grad`` (CSO's Phase 1 steps).

        Args:
            step: the step object.
            task: the task.
            loss: its loss on this rank's shard, or None without labels here.
            epoch: the 0-based epoch, for the weighting.

        Returns:
            ``(global loss [], weight [])``, the same on every rank, with ``.grad`` holding the
            loss weight times the global batch's gradient (None for parameters the task does
            not reach); None when no rank has a loss for ``task`` (``.grad`` is untouched).
        """
        layout = self._layout(step)
        row = torch.zeros(layout.width, dtype=layout.dtype, device=layout.device)
        count = self._count(task, loss, layout)
        if loss is not None:
            scaled = _check_loss(loss, task) * count
            grads = torch.autograd.grad(scaled, step.params, allow_unused=True)
            _fill_row(row, layout, grads, scaled.detach(), count)
        finish_buffers = self._start_buffer_sync(step.model)
        self._all_reduce(row)
        finish_buffers()
        if float(row[-1]) == 0:
            return None
        value = row[-2] / row[-1]
        step.check_finite_loss(task, value)
        weight = step.weighting(value.reshape(1), (task,), epoch=epoch)[0]
        flat = row[: layout.num_entries] * (weight.to(row.dtype) / row[-1])
        self._write_grads(step, layout, flat, row[layout.num_entries : -2])
        return value, weight

    def losses_after(
        self, step: MultiTaskStep, closure: TaskLossClosure, tasks: Sequence[str]
    ) -> Tensor:
        """[K] the global losses of ``tasks`` re-evaluated after the step (FAMO's input).

        Args:
            step: the step object.
            closure: ``task -> loss | None`` on this rank's shard.
            tasks: the tasks of the step, present on some rank.

        Returns:
            [K] the count-weighted means over the ranks, the same on every rank.
        """
        layout = self._layout(step)
        num_tasks = len(tasks)
        summary = torch.zeros(2 * num_tasks, dtype=layout.dtype, device=layout.device)
        with torch.no_grad():
            for j, task in enumerate(tasks):
                loss = closure(task)
                count = self._count(task, loss, layout)
                if loss is not None:
                    summary[j] = loss.detach().reshape(()).to(layout.dtype) * count
                    summary[num_tasks + j] = count
        self._all_reduce(summary)
        return summary[:num_tasks] / summary[num_tasks:]

    # -- reductions -----------------------------------------------------------------------

    def _all_reduce(self, tensor: Tensor, *, async_op: bool = False) -> Any:
        if self.world_size == 1:
            return None
        return dist.all_reduce(tensor, group=self.group, async_op=async_op)

    def _reduce_rows(
        self,
        step: MultiTaskStep,
        matrix: Tensor,
        layout: _Layout,
        *,
        filled: bool,
        works: Sequence[Any] = (),
    ) -> PerTaskGrads:
        """All-reduce the [K, width] bucket (unless ``filled`` rows were already started)."""
        pending = list(works)
        if not filled:
            if self.bucket == "task":
                pending += [self._all_reduce(row, async_op=True) for row in matrix]
            else:
                pending.append(self._all_reduce(matrix, async_op=True))
        finish_buffers = self._start_buffer_sync(step.model)
        for work in pending:
            if work is not None:
                work.wait()
        finish_buffers()
        return self._assemble(step, matrix, layout)

    def _assemble(self, step: MultiTaskStep, matrix: Tensor, layout: _Layout) -> PerTaskGrads:
        """The reduced bucket as :class:`PerTaskGrads` of the globally present tasks."""
        num = layout.num_entries
        is_present = (matrix[:, -1] > 0).tolist()
        present = tuple(t for t, here in zip(step.tasks, is_present, strict=True) if here)
        if not present:
            raise ValueError(
                "No task has a loss in this step on any rank; give at least one (a closure "
                "returned None, or a mapping left out, every task on every rank)."
            )
        if len(present) < len(step.tasks):
            matrix = matrix[torch.tensor(is_present, device=matrix.device)]
        totals = matrix[:, -1]
        losses = matrix[:, -2] / totals
        for task, value in zip(present, losses, strict=True):
            step.check_finite_loss(task, value)
        flat = matrix[:, :num]
        flat.div_(totals.unsqueeze(1))
        touched = (matrix[:, num:-2] > 0).cpu()  # [K, P]
        grads: list[Tensor | None] = []
        for i, p in enumerate(step.params):
            if not bool(touched[:, i].any()):
                grads.append(None)
                continue
            start = layout.offsets[i]
            block = flat[:, start : start + layout.sizes[i]]
            grads.append(block.reshape(len(present), *p.shape).to(p.dtype))
        return PerTaskGrads(tasks=present, losses=losses, grads=tuple(grads), touched=touched)

    def _global_losses(
        self, step: MultiTaskStep, scaled: Mapping[str, Tensor], layout: _Layout
    ) -> tuple[tuple[str, ...], Tensor, Tensor]:
        """All-reduce the count-scaled losses and counts; (present, [K'] losses, [K] counts)."""
        num_tasks = len(step.tasks)
        summary = torch.zeros(2 * num_tasks, dtype=layout.dtype, device=layout.device)
        for task, loss in scaled.items():
            k = step.tasks.index(task)
            summary[k] = loss.detach().to(layout.dtype)
            summary[num_tasks + k] = self._count(task, loss, layout)
        finish_buffers = self._start_buffer_sync(step.model)
        self._all_reduce(summary)
        finish_buffers()
        totals = summary[num_tasks:]
        is_present = (totals > 0).tolist()
        present = tuple(t for t, here in zip(step.tasks, is_present, strict=True) if here)
        if not present:
            raise ValueError("No task has a loss in this step on any rank; give at least one.")
        index = torch.tensor([k for k, here in enumerate(is_present) if here], device=totals.device)
        losses = summary[index] / totals[index]
        for task, value in zip(present, losses, strict=True):
            step.check_finite_loss(task, value)
        return present, losses, totals

    def _reduce_grad_attributes(self, step: MultiTaskStep, layout: _Layout) -> None:
        """All-reduce every parameter's ``.grad`` (summed over ranks) in one flat bucket."""
        num = layout.num_entries
        flat = torch.zeros(num + len(step.params), dtype=layout.dtype, device=layout.device)
        for i, p in enumerate(step.params):
            if p.grad is not None:
                start = layout.offsets[i]
                flat[start : start + layout.sizes[i]].copy_(p.grad.reshape(-1))
                flat[num + i] = 1
        self._all_reduce(flat)
        self._write_grads(step, layout, flat[:num], flat[num:])

    def _write_grads(
        self, step: MultiTaskStep, layout: _Layout, flat: Tensor, flags: Tensor
    ) -> None:
        is_reached = (flags > 0).tolist()
        for i, p in enumerate(step.params):
            if not is_reached[i]:
                p.grad = None
                continue
            start = layout.offsets[i]
            p.grad = flat[start : start + layout.sizes[i]].view(p.shape).to(p.dtype)

    def _start_buffer_sync(self, model: nn.Module) -> Callable[[], None]:
        """Start averaging (or broadcasting) the model's unsynchronized floating buffers."""
        if self.buffers == "keep" or self.world_size == 1:
            return _nothing
        seen: set[int] = set()
        tensors: list[Tensor] = []
        for module in model.modules():
            if isinstance(module, DistributedBatchNorm):
                continue  # already global statistics, the same on every rank
            for buffer in module.buffers(recurse=False):
                if buffer.is_floating_point() and buffer.numel() and id(buffer) not in seen:
                    seen.add(id(buffer))
                    tensors.append(buffer)
        if not tensors:
            return _nothing
        groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        pending = []
        for members in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in members])
            if self.buffers == "average":
                work = dist.all_reduce(flat, group=self.group, async_op=True)
            else:
                source = 0 if self.group is None else dist.get_global_rank(self.group, 0)
                work = dist.broadcast(flat, src=source, group=self.group, async_op=True)
            pending.append((members, flat, work))
        world = self.world_size

        def finish() -> None:
            for members, flat, work in pending:
                if work is not None:
                    work.wait()
                if self.buffers == "average":
                    flat.div_(world)
                offset = 0
                with torch.no_grad():
                    for t in members:
                        t.copy_(flat[offset : offset + t.numel()].view_as(t))
                        offset += t.numel()

        return finish

    # -- counts, layout, checks -----------------------------------------------------------

    def _scaled_losses(
        self, step: MultiTaskStep, losses: Mapping[str, Tensor | None], layout: _Layout
    ) -> dict[str, Tensor]:
        """This rank's losses times its counts, in task order; absent tasks left out."""
        unknown = sorted(set(losses) - set(step.tasks))
        if unknown:
            raise KeyError(f"Losses given for unknown tasks {unknown}; the tasks are {step.tasks}.")
        scaled = {}
        for task in step.tasks:
            loss = losses.get(task)
            count = self._count(task, loss, layout)
            if loss is not None:
                scaled[task] = _check_loss(loss, task) * count
        return scaled

    def _count(self, task: str, loss: Tensor | None, layout: _Layout) -> Tensor:
        """This rank's sample count of ``task``, a 0-d tensor of the bucket's dtype."""
        counts = self._counts
        if counts is None or task not in counts:
            if counts is not None and loss is not None:
                raise KeyError(
                    f"`sample_counts` has no count for task {task!r}, which has a loss on this "
                    "rank; give every task with a loss its number of labelled samples."
                )
            value: int | Tensor = 0 if loss is None else 1
        else:
            value = counts[task]
            if loss is None:
                if isinstance(value, int) and value != 0:
                    raise ValueError(
                        f"`sample_counts[{task!r}]` is {value} but the task has no loss on this "
                        "rank; give 0 (or no count) for a task without labels in the batch."
                    )
                value = 0
        return torch.as_tensor(value).to(device=layout.device, dtype=layout.dtype)

    def _layout(self, step: MultiTaskStep) -> _Layout:
        sizes = tuple(p.numel() for p in step.params)
        offsets = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        # At least float32: the all-reduced sums and the aggregation after them stay accurate
        # for half-precision parameters too.
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in step.params), torch.float32)
        return _Layout(sizes, offsets, sum(sizes), dtype, step.params[0].device)

    def _prepare(self, step: MultiTaskStep, sample_counts: SampleCounts | None) -> None:
        devices = {p.device for p in step.params}
        if len(devices) > 1:
            raise ValueError(
                f"GradientSync needs every optimized parameter on one device; found "
                f"{sorted(str(d) for d in devices)}. Move the model with `model.to(device)`."
            )
        if sample_counts is not None:
            unknown = sorted(set(sample_counts) - set(step.tasks))
            if unknown:
                raise KeyError(
                    f"`sample_counts` names unknown tasks {unknown}; the tasks are {step.tasks}."
                )
            for task, count in sample_counts.items():
                if isinstance(count, bool) or (isinstance(count, int) and count < 0):
                    raise ValueError(
                        f"`sample_counts[{task!r}]` must be a non-negative integer (or a 0-d "
                        f"tensor); got {count!r}."
                    )
        if self.world_size == 1:
            return
        device = next(iter(devices))
        if dist.get_backend(self.group) == "nccl" and device.type != "cuda":
            raise ValueError(
                f"The process group uses NCCL, which reduces CUDA tensors only, but the "
                f"parameters are on {device}. Move the model to `cuda:LOCAL_RANK` (see "
                "`init_from_env`), or use the gloo backend on the CPU."
            )
        if self.check_replicas and not self._is_verified:
            self._verify_replicas(step)
            self._is_verified = True

    def _verify_replicas(self, step: MultiTaskStep) -> None:
        """Raise when a parameter or a method/weighting generator differs between ranks."""
        names = {id(p): name for name, p in step.model.named_parameters()}
        labels: list[str] = []
        prints: list[Tensor] = []
        for p in step.params:
            labels.append(f"parameter {names.get(id(p), str(tuple(p.shape)))!r}")
            prints.append(_fingerprint(p.detach()))
        for owner, module in (("method", step.method), ("weighting", step.weighting)):
            for name, submodule in module.named_modules():
                for attribute, value in vars(submodule).items():
                    if isinstance(value, torch.Generator):
                        where = ".".join(part for part in (owner, name, attribute) if part)
                        labels.append(f"generator {where} ({type(submodule).__name__})")
                        prints.append(_fingerprint(value.get_state()))
        values = torch.stack(prints).to(collective_device(self.group))  # [E, 2]
        bounds = torch.cat([values, -values])
        dist.all_reduce(bounds, op=dist.ReduceOp.MAX, group=self.group)
        num = len(labels)
        differs = (bounds[:num] != -bounds[num:]).any(dim=1).tolist()
        if any(differs):
            label = labels[differs.index(True)]
            fix = (
                "seed it alike on every rank (`taskprio.distributed.broadcast_seed`)"
                if label.startswith("generator")
                else "copy rank 0's model to every rank before the first step "
                "(`taskprio.distributed.broadcast_module(model)`, or wrap it in "
                "DistributedDataParallel)"
            )
            raise RuntimeError(
                f"The ranks disagree before the first synchronized step: {label} differs "
                f"between ranks; {fix}."
            )


def _fill_row(
    row: Tensor,
    layout: _Layout,
    grads: Sequence[Tensor | None],
    scaled_loss: Tensor,
    count: Tensor,
) -> None:
    """Write one task's gradients, reach flags, count-scaled loss and count into ``row``."""
    num = layout.num_entries
    for i, g in enumerate(grads):
        if g is not None:
            start = layout.offsets[i]
            row[start : start + layout.sizes[i]].copy_(g.reshape(-1))
            row[num + i] = 1
    row[-2] = scaled_loss.reshape(())
    row[-1] = count


def _fingerprint(tensor: Tensor) -> Tensor:
    """[2] float64 summary of a tensor (sum, position-weighted sum), for replica checks."""
    values = tensor.detach().reshape(-1).to(torch.float64).nan_to_num(0.0, 1e300, -1e300)
    positions = torch.arange(values.numel(), device=values.device, dtype=torch.float64)
    weights = 1.0 + torch.remainder(positions, 7.0) / 7.0
    return torch.stack([values.sum(), (values * weights).sum()]).cpu()


def _gramian_factor(gramian: Tensor) -> Tensor:
    """[K, K] symmetric F with F Fᵀ = G for a PSD Gramian G (negative rounding clamped)."""
    symmetric = 0.5 * (gramian + gramian.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(symmetric)
    root = eigenvalues.clamp_min(0).sqrt()
    factor: Tensor = (eigenvectors * root.unsqueeze(0)) @ eigenvectors.T
    return factor


def _nothing() -> None:
    return None
