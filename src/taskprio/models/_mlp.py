"""A multi-layer perceptron with a shared trunk and one head per task, for feature-vector data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from taskprio.nn._task_norm import check_tasks


class MultiTaskMLP(nn.Module):
    """Shared trunk of Linear (+ BatchNorm1d) + ReLU layers, and a small MLP head per task.

    With ``batch_norm`` (the default), every shared Linear is followed by a BatchNorm1d and has
    no bias (the norm's mean subtraction would cancel it); :func:`taskprio.nn.make_task_specific`
    then turns those norms into task-specific ones, one set of statistics and affine parameters
    per task, as CSO needs. Heads have no norms.

    Args:
        in_features: F, the input size.
        outputs: task → number of outputs (classes, or 1 for a binary or regression task), in
            output order.
        hidden_sizes: the widths of the shared layers.
        head_hidden: the width of each head's hidden layer; 0 makes each head one Linear.
        batch_norm: put a BatchNorm1d after every shared Linear.

    >>> import torch
    >>> model = MultiTaskMLP(34, {"mu": 1, "alpha": 1}, hidden_sizes=(64, 64))
    >>> {task: tuple(y.shape) for task, y in model(torch.zeros(5, 34)).items()}
    {'mu': (5, 1), 'alpha': (5, 1)}
    """

    def __init__(
        self,
        in_features: int,
        outputs: Mapping[str, int],
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        head_hidden: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(list(outputs))
        if in_features < 1:
            raise ValueError(f"`in_features` must be positive, but got {in_features}.")
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(
                f"`hidden_sizes` must hold at least one positive width; got {tuple(hidden_sizes)}."
            )
        if head_hidden < 0:
            raise ValueError(f"`head_hidden` must be non-negative, but got {head_hidden}.")
        for task, size in outputs.items():
            if size < 1:
                raise ValueError(f"`outputs['{task}']` must be positive, but got {size}.")
        self.in_features = in_features
        self.outputs = dict(outputs)
        self.hidden_sizes = tuple(hidden_sizes)
        self.head_hidden = head_hidden
        self.batch_norm = batch_norm
        layers: list[nn.Module] = []
        width = in_features
        for size in self.hidden_sizes:
            layers.append(nn.Linear(width, size, bias=not batch_norm))  # [B, size]
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {task: self._head(width, size) for task, size in self.outputs.items()}
        )

    def _head(self, width: int, size: int) -> nn.Module:
        if self.head_hidden == 0:
            return nn.Linear(width, size)
        return nn.Sequential(
            nn.Linear(width, self.head_hidden), nn.ReLU(), nn.Linear(self.head_hidden, size)
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk once and every head on its features.

        Args:
            x: [B, F] inputs.

        Returns:
            Per task, [B, outputs[task]].
        """
        features = self.trunk(x)  # [B, hidden_sizes[-1]]
        return {task: self.heads[task](features) for task in self.tasks}

    def forward_task(self, x: Tensor, task: str) -> Tensor:
        """Run the trunk and only ``task``'s head: one forward per task, for closures.

        Args:
            x: [B, F] inputs.
            task: one of :attr:`tasks`.

        Returns:
            [B, outputs[task]].

        >>> import torch
        >>> model = MultiTaskMLP(3, {"a": 2, "b": 1}).eval()
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(model.forward_task(x, "b"), model(x)["b"])
        True
        """
        if task not in self.heads:
            raise ValueError(f"`task` must be one of {list(self.tasks)}, but got {task!r}.")
        features = self.trunk(x)  # [B, hidden_sizes[-1]]
        head: nn.Module = self.heads[task]
        output: Tensor = head(features)  # [B, outputs[task]]
        return output

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, outputs={self.outputs}, "
            f"hidden_sizes={self.hidden_sizes}, head_hidden={self.head_hidden}, "
            f"batch_norm={self.batch_norm}"
        )
