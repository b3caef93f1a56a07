"""MultiTaskStep: the one object that replaces ``loss.backward(); optimizer.step()``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from taskprio.engine import PerTaskGrads, Strategy, flat_grad_matrix, per_task_grads, unflatten_like
from taskprio.methods import METHODS, Method, WeightedMethod
from taskprio.methods import gramian as form_gramian
from taskprio.weighting import WEIGHTINGS, Weighting

if TYPE_CHECKING:
    from taskprio.distributed import GradientSync

TaskLossClosure = Callable[[str], Tensor | None]
ParameterGroups = Literal["shared", "module", "parameter"] | Sequence[Sequence[Tensor]]


@dataclass(frozen=True)
class StepRecord:
    """What one step did, small enough to keep for every step.

    Attributes:
        losses: task → loss value, for the tasks present in the step.
        weights: task → the loss weight applied.
        method: the method's registry key.
        skipped_tasks: tasks with no loss in this step (no labels in the batch).
        phase: the method's phase, for multi-phase methods; None otherwise.
        diagnostics: method numbers plus conflict statistics of the shared gradients when
            per-task gradients were formed (on every N-th step with
            ``MultiTaskStep(conflict_statistics_every=N)``): ``conflicting_pairs`` (pairs of
            tasks with a negative inner product) and ``min_cosine``.
    """

    losses: dict[str, float]
    weights: dict[str, float]
    method: str
    skipped_tasks: tuple[str, ...] = ()
    phase: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)


class MultiTaskStep:
    """One optimization step over several task losses.

    Computes the per-task gradients, scales them by the loss weights, combines the gradients of
    the shared parameters with the method (task-specific parameters get their own task's
    weighted gradient), writes ``.grad`` and steps the optimizer.

    Args:
        model: the network; its trainable parameters must all be in ``optimizer``.
        optimizer: any torch optimizer over the model's parameters.
        tasks: the task names, in a fixed order (rows of the gradient matrix).
        method: a :class:`~taskprio.methods.Method` or its registry key (default ``"sum"``).
        weighting: a :class:`~taskprio.weighting.Weighting` or its registry key
            (default ``"equal"``).
        parameter_groups: which shared parameters the method combines together: ``"shared"``
            (default: all of them as one [K, n] matrix), ``"module"`` (per layer),
            ``"parameter"`` (per tensor), or a list of parameter lists (the rest form one more
            group).
        strategy: how per-task gradients are formed (see :func:`taskprio.engine.per_task_grads`).
        check_finite: stop with an error naming the task when a loss is NaN or infinite, before
            any parameter changes.
        gradient_sync: a :class:`taskprio.distributed.GradientSync` to train on the global
            batch of all ranks of a process group: per-task gradients and losses are averaged
            across ranks before the weighting and the method (see ``docs/distributed.md``).
        conflict_statistics_every: record the conflict statistics of the shared gradients
            (:func:`conflict_statistics`) on every N-th combination of per-task gradients: 1
            (default) on every step, 0 never. They cost K² numbers when the method formed the
            Gramian of the gradients (most do) and one Gramian of the [K, n] matrix otherwise
            (``mean``, ``graddrop``), so a larger N saves that product.

    Call it with either a mapping ``{task: loss}`` from one shared forward, or a closure
    ``task -> loss`` that runs one task's forward (with task-specific norms, wrap it in
    :func:`taskprio.nn.active_task`). A task missing from the mapping, or whose closure returns
    None, has no labels in this batch and is left out of the step.

    >>> model = nn.Linear(3, 2)
    >>> step = MultiTaskStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ["a", "b"])
    >>> out = model(torch.ones(4, 3))
    >>> record = step({"a": out[:, 0].pow(2).mean(), "b": out[:, 1].abs().mean()})
    >>> sorted(record.losses), record.method
    (['a', 'b'], 'sum')
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        tasks: Sequence[str],
        *,
        method: Method | str = "sum",
        weighting: Weighting | str = "equal",
        parameter_groups: ParameterGroups = "shared",
        strategy: Strategy = "auto",
        check_finite: bool = True,
        gradient_sync: GradientSync | None = None,
        conflict_statistics_every: int = 1,
    ) -> None:
        self.tasks = tuple(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"`tasks` must be non-empty and unique; got {list(tasks)}.")
        self.model = model
        self.optimizer = optimizer
        self.method = METHODS.create(method) if isinstance(method, str) else method
        self.weighting = WEIGHTINGS.create(weighting) if isinstance(weighting, str) else weighting
        if self.method.uses_representation and not isinstance(self.method, WeightedMethod):
            raise TypeError(f"{self.method} uses representation gradients but has no weights().")
        self.strategy: Strategy = strategy
        self.check_finite = check_finite
        self.gradient_sync = gradient_sync
        if (
            isinstance(conflict_statistics_every, bool)
            or not isinstance(conflict_statistics_every, int)
            or conflict_statistics_every < 0
        ):
            raise ValueError(
                "`conflict_statistics_every` must be a non-negative integer (1: every step, "
                f"0: never); got {conflict_statistics_every!r}."
            )
        self.conflict_statistics_every = conflict_statistics_every
        self._combinations = 0  # calls of combine_and_write, for conflict_statistics_every
        self.params = _optimizer_params(optimizer)
        _check_model_in_optimizer(model, self.params)
        self.parameter_groups = parameter_groups
        self._group_of = _group_ids(model, self.params, parameter_groups)

    def __call__(
        self,
        losses_or_closure: Mapping[str, Tensor] | TaskLossClosure,
        *,
        epoch: int | None = None,
        features: Tensor | None = None,
        sample_counts: Mapping[str, int | Tensor] | None = None,
    ) -> StepRecord:
        """Run one step; see the class docstring for the two input forms.

        Args:
            losses_or_closure: ``{task: loss}`` or ``task -> loss | None``.
            epoch: the 0-based epoch, for weightings and methods with a schedule.
            features: the shared representation the losses were computed from (mapping form).
                Methods that weight tasks from representation gradients (MGDA-UB,
                Aligned-MTL-UB) need it; for the others it is optional and makes the per-task
                gradients cheaper (one batched backward through the trunk).
            sample_counts: task → the number of labelled samples each loss averages, used with
                ``gradient_sync`` so that a task's gradient is the mean over the global batch
                (ignored in a single process, where the loss already is that mean).

        Under ``torch.autocast`` the closure's forwards run with the caller's autocast; the
        per-task gradient matrix, the weighting and the method run with autocast off, in the
        gradients' dtype (float32 for float32 parameters).

        Returns:
            A :class:`StepRecord`.
        """
        caller_autocast = _enabled_autocast()
        if caller_autocast:
            with _autocast_off(caller_autocast):
                if not isinstance(losses_or_closure, Mapping):
                    losses_or_closure = _with_autocast(losses_or_closure, caller_autocast)
                return self(
                    losses_or_closure, epoch=epoch, features=features, sample_counts=sample_counts
                )
        if self.gradient_sync is not None:
            return self.gradient_sync.step(
                self, losses_or_closure, epoch=epoch, features=features, sample_counts=sample_counts
            )
        if self.method.steps_optimizer:
            if isinstance(losses_or_closure, Mapping):
                raise TypeError(
                    f"{self.method} runs one forward per task: call the step with a closure "
                    "`task -> loss` (see the class docstring), not a mapping of losses."
                )
            return self.method.run_step(self, losses_or_closure, epoch=epoch)
        if self.method.uses_representation:
            if not isinstance(losses_or_closure, Mapping) or features is None:
                raise TypeError(
                    f"{self.method} weights the tasks from the gradients of the shared "
                    "representation: call the step with the losses of one forward and the "
                    "representation, `step({task: loss}, features=z)`."
                )
            return self._representation_step(losses_or_closure, features, epoch)
        diagnostics: dict[str, Any]
        if isinstance(losses_or_closure, Mapping):
            losses = self._present_losses(losses_or_closure)
            present = tuple(losses)
            loss_values = self._loss_values(losses)
            weights = self.weighting(loss_values, present, epoch=epoch)
            self.optimizer.zero_grad(set_to_none=True)
            grads = None
            if self.method.is_linear and not self.weighting.needs_grad_norms:
                torch.autograd.backward(_weighted_sum(losses, weights))
                diagnostics = {}
            else:
                grads = per_task_grads(
                    losses, self.params, tasks=present, strategy=self.strategy, features=features
                )
                diagnostics = self.combine_and_write(grads, weights)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            grads = self.task_gradients(losses_or_closure)
            present, loss_values = grads.tasks, _at_least_float32(grads.losses)
            weights = self.weighting(loss_values, present, epoch=epoch)
            diagnostics = self.combine_and_write(grads, weights)
        self.optimizer.step()
        closure = None if isinstance(losses_or_closure, Mapping) else losses_or_closure
        self.after_step(present, loss_values, epoch=epoch, grads=grads, closure=closure)
        return self.make_record(present, loss_values, weights, diagnostics=diagnostics)

    def _representation_step(
        self, losses: Mapping[str, Tensor], features: Tensor, epoch: int | None
    ) -> StepRecord:
        present_losses = self._present_losses(losses)
        present = tuple(present_losses)
        loss_values = self._loss_values(present_losses)
        weights = self.weighting(loss_values, present, epoch=epoch)
        self.optimizer.zero_grad(set_to_none=True)
        representation = per_task_grads(
            present_losses, [features], tasks=present, retain_graph=True
        )
        stacked = representation.grads[0]
        if stacked is None:
            raise ValueError("No task loss depends on `features`; pass the shared representation.")
        matrix = stacked.reshape(len(present), -1) * weights.to(stacked.dtype).unsqueeze(1)
        method = self.method
        assert isinstance(method, WeightedMethod)  # checked in __init__
        task_weights = method.weights(matrix, present).to(weights.dtype)
        # One backward of Σ α_t w_t L_t: the trunk gets J_zᵀ Σ α_t w_t ∇_z L_t, the heads their own.
        torch.autograd.backward(_weighted_sum(present_losses, task_weights * weights))
        self.optimizer.step()
        self.after_step(present, loss_values, epoch=epoch, grads=None, closure=None)
        diagnostics: dict[str, Any] = {"task_weights": task_weights.tolist()}
        if self._is_statistics_due():
            diagnostics.update(conflict_statistics(matrix))
        return self.make_record(present, loss_values, weights, diagnostics=diagnostics)

    def _is_statistics_due(self) -> bool:
        """Whether this combination records conflict statistics (counts the combinations)."""
        every = self.conflict_statistics_every
        is_due = every > 0 and self._combinations % every == 0
        self._combinations += 1
        return is_due

    # The methods below are the building blocks that a method which runs the optimizer itself
    # (``steps_optimizer``, e.g. CSO) composes in its ``run_step``.

    def task_gradients(self, closure: TaskLossClosure) -> PerTaskGrads:
        """Per-task gradients of every optimized parameter, one forward per task.

        Checks each loss for NaN/inf before its backward (``check_finite``); tasks whose closure
        returns None are left out. Does not touch ``.grad``. With ``gradient_sync``, the
        gradients of the global batch (the same on every rank).
        """
        if self.gradient_sync is not None:
            return self.gradient_sync.task_gradients(self, closure)

        def checked_loss(task: str) -> Tensor | None:
            loss = closure(task)
            if loss is not None and self.check_finite:
                self._raise_if_not_finite([task], loss.detach().reshape(1))
            return loss

        return per_task_grads(checked_loss, self.params, tasks=self.tasks, strategy="loop")

    def check_finite_loss(self, task: str, loss: Tensor) -> None:
        """Raise FloatingPointError naming ``task`` if ``loss`` is NaN or infinite."""
        if self.check_finite:
            self._raise_if_not_finite([task], loss.detach().reshape(1))

    def make_record(
        self,
        present: Sequence[str],
        loss_values: Tensor,
        weights: Tensor,
        *,
        phase: str | None = None,
        diagnostics: dict[str, Any] | None = None,
    ) -> StepRecord:
        """A :class:`StepRecord` for the tasks present in a step."""
        return StepRecord(
            losses=dict(zip(present, loss_values.tolist(), strict=True)),
            weights=dict(zip(present, weights.tolist(), strict=True)),
            method=self.method.name,
            skipped_tasks=tuple(t for t in self.tasks if t not in present),
            phase=phase,
            diagnostics={} if diagnostics is None else diagnostics,
        )

    def state_dict(self) -> dict[str, Any]:
        """The method's and the weighting's state (the model and optimizer save their own)."""
        return {"method": self.method.state_dict(), "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.method.load_state_dict(state["method"])
        self.weighting.load_state_dict(state["weighting"])

    def after_step(
        self,
        present: Sequence[str],
        loss_values: Tensor,
        *,
        epoch: int | None,
        grads: PerTaskGrads | None,
        closure: TaskLossClosure | None,
    ) -> None:
        """Let the method and the weighting learn from the step that just ran.

        Called after the optimizer step with the present tasks' detached losses; gives the
        weighting the gradient norms and post-step losses it asks for.
        """
        grad_norms = None
        if self.weighting.needs_grad_norms and grads is not None:
            grad_norms = shared_grad_norms(grads)
        losses_after = None
        sync = self.gradient_sync
        if self.weighting.needs_losses_after_step and closure is not None and sync is not None:
            losses_after = sync.losses_after(self, closure, present)
        elif self.weighting.needs_losses_after_step and closure is not None:
            with torch.no_grad():
                after = [closure(task) for task in present]
            losses_after = torch.stack(
                [loss.detach().reshape(()) for loss in after if loss is not None]
            )
        self.method.update(loss_values, present, epoch=epoch)
        self.weighting.update(
            loss_values, present, epoch=epoch, grad_norms=grad_norms, losses_after=losses_after
        )

    def _present_losses(self, losses: Mapping[str, Tensor | None]) -> dict[str, Tensor]:
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise KeyError(f"Losses given for unknown tasks {unknown}; the tasks are {self.tasks}.")
        present = {t: loss for t in self.tasks if (loss := losses.get(t)) is not None}
        if not present:
            raise ValueError("No task has a loss in this step; give at least one.")
        return present

    def _loss_values(self, losses: Mapping[str, Tensor]) -> Tensor:
        values = _at_least_float32(
            torch.stack([loss.detach().reshape(()) for loss in losses.values()])
        )
        if self.check_finite:
            self._raise_if_not_finite(tuple(losses), values)
        return values

    def _raise_if_not_finite(self, tasks: Sequence[str], values: Tensor) -> None:
        for task, value in zip(tasks, values.tolist(), strict=True):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"The loss of task {task!r} is {value}; no parameter was changed. Check "
                    "that task's inputs and labels, or lower the learning rate."
                )

    def combine_and_write(
        self, grads: PerTaskGrads, weights: Tensor, method: Method | None = None
    ) -> dict[str, Any]:
        """Weight the per-task gradients, combine shared ones, write ``.grad``.

        Args:
            grads: per-task gradients of :attr:`params`.
            weights: [K] loss weights of ``grads.tasks``.
            method: combines the gradients of shared parameters; :attr:`method` when None.

        Returns:
            The method's diagnostics and (see ``conflict_statistics_every``) the conflict
            statistics of the shared gradients.
        """
        method = self.method if method is None else method
        is_statistics_due = self._is_statistics_due()
        diagnostics: dict[str, Any] = {}
        # Parameters of one group reached by the same set of tasks form one block; a block
        # reached by two or more tasks is shared and goes through the method as one [k, n]
        # matrix (the whole shared set by default, or per layer / user group).
        blocks: dict[tuple[int, tuple[bool, ...]], list[int]] = {}
        columns = grads.touched.T.tolist()  # [P][K]
        for i, g in enumerate(grads.grads):
            if g is None:
                continue
            mask = tuple(columns[i])
            if sum(mask) == 1:  # task-specific: its own weighted gradient, no method involved
                k = mask.index(True)
                self.params[i].grad = g[k] * weights[k].to(g.dtype)
            else:
                blocks.setdefault((self._group_of[i], mask), []).append(i)
        for (_, mask), indices in blocks.items():
            every_task = all(mask)
            rows = None if every_task else torch.tensor(mask)
            pieces = []
            for i in indices:
                g = grads.grads[i]
                assert g is not None  # blocks hold only reached parameters
                pieces.append(g if rows is None else g[rows])
            matrix = flat_grad_matrix(pieces)
            block_weights = weights if every_task else weights[rows]
            # In place: `matrix` is a fresh copy; a second [K, n] buffer cost 0.3× LS (MLP bench).
            matrix.mul_(block_weights.to(matrix.dtype).unsqueeze(1))
            block_tasks = [t for t, m in zip(grads.tasks, mask, strict=True) if m]
            combined = method(matrix, block_tasks)
            diagnostics.update(method.diagnostics())
            if is_statistics_due:
                # The Gramian the method formed, if any, serves the statistics too.
                diagnostics.update(conflict_statistics(matrix, gramian=method.last_gramian))
            for i, grad in zip(
                indices, unflatten_like(combined, [self.params[i] for i in indices]), strict=True
            ):
                self.params[i].grad = grad
        return diagnostics


def conflict_statistics(
    per_task_grads: Tensor, *, gramian: Tensor | None = None
) -> dict[str, float]:
    """How much the task gradients conflict, read off their Gramian.

    Args:
        per_task_grads: [K, n] one gradient per task.
        gramian: [K, K] ``per_task_grads @ per_task_grads.T`` when already formed (the step
            passes the method's :attr:`~taskprio.methods.Method.last_gramian`); formed here
            otherwise (:func:`taskprio.methods.gramian`).

    Returns:
        ``conflicting_pairs``: the number of pairs with a negative inner product;
        ``min_cosine``: the smallest pairwise cosine (1.0 for a single task), in float64.

    >>> conflict_statistics(torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]]))
    {'conflicting_pairs': 1.0, 'min_cosine': -0.7071067811865475}
    """
    if gramian is None:
        gramian = form_gramian(per_task_grads)
    # K×K numbers: float64 numpy on the CPU is faster than a dozen small torch operations.
    gram = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = gram.shape[0]
    if num_tasks < 2:
        return {"conflicting_pairs": 0.0, "min_cosine": 1.0}
    norms = np.sqrt(np.clip(np.diagonal(gram), 0.0, None))
    upper = np.triu_indices(num_tasks, k=1)
    pairs = gram[upper]
    scales = np.maximum((norms[:, None] * norms[None, :])[upper], np.finfo(np.float64).tiny)
    return {
        "conflicting_pairs": float((pairs < 0).sum()),
        "min_cosine": float((pairs / scales).min()),
    }


def _weighted_sum(losses: Mapping[str, Tensor], weights: Tensor) -> Tensor:
    # Summed term by term rather than stacked: the losses may come from separate graphs.
    total = torch.zeros((), dtype=weights.dtype, device=weights.device)
    for loss, weight in zip(losses.values(), weights, strict=True):
        total = total + weight * loss.reshape(())
    return total


def shared_grad_norms(grads: PerTaskGrads) -> Tensor:
    """‖∇ L_t‖ over the parameters reached by two or more tasks (all of them for K = 1).

    Args:
        grads: per-task gradients.

    Returns:
        [K] float norms in the order of ``grads.tasks``.
    """
    is_shared = grads.touched.sum(dim=0) > min(1, grads.num_tasks - 1)
    squares = [
        g.reshape(grads.num_tasks, -1).pow(2).sum(dim=1)
        for g, shared in zip(grads.grads, is_shared.tolist(), strict=True)
        if g is not None and shared
    ]
    if not squares:
        raise ValueError("No parameter is shared by the tasks of this step; no gradient norm.")
    return torch.stack(squares).sum(dim=0).sqrt()


def _group_ids(model: nn.Module, params: Sequence[Tensor], groups: ParameterGroups) -> list[int]:
    """The group index of every optimized parameter (parameters of one group combine together)."""
    if groups == "shared":
        return [0] * len(params)
    if groups == "parameter":
        return list(range(len(params)))
    if groups == "module":
        owner = {
            id(p): i for i, m in enumerate(model.modules()) for p in m.parameters(recurse=False)
        }
        return [owner.get(id(p), -1) for p in params]
    if isinstance(groups, str):
        raise ValueError(
            f"`parameter_groups` must be 'shared', 'module', 'parameter' or a list of parameter "
            f"lists; got {groups!r}."
        )
    index = {id(p): i for i, group in enumerate(groups) for p in group}
    # Parameters in no user group are combined together, as one more group.
    return [index.get(id(p), len(groups)) for p in params]


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    seen: set[int] = set()
    params: list[Tensor] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    if not params:
        raise ValueError("`optimizer` holds no trainable parameter.")
    return params


def _check_model_in_optimizer(model: nn.Module, params: Sequence[Tensor]) -> None:
    in_optimizer = {id(p) for p in params}
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_optimizer
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} trainable parameters of `model` are not in `optimizer` (first: "
            f"{missing[0]!r}). Build the optimizer after `taskprio.nn.make_task_specific`, "
            "from `model.parameters()`, or freeze those parameters (requires_grad=False)."
        )


# Device types whose autocast state a step saves and restores (those torch knows on every build).
_AUTOCAST_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "hpu")


def _enabled_autocast() -> list[tuple[str, torch.dtype, bool]]:
    """(device type, dtype, cache enabled) of every autocast active in the caller."""
    cache = torch.is_autocast_cache_enabled()
    return [
        (device_type, torch.get_autocast_dtype(device_type), cache)
        for device_type in _AUTOCAST_DEVICE_TYPES
        if torch.is_autocast_enabled(device_type)
    ]


@contextlib.contextmanager
def _autocast_off(states: Sequence[tuple[str, torch.dtype, bool]]) -> Iterator[None]:
    """Turn off the given autocasts, so the gradient matrix and the aggregation run unreduced."""
    with contextlib.ExitStack() as stack:
        for device_type, _, _ in states:
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def _with_autocast(
    closure: TaskLossClosure, states: Sequence[tuple[str, torch.dtype, bool]]
) -> TaskLossClosure:
    """``closure`` run under the caller's autocast (its forwards keep their mixed precision)."""

    def autocast_closure(task: str) -> Tensor | None:
        with contextlib.ExitStack() as stack:
            for device_type, dtype, cache in states:
                stack.enter_context(torch.autocast(device_type, dtype=dtype, cache_enabled=cache))
            return closure(task)

    return autocast_closure


def _at_least_float32(values: Tensor) -> Tensor:
    """Loss values in float32 or wider: a loss computed in bf16/fp16 is upcast for weighting."""
    return values.to(torch.promote_types(values.dtype, torch.float32))
