"""A LeNet-style shared trunk with one small classification head per task, for MultiMNIST."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from taskprio.nn._task_norm import check_tasks


class MultiLeNet(nn.Module):
    """LeNet-style multi-task classifier: a shared trunk and one MLP head per task.

    The usual MultiMNIST model (Sener & Koltun, 2018) with a BatchNorm after every shared conv
    and linear layer, so that each shared layer is directly followed by a norm whose channels
    can be read per connection. Those layers have no bias: the norm's mean subtraction would
    cancel it, leaving a parameter whose gradient is zero.

    Sizes for 28x28 inputs and the default two tasks: 21,410 trunk parameters, 3,060 per head,
    27,530 in all. Without ``batch_norm`` it is Sener & Koltun's network itself: the trunk's
    layers keep their biases, 21,330 trunk parameters, 27,450 in all.

    Args:
        tasks: the task names, one head each, in output order.
        num_classes: classes per task.
        batch_norm: put a BatchNorm after every shared conv and linear layer.

    >>> import torch
    >>> model = MultiLeNet()
    >>> {task: tuple(y.shape) for task, y in model(torch.zeros(2, 1, 28, 28)).items()}
    {'left': (2, 10), 'right': (2, 10)}
    >>> sum(p.numel() for p in model.parameters())
    27530
    >>> sum(p.numel() for p in MultiLeNet(batch_norm=False).parameters())
    27450
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("left", "right"),
        *,
        num_classes: int = 10,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be at least 2, but got {num_classes}.")
        self.num_classes = num_classes

        def norm(norm_class: type[nn.Module], channels: int) -> list[nn.Module]:
            return [norm_class(channels)] if batch_norm else []

        bias = not batch_norm  # a norm's mean subtraction would cancel a bias
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 10, kernel_size=5, bias=bias),  # [B, 10, 24, 24]
            *norm(nn.BatchNorm2d, 10),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, 10, 12, 12]
            nn.Conv2d(10, 20, kernel_size=5, bias=bias),  # [B, 20, 8, 8]
            *norm(nn.BatchNorm2d, 20),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, 20, 4, 4]
            nn.Flatten(),  # [B, 320]
            nn.Linear(320, 50, bias=bias),  # [B, 50]
            *norm(nn.BatchNorm1d, 50),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {
                task: nn.Sequential(
                    nn.Linear(50, 50),  # [B, 50]
                    nn.ReLU(),
                    nn.Linear(50, num_classes),  # [B, num_classes]
                )
                for task in self.tasks
            }
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk once and every head on its features.

        Args:
            x: [B, 1, 28, 28] images.

        Returns:
            Per task, [B, num_classes] logits.
        """
        features = self.trunk(x)  # [B, 50]
        return {task: self.heads[task](features) for task in self.tasks}

    def forward_task(self, x: Tensor, task: str) -> Tensor:
        """Run the trunk and only ``task``'s head: one forward per task, for closures.

        Args:
            x: [B, 1, 28, 28] images.
            task: one of :attr:`tasks`.

        Returns:
            [B, num_classes] logits of ``task``.

        >>> import torch
        >>> model = MultiLeNet().eval()
        >>> x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(model.forward_task(x, "right"), model(x)["right"])
        True
        """
        if task not in self.heads:
            raise ValueError(f"`task` must be one of {list(self.tasks)}, but got {task!r}.")
        features = self.trunk(x)  # [B, 50]
        head: nn.Module = self.heads[task]
        logits: Tensor = head(features)  # [B, num_classes]
        return logits

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, num_classes={self.num_classes}"
