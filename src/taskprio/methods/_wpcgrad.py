"""wPCGrad: task weighting through gradient projection, Bohn et al., ICONIP 2024, arXiv 2409.01793.

No public code exists; the algorithm below is the reconstruction of the project's specification
(``spec/wpcgrad.md``), each unretrieved choice an option. Sampling (an order, or pairs, from the
priorities and the method's generator) is kept apart from the projection given that draw, so
tests can pass draws explicitly. Projections are computed on the K×K Gramian: each projected
gradient is a combination h_i = Σ_k W_ik g_k, so only the coefficients W are updated and the
[K, n] matrix is touched once, for the final weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from taskprio.methods._base import METHODS, WeightedMethod, check_choice
from taskprio.weighting._base import WEIGHTINGS, Weighting

Mode = Literal["sequential", "pairwise", "symmetric"]
Reference = Literal["original", "projected"]
Reduction = Literal["sum", "mean"]
Source = Literal["uniform", "static", "loss_power", "weighting"]

_MODES = ("sequential", "pairwise", "symmetric")
_REFERENCES = ("original", "projected")
_REDUCTIONS = ("sum", "mean")
_SOURCES = ("uniform", "static", "loss_power", "weighting")


# -- priorities -------------------------------------------------------------------------------


def static_probabilities(weights: Tensor) -> Tensor:
    """The probabilities p = w / Σw of user weights w ≥ 0; uniform when every weight is 0.

    >>> static_probabilities(torch.tensor([2.0, 2.0, 4.0]))
    tensor([0.2500, 0.2500, 0.5000])
    """
    total = weights.sum()
    if float(total) <= 0:
        return torch.full_like(weights, 1.0 / weights.shape[0])
    return weights / total


def loss_power_probabilities(mean_losses: Tensor, *, gamma: float, eps: float = 1e-12) -> Tensor:
    """p_i ∝ (L̄_i + eps)^γ: tasks with a higher loss are favoured for γ > 0; γ = 0 is uniform.

    Args:
        mean_losses: [K] the mean training loss of each task over the previous epoch (≥ 0).
        gamma: the power γ.
        eps: keeps all-zero losses finite (they give uniform p).

    >>> loss_power_probabilities(torch.tensor([1.0, 3.0], dtype=torch.float64), gamma=2.0)
    tensor([0.1000, 0.9000], dtype=torch.float64)
    """
    powered = (mean_losses + eps) ** gamma
    return powered / powered.sum()


# -- sampling ---------------------------------------------------------------------------------


def sample_order(
    probabilities: Tensor, generator: torch.Generator, num_samples: int | None = None
) -> Tensor:
    """Draw orders of the K tasks without replacement with probability ∝ p (Plackett–Luce).

    Exponential race: with E_i ~ Exp(1), sorting E_i / p_i ascending puts task i first with
    probability p_i / Σp, and so on down the remaining tasks. Tasks with p_i = 0 come after
    every positive one, in uniform random order (sorted by E_i). Draws K uniforms per order.

    Args:
        probabilities: [K] p ≥ 0 (need not sum to 1).
        generator: a CPU generator.
        num_samples: S orders at once, or None for one.

    Returns:
        [K] or [S, K] int64 task indices, first drawn first.

    >>> sample_order(torch.tensor([0.0, 1.0, 0.0]), torch.Generator().manual_seed(0))[0]
    tensor(1)
    """
    p = probabilities.detach().to(device="cpu", dtype=torch.float64)
    shape = (p.shape[0],) if num_samples is None else (num_samples, p.shape[0])
    # 1 − U ∈ (0, 1], so E is finite.
    exponential = -torch.log1p(-torch.rand(shape, generator=generator, dtype=torch.float64))
    keys = torch.where(p > 0, exponential / p.clamp_min(1e-300), math.inf)
    by_exponential = exponential.argsort(dim=-1, stable=True)
    within = keys.gather(-1, by_exponential).argsort(dim=-1, stable=True)
    return by_exponential.gather(-1, within)


def sample_pairs(probabilities: Tensor, generator: torch.Generator) -> Tensor:
    """Draw the ``pairwise`` rule: each pair {i, j} once, in uniform random order, with a loser.

    Task i is the one projected (onto g_j's normal plane) with probability p_j / (p_i + p_j),
    and ½ when p_i + p_j = 0.

    Args:
        probabilities: [K] p ≥ 0.
        generator: a CPU generator.

    Returns:
        [K(K−1)/2, 2] int64 rows (projected task, reference task) in visiting order.
    """
    p = probabilities.detach().to(device="cpu", dtype=torch.float64)
    pairs = torch.combinations(torch.arange(p.shape[0]), r=2)  # [P, 2], i < j
    permutation = torch.randperm(pairs.shape[0], generator=generator)
    uniforms = torch.rand(pairs.shape[0], generator=generator, dtype=torch.float64)
    pairs = pairs[permutation]
    first, second = p[pairs[:, 0]], p[pairs[:, 1]]
    total = first + second
    first_is_projected = torch.where(total > 0, second / total.clamp_min(1e-300), 0.5)
    is_swapped = uniforms >= first_is_projected
    return torch.where(is_swapped[:, None], pairs.flip(1), pairs)


def sample_permutations(num_tasks: int, generator: torch.Generator) -> Tensor:
    """Draw PCGrad's random orders: one permutation of all K tasks per task (itself skipped).

    Returns:
        [K, K] int64, row i the order in which task i is projected against the others (the
        layout torchjd's PCGrad draws with ``torch.randperm`` once per row).
    """
    return torch.stack([torch.randperm(num_tasks, generator=generator) for _ in range(num_tasks)])


# -- projection given a draw ------------------------------------------------------------------

Array = npt.NDArray[np.float64]


def project_in_order(
    gramian: Tensor,
    order: Sequence[int] | Tensor,
    *,
    reference: Reference = "original",
    eps: float = 1e-12,
) -> tuple[Tensor, int]:
    """Project as wPCGrad's default rule: walk the order, each task off the earlier ones.

    The first task keeps g. Every later task k starts from h = g_k and, for each earlier task j
    in drawn order, if h·r_j < 0 (strict) and ‖r_j‖² > eps, sets h ← h − (h·r_j / ‖r_j‖²) r_j,
    with r_j = g_j (``"original"``, as PCGrad) or r_j = h_j (``"projected"``).

    Args:
        gramian: [K, K] G = J Jᵀ of the per-task gradients J [K, n].
        order: the K task indices, first drawn first.
        reference: ``"original"`` or ``"projected"`` reference gradients.
        eps: the smallest ‖r_j‖² projected against.

    Returns:
        ``(W [K, K] float64, projections)``: the projected gradients are H = W J; projections
        counts the projections made.

    >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])  # g1 = (1, 0), g2 = (-1, 1)
    >>> project_in_order(G, [0, 1])
    (tensor([[1., 0.],
            [1., 1.]], dtype=torch.float64), 1)
    """
    g, noise = _as_array(gramian), _rounding(gramian)
    sequence = [int(i) for i in order]
    coefficients = np.eye(g.shape[0])
    projections = 0
    for k in range(1, len(sequence)):
        i = sequence[k]
        for j in sequence[:k]:
            if reference == "original":
                ref = _unit(g.shape[0], j)
                squared_norm = g[j, j]
            else:
                ref = coefficients[j]
                squared_norm = _squared_norm(g, ref, noise)
            dot = float(coefficients[i] @ g @ ref)
            if dot < 0 and squared_norm > eps:
                coefficients[i] = coefficients[i] - (dot / squared_norm) * ref
                projections += 1
    return torch.from_numpy(coefficients), projections


def project_pairs(
    gramian: Tensor, pairs: Tensor, *, reference: Reference = "original", eps: float = 1e-12
) -> tuple[Tensor, int]:
    """The ``pairwise`` rule given its draw: for each (i, j) in order, project h_i off r_j.

    Projection happens only if h_i·r_j < 0 at the visit (strict) and ‖r_j‖² > eps; r_j = g_j
    (``"original"``) or the current h_j (``"projected"``).

    Args:
        gramian: [K, K] G = J Jᵀ.
        pairs: [P, 2] rows (projected task, reference task), from :func:`sample_pairs`.
        reference: ``"original"`` or ``"projected"``.
        eps: the smallest ‖r_j‖² projected against.

    Returns:
        ``(W [K, K] float64, projections)`` with H = W J.
    """
    g, noise = _as_array(gramian), _rounding(gramian)
    coefficients = np.eye(g.shape[0])
    projections = 0
    for i, j in pairs.tolist():
        if reference == "original":
            ref = _unit(g.shape[0], j)
            squared_norm = g[j, j]
        else:
            ref = coefficients[j].copy()
            squared_norm = _squared_norm(g, ref, noise)
        dot = float(coefficients[i] @ g @ ref)
        if dot < 0 and squared_norm > eps:
            coefficients[i] = coefficients[i] - (dot / squared_norm) * ref
            projections += 1
    return torch.from_numpy(coefficients), projections


def project_symmetric(
    gramian: Tensor, permutations: Tensor, *, eps: float = 1e-12
) -> tuple[Tensor, int]:
    """PCGrad (Yu et al., NeurIPS 2020, Algorithm 1): every task projected off every other.

    For each task i, h = g_i; for j in ``permutations[i]`` (skipping i), if h·g_j < 0 and
    ‖g_j‖² > eps, h ← h − (h·g_j / ‖g_j‖²) g_j. This is the ``symmetric`` reference mode; it
    ignores the priorities.

    Args:
        gramian: [K, K] G = J Jᵀ.
        permutations: [K, K] one order of all tasks per task (:func:`sample_permutations`).
        eps: the smallest ‖g_j‖² projected against.

    Returns:
        ``(W [K, K] float64, projections)`` with H = W J.
    """
    g = _as_array(gramian)
    num_tasks = g.shape[0]
    coefficients = np.eye(num_tasks)
    projections = 0
    for i, row in enumerate(permutations.tolist()):
        for j in row:
            if j == i:
                continue
            dot = float(coefficients[i] @ g[:, j])
            if dot < 0 and g[j, j] > eps:
                coefficients[i, j] -= dot / g[j, j]
                projections += 1
    return torch.from_numpy(coefficients), projections


def _as_array(gramian: Tensor) -> Array:
    return gramian.detach().to(device="cpu", dtype=torch.float64).numpy()


def _rounding(gramian: Tensor) -> float:
    """The relative rounding of Gramian entries computed in the gradients' dtype."""
    dtype = gramian.dtype if gramian.dtype.is_floating_point else torch.float64
    return 64.0 * torch.finfo(dtype).eps


def _unit(size: int, index: int) -> Array:
    unit = np.zeros(size)
    unit[index] = 1.0
    return unit


def _squared_norm(gramian: Array, coefficients: Array, noise: float) -> float:
    """‖Σ_k c_k g_k‖², or 0 when it is below the rounding of its own computation.

    A projected gradient that cancelled to (numerically) zero must not serve as a reference:
    its direction would be rounding noise.
    """
    value = float(coefficients @ gramian @ coefficients)
    magnitude = float(np.abs(coefficients) @ np.sqrt(np.abs(np.diag(gramian)))) ** 2
    return value if value > noise * magnitude else 0.0


# -- the method -------------------------------------------------------------------------------


@METHODS.register("wpcgrad")
class WeightedPCGrad(WeightedMethod):
    """wPCGrad: task priorities decide, in each conflict, which gradient is projected.

    PCGrad removes conflicts but cannot state priorities; loss weights state priorities but also
    rescale tasks that do not conflict. wPCGrad replaces the loss weights by a probability
    distribution p over the tasks: each call draws an order (Plackett–Luce, task i first with
    probability p_i), walks it, and projects each gradient off the earlier ones it conflicts
    with (g_i·g_j < 0). The first-drawn gradient stays intact; without conflict the update is
    the plain sum, bit for bit, whatever p. Specification: ``spec/wpcgrad.md`` of the project.

    Args:
        priorities: static priorities w ≥ 0, p = w/Σw over the tasks of the call: a mapping
            task → weight, or one weight per row.
        source: where p comes from: ``"static"`` (``priorities``; the default when they are
            given), ``"uniform"`` (the paper's baseline; the default otherwise),
            ``"loss_power"`` (p_i ∝ (L̄_i + eps)^γ with L̄_i the previous epoch's mean loss;
            uniform during the first epoch) or ``"weighting"`` (``weighting``'s weights,
            normalized).
        gamma: γ of ``"loss_power"`` (γ = 0 gives uniform p).
        relative_to_first_epoch: ``"loss_power"`` on L̄_i divided by the first epoch's mean
            (ours, not the paper's).
        weighting: a loss weighting or its registry key, for ``source="weighting"``.
        mode: ``"sequential"`` (default: one Plackett–Luce order, each task projected off the
            earlier ones), ``"pairwise"`` (each pair once in random order, i projected off j
            with probability p_j/(p_i + p_j)) or ``"symmetric"`` (the original PCGrad, every
            task off every other; ignores p; for comparisons).
        reference: the gradients projected against: ``"original"`` (default, as PCGrad) or
            ``"projected"`` (the earlier tasks' projected gradients). Not with ``symmetric``.
        reduction: ``"sum"`` (default, as PCGrad) or ``"mean"`` of the projected gradients.
        resample_every: draw a new order every this many calls (default 1, every step).
        eps: no projection onto a gradient with ‖g‖² ≤ eps (so gradients below 1e-6 in norm
            are never projected against at the default; 0 makes the method scale-invariant);
            also keeps ``loss_power`` finite for zero losses.
        seed: seeds the method's own generator, saved in ``state_dict()``. Ranks with the same
            seed and the same calls draw the same orders.

    Priorities replace loss weights: use it with the default ``"equal"`` weighting, since the
    gradients it receives are already loss-weighted. ``"loss_power"`` and ``"weighting"`` learn
    from the losses passed to :meth:`update` (once per step, after it); a statistic takes effect
    from the next call. Granularity is the step's: ``MultiTaskStep(parameter_groups=...)``
    applies the method per group, each group drawing its own order (set ``resample_every`` to
    the number of groups to share one order per step).

    Convention: the sum of the projected gradients (``reduction="sum"``), as PCGrad and torchjd.

    >>> grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> WeightedPCGrad(priorities=[1.0, 0.0])(grads)  # task 0 always first: g2 is projected
    tensor([1., 1.])
    >>> WeightedPCGrad(priorities={"a": 0.0, "b": 1.0})(grads, ["a", "b"])
    tensor([-0.5000,  1.5000])
    """

    name: ClassVar[str] = "wpcgrad"
    summary: ClassVar[str] = (
        "wPCGrad: PCGrad whose projections follow stated task priorities (Bohn et al., 2024)."
    )

    def __init__(
        self,
        *,
        priorities: Mapping[str, float] | Sequence[float] | None = None,
        source: Source | None = None,
        gamma: float = 1.0,
        relative_to_first_epoch: bool = False,
        weighting: Weighting | str | None = None,
        mode: Mode = "sequential",
        reference: Reference = "original",
        reduction: Reduction = "sum",
        resample_every: int = 1,
        eps: float = 1e-12,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if source is None:
            source = "static" if priorities is not None else "uniform"
        check_choice("source", source, _SOURCES)
        check_choice("mode", mode, _MODES)
        check_choice("reference", reference, _REFERENCES)
        check_choice("reduction", reduction, _REDUCTIONS)
        self.priorities = _checked_priorities(priorities)
        if source == "static" and self.priorities is None:
            raise ValueError(
                "`source='static'` needs `priorities`: give one weight per task, e.g. "
                "priorities={'seg': 2.0, 'depth': 1.0}."
            )
        if source != "static" and self.priorities is not None:
            raise ValueError(
                f"`priorities` are static task priorities; they do not apply with "
                f"source={source!r}. Drop `priorities` or set source='static'."
            )
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, (int, float))
            or not math.isfinite(gamma)
        ):
            raise ValueError(f"`gamma` must be a finite number; got {gamma!r}.")
        if not isinstance(relative_to_first_epoch, bool):
            raise TypeError(
                f"`relative_to_first_epoch` must be True or False; got {relative_to_first_epoch!r}."
            )
        if isinstance(weighting, str):
            weighting = WEIGHTINGS.create(weighting)
        if source == "weighting" and not isinstance(weighting, Weighting):
            raise ValueError(
                "`source='weighting'` needs `weighting`: a loss weighting or its registry key, "
                f"e.g. weighting='dwa'; got {weighting!r}."
            )
        if source != "weighting" and weighting is not None:
            raise ValueError(
                f"`weighting` sets the priorities only with source='weighting'; got "
                f"source={source!r}. Drop `weighting` or set source='weighting'."
            )
        if mode == "symmetric" and reference != "original":
            raise ValueError(
                "`mode='symmetric'` is PCGrad, which projects against the original gradients; "
                "set reference='original'."
            )
        if isinstance(resample_every, bool) or not isinstance(resample_every, int):
            raise ValueError(
                f"`resample_every` must be a positive integer; got {resample_every!r}."
            )
        if resample_every < 1:
            raise ValueError(f"`resample_every` must be a positive integer; got {resample_every}.")
        if (
            isinstance(eps, bool)
            or not isinstance(eps, (int, float))
            or not (math.isfinite(eps) and eps >= 0)
        ):
            raise ValueError(f"`eps` must be finite and non-negative; got {eps!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer; got {seed!r}.")
        self.source: Source = source
        self.gamma = float(gamma)
        self.relative_to_first_epoch = relative_to_first_epoch
        self.weighting = weighting
        self.mode: Mode = mode
        self.reference: Reference = reference
        self.reduction: Reduction = reduction
        self.resample_every = resample_every
        self.eps = float(eps)
        self.seed = seed
        self.generator = torch.Generator()
        self.reset()

    def reset(self) -> None:
        """Reseed the generator and forget the draws and loss statistics."""
        self.generator.manual_seed(self.seed)
        self._calls = 0
        self._draw: Tensor | None = None
        self._epoch: int | None = None
        self._epoch_sums: dict[str, float] = {}
        self._epoch_counts: dict[str, int] = {}
        self._previous_means: dict[str, float] = {}
        self._first_means: dict[str, float] = {}
        self._weighting_values: dict[str, float] = {}
        self._last_projections = 0
        self._last_first: int | str | None = None

    # -- priorities -----------------------------------------------------------------------

    def probabilities(self, tasks: Sequence[str] | None, num_tasks: int) -> Tensor:
        """[K] float64 p for the tasks of a call (rows, in order), summing to 1."""
        if self.source == "uniform":
            return torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        if self.source == "static":
            return static_probabilities(self._static_weights(tasks, num_tasks))
        names = _need_names(tasks, self.source)
        if self.source == "weighting":
            if not all(t in self._weighting_values for t in names):
                return torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
            values = torch.tensor([self._weighting_values[t] for t in names], dtype=torch.float64)
            return static_probabilities(values)
        if not all(t in self._previous_means for t in names):
            # First epoch (or a task not seen last epoch): uniform.
            return torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        means = torch.tensor([self._previous_means[t] for t in names], dtype=torch.float64)
        if self.relative_to_first_epoch:
            first = torch.tensor([self._first_means[t] for t in names], dtype=torch.float64)
            means = (means + self.eps) / (first + self.eps)
        return loss_power_probabilities(means, gamma=self.gamma, eps=self.eps)

    def _static_weights(self, tasks: Sequence[str] | None, num_tasks: int) -> Tensor:
        priorities = self.priorities
        if isinstance(priorities, dict):
            names = _need_names(tasks, "static")
            missing = [t for t in names if t not in priorities]
            if missing:
                raise KeyError(
                    f"`priorities` has no weight for task(s) {missing}; it names "
                    f"{sorted(priorities)}. Add them to `priorities`."
                )
            return torch.tensor([priorities[t] for t in names], dtype=torch.float64)
        assert priorities is not None  # checked in __init__
        if len(priorities) != num_tasks:
            raise ValueError(
                f"`priorities` has {len(priorities)} weights but the gradients have {num_tasks} "
                "rows; give one weight per task, or a mapping task → weight."
            )
        return torch.tensor(list(priorities), dtype=torch.float64)

    def update(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> None:
        """Learn the priorities of the next calls from this step's losses.

        Only ``"loss_power"`` (mean loss per task and epoch) and ``"weighting"`` (the
        weighting's normalized weights, and its own update) use it; otherwise a no-op.

        Args:
            losses: [K] this step's detached, unweighted losses of ``tasks``.
            tasks: the K task names.
            epoch: the 0-based epoch (required for ``"loss_power"``).
        """
        if self.source == "weighting":
            assert self.weighting is not None  # checked in __init__
            values = self.weighting(losses, tasks, epoch=epoch)
            self.weighting.update(losses, tasks, epoch=epoch)
            self._weighting_values = dict(zip(tasks, values.tolist(), strict=True))
            return
        if self.source != "loss_power":
            return
        if epoch is None or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                "wPCGrad's loss_power priorities average the losses per epoch: call "
                f"`update(losses, tasks, epoch=e)` with the 0-based epoch; got epoch={epoch!r}."
            )
        loss_values = losses.detach().reshape(-1).tolist()
        if len(loss_values) != len(tasks):
            raise ValueError(f"`losses` has {len(loss_values)} loss_values for {len(tasks)} tasks.")
        for task, value in zip(tasks, loss_values, strict=True):
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"wPCGrad's loss_power priorities need finite non-negative losses; task "
                    f"{task!r} has {value}. Shift a loss that can go negative (e.g. add a "
                    "constant) or use source='static'."
                )
        if epoch != self._epoch:
            self._close_epoch()
            self._epoch = epoch
        for task, value in zip(tasks, loss_values, strict=True):
            self._epoch_sums[task] = self._epoch_sums.get(task, 0.0) + value
            self._epoch_counts[task] = self._epoch_counts.get(task, 0) + 1

    def _close_epoch(self) -> None:
        if not self._epoch_counts:
            return
        self._previous_means = {
            task: self._epoch_sums[task] / count for task, count in self._epoch_counts.items()
        }
        for task, mean in self._previous_means.items():
            self._first_means.setdefault(task, mean)
        self._epoch_sums, self._epoch_counts = {}, {}

    # -- combination ----------------------------------------------------------------------

    def _coefficients(
        self, per_task_grads: Tensor, tasks: Sequence[str] | None
    ) -> tuple[Tensor, int]:
        """[K, K] W (H = W J) for this call, drawing from the generator as needed."""
        num_tasks = per_task_grads.shape[0]
        # [K, K]; formed from a rescaled copy where the float32 product overflows (entries
        # around 1e19).
        gramian = self.gramian(per_task_grads)
        # PCGrad ignores the priorities, so the symmetric mode needs none.
        p = None if self.mode == "symmetric" else self.probabilities(tasks, num_tasks)
        draw = self._next_draw(p, num_tasks)
        if self.mode == "sequential":
            first = int(draw[0])
            self._last_first = first if tasks is None else tasks[first]
            return project_in_order(gramian, draw, reference=self.reference, eps=self.eps)
        if self.mode == "pairwise":
            return project_pairs(gramian, draw, reference=self.reference, eps=self.eps)
        return project_symmetric(gramian, draw, eps=self.eps)

    def _next_draw(self, p: Tensor | None, num_tasks: int) -> Tensor:
        cached = self._draw
        is_stale = cached is None or self._draw_size(cached) != num_tasks
        if is_stale or self._calls % self.resample_every == 0:
            if p is None:
                cached = sample_permutations(num_tasks, self.generator)
            elif self.mode == "sequential":
                cached = sample_order(p, self.generator)
            else:
                cached = sample_pairs(p, self.generator)
            self._draw = cached
        self._calls += 1
        assert cached is not None
        return cached

    def _draw_size(self, draw: Tensor) -> int:
        if self.mode == "pairwise":
            return int((1 + math.isqrt(1 + 8 * draw.shape[0])) // 2)
        return int(draw.shape[0])

    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [K] the weight of each original gradient in the update (draws an order)."""
        num_tasks = per_task_grads.shape[0]
        self._last_first = None
        if num_tasks == 1:
            self._last_projections = 0
            return per_task_grads.new_ones(1)
        coefficients, self._last_projections = self._coefficients(per_task_grads, tasks)
        combined = coefficients.sum(dim=0)
        if self.reduction == "mean":
            combined = combined / num_tasks
        return combined.to(device=per_task_grads.device, dtype=per_task_grads.dtype)

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [n] the sum (or mean) of the projected gradients."""
        weights = self.weights(per_task_grads, tasks)
        self._last_weights = weights.tolist()
        if self._last_projections == 0:
            # No projection: the plain sum exactly, not a weighted sum with unit weights.
            if self.reduction == "mean":
                return per_task_grads.mean(dim=0)
            return per_task_grads.sum(dim=0)
        return weights @ per_task_grads

    def diagnostics(self) -> dict[str, Any]:
        """The weights, the number of projections and (sequential) the first-drawn row."""
        result = super().diagnostics()
        if self._last_weights is not None:
            result["projections"] = self._last_projections
            if self._last_first is not None:
                result["first_task"] = self._last_first
        return result

    # -- state ----------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """Generator, draw counter, cached draw and loss statistics: a resumed run draws alike."""
        return {
            "generator": self.generator.get_state(),
            "calls": self._calls,
            "draw": self._draw,
            "epoch": -1 if self._epoch is None else self._epoch,
            "epoch_sums": dict(self._epoch_sums),
            "epoch_counts": dict(self._epoch_counts),
            "previous_means": dict(self._previous_means),
            "first_means": dict(self._first_means),
            "weighting_values": dict(self._weighting_values),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        self.generator.set_state(state["generator"])
        self._calls = int(state["calls"])
        self._draw = state["draw"]
        epoch = int(state["epoch"])
        self._epoch = None if epoch < 0 else epoch
        self._epoch_sums = dict(state["epoch_sums"])
        self._epoch_counts = dict(state["epoch_counts"])
        self._previous_means = dict(state["previous_means"])
        self._first_means = dict(state["first_means"])
        self._weighting_values = dict(state["weighting_values"])

    def extra_repr(self) -> str:
        """The options that differ from the defaults, and the seed."""
        parts = []
        if self.priorities is not None:
            parts.append(f"priorities={self.priorities}")
        parts.append(f"source={self.source!r}")
        if self.source == "loss_power":
            parts.append(f"gamma={self.gamma}")
            if self.relative_to_first_epoch:
                parts.append("relative_to_first_epoch=True")
        parts += [f"mode={self.mode!r}", f"reference={self.reference!r}"]
        if self.reduction != "sum":
            parts.append(f"reduction={self.reduction!r}")
        if self.resample_every != 1:
            parts.append(f"resample_every={self.resample_every}")
        if self.eps != 1e-12:
            parts.append(f"eps={self.eps}")
        parts.append(f"seed={self.seed}")
        return ", ".join(parts)


def _checked_priorities(
    priorities: Mapping[str, float] | Sequence[float] | None,
) -> dict[str, float] | list[float] | None:
    if priorities is None:
        return None
    if isinstance(priorities, Mapping):
        items = [(f"priorities[{task!r}]", value) for task, value in priorities.items()]
    elif isinstance(priorities, (str, bytes)) or not isinstance(priorities, Sequence):
        raise TypeError(
            f"`priorities` must map task → weight or list one weight per task; got {priorities!r}."
        )
    else:
        items = [(f"priorities[{i}]", value) for i, value in enumerate(priorities)]
    if not items:
        raise ValueError("`priorities` is empty; give one weight per task.")
    for label, value in items:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ValueError(f"`{label}` must be a finite number ≥ 0; got {value!r}.")
    if all(value == 0 for _, value in items):
        raise ValueError("`priorities` are all 0; at least one task needs a positive weight.")
    if isinstance(priorities, Mapping):
        return {str(task): float(value) for task, value in priorities.items()}
    return [float(value) for value in priorities]


def _need_names(tasks: Sequence[str] | None, source: str) -> list[str]:
    if tasks is None:
        raise ValueError(
            f"wPCGrad with per-task priorities ({source}) needs the task names: call it as "
            "`method(per_task_grads, tasks)` (the step API does), or give `priorities` as one "
            "weight per row."
        )
    return list(tasks)
