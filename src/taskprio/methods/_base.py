"""The base class of gradient aggregation methods and their registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from taskprio._registry import Registry
from taskprio.methods._gramian import gramian as form_gramian

if TYPE_CHECKING:
    from taskprio.optim import MultiTaskStep, StepRecord, TaskLossClosure


class Method(nn.Module, ABC):
    """Combines K per-task gradients of the shared parameters into one update direction.

    Subclasses implement :meth:`forward` over a [K, n] matrix and set the class attributes;
    state lives in buffers or ``get_extra_state`` so ``state_dict()`` captures it. The step API
    (:class:`taskprio.MultiTaskStep`) reads only the class attributes, never the name.

    Class attributes:
        name: the registry key.
        summary: one line for ``taskprio methods``.
        is_linear: True when the result is always the plain sum of the rows; the step then runs
            a single backward of the weighted loss sum instead of K.
        steps_optimizer: True when the method runs the optimizer itself (e.g. several steps per
            batch); the step API then hands the whole step to :meth:`run_step`.
        uses_representation: True for the "upper bound" variants (MGDA-UB, Aligned-MTL-UB)
            that compute task weights from the gradients of the losses with respect to the
            shared representation; the step then needs ``features=`` and the method must be a
            :class:`WeightedMethod`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    is_linear: ClassVar[bool] = False
    steps_optimizer: ClassVar[bool] = False
    uses_representation: ClassVar[bool] = False

    # The matrix of the call in progress and its Gramian once formed (see :meth:`gramian`).
    _call_matrix: Tensor | None = None
    _call_gramian: Tensor | None = None
    _last_gramian: Tensor | None = None

    def __call__(
        self,
        per_task_grads: Tensor,
        tasks: Sequence[str] | None = None,
        *,
        gramian: Tensor | None = None,
    ) -> Tensor:
        """Check the input, then aggregate it.

        Args:
            per_task_grads: [K, n] one flattened (already loss-weighted) gradient per task.
            tasks: the K task names in row order (methods with per-task options use them).
            gramian: [K, K] ``per_task_grads @ per_task_grads.T`` if the caller has it already;
                formed on demand otherwise (see :meth:`gramian`).

        Returns:
            [n] the combined direction.
        """
        if per_task_grads.ndim != 2:
            raise ValueError(
                f"`per_task_grads` must be 2-D [K, n]; got shape {tuple(per_task_grads.shape)}. "
                "Stack one flattened gradient per task."
            )
        if per_task_grads.shape[0] == 0:
            raise ValueError("`per_task_grads` has no rows; give at least one task's gradient.")
        if tasks is not None and len(tasks) != per_task_grads.shape[0]:
            raise ValueError(
                f"`tasks` names {len(tasks)} tasks but `per_task_grads` has "
                f"{per_task_grads.shape[0]} rows."
            )
        num_tasks = per_task_grads.shape[0]
        if gramian is not None and gramian.shape != (num_tasks, num_tasks):
            raise ValueError(
                f"`gramian` must be [K, K] = ({num_tasks}, {num_tasks}) for {num_tasks} tasks; "
                f"got shape {tuple(gramian.shape)}. Pass per_task_grads @ per_task_grads.T."
            )
        self._call_matrix, self._call_gramian = per_task_grads, gramian
        self._last_gramian = None
        try:
            result: Tensor = super().__call__(per_task_grads, tasks)
            self._last_gramian = self._call_gramian
        finally:
            self._call_matrix = self._call_gramian = None
        return result

    def gramian(self, per_task_grads: Tensor) -> Tensor:
        """[K, K] G = J Jᵀ of the matrix being combined, formed at most once per call.

        Within a call, the first request forms G (:func:`taskprio.methods.gramian`) and later
        ones, and the step's conflict statistics (:attr:`last_gramian`), reuse it. Any other
        matrix, or a call of :meth:`forward` or ``weights`` outside ``method(J)``, gets a fresh
        G.

        >>> import torch
        >>> method = create("mean")
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> _ = method(J)
        >>> method.last_gramian is None  # the mean needs no Gramian
        True
        >>> method.gramian(J)
        tensor([[1., 0.],
                [0., 4.]])
        """
        if per_task_grads is not self._call_matrix:
            return form_gramian(per_task_grads)
        if self._call_gramian is None:
            self._call_gramian = form_gramian(per_task_grads)
        return self._call_gramian

    @property
    def last_gramian(self) -> Tensor | None:
        """The Gramian the last call formed or was given; None when the method needed none."""
        return self._last_gramian

    @abstractmethod
    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """Aggregate [K, n] per-task gradients into an [n] direction."""

    def run_step(
        self, step: MultiTaskStep, closure: TaskLossClosure, *, epoch: int | None
    ) -> StepRecord:
        """Run a whole step (only for methods with ``steps_optimizer``)."""
        raise NotImplementedError(f"{self} combines gradients; it does not run steps itself.")

    def update(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> None:
        """Learn from a finished step's losses (present tasks only); a no-op by default.

        Called by the step API after the optimizer step, like :meth:`Weighting.update`, so a
        loss statistic (e.g. wPCGrad's loss-based priorities) takes effect from the next step.
        """

    def diagnostics(self) -> dict[str, Any]:
        """Numbers about the last call worth logging (e.g. projections made); none by default."""
        return {}

    def __str__(self) -> str:
        return type(self).__name__


class WeightedMethod(Method):
    """A method whose result is a weighted sum of the rows: ``weights(G) @ G``.

    Subclasses implement :meth:`weights`; :meth:`forward` combines. The last weights are kept
    for :meth:`diagnostics` (``task_weights``), so the step record shows them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_weights: list[float] | None = None

    @abstractmethod
    def weights(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] per-task gradients → [K] weights, on the input's device and dtype."""

    def forward(self, per_task_grads: Tensor, tasks: Sequence[str] | None = None) -> Tensor:
        """[K, n] → [n] = weights @ per_task_grads."""
        weights = self.weights(per_task_grads, tasks).to(per_task_grads.dtype)
        self._last_weights = weights.tolist()
        return weights @ per_task_grads

    def diagnostics(self) -> dict[str, Any]:
        """The weights of the last call, by row."""
        return {} if self._last_weights is None else {"task_weights": self._last_weights}


def check_choice(option: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming ``option`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{option}` must be one of {choices}; got {value!r}.")


METHODS: Registry[Method] = Registry("method")


def available() -> list[str]:
    """The registry keys of every method.

    >>> "sum" in available()
    True
    """
    return METHODS.names()


def create(name: str, **options: Any) -> Method:
    """Build the method registered as ``name`` with its options.

    >>> create("sum")
    Sum()
    """
    return METHODS.create(name, **options)
