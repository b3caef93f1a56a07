"""PriorityMap: a serializable snapshot of which task owns which channels of each connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskprio.priority._connections import Connection
from taskprio.priority._strength import owner_shares


@dataclass(frozen=True)
class LayerPriority:
    """The priority of one connection's channels.

    Attributes:
        name: the shared layer's qualified name.
        owner: per output channel, the index of the owning task.
        shares: task → fraction of the layer's channels it owns.
        is_degenerate: one task owns every channel (all normalized shares equal).
    """

    name: str
    owner: tuple[int, ...]
    shares: dict[str, float]
    is_degenerate: bool


@dataclass(frozen=True)
class PriorityMap:
    """Per connection, the owner of each channel and the share of channels per task.

    >>> import torch
    >>> from torch import nn
    >>> from taskprio.nn import TaskBatchNorm2d
    >>> conv, norm = nn.Conv2d(1, 3, 1), TaskBatchNorm2d(3, ("a", "b"))
    >>> with torch.no_grad():
    ...     norm.norms["b"].weight[0] = 2.0
    >>> snapshot = PriorityMap.from_connections([Connection("conv", conv, norm)], ("a", "b"))
    >>> snapshot.layers[0].owner
    (1, 0, 0)
    >>> snapshot.to_dict()["layers"][0]["shares"]
    {'a': 0.6666666666666666, 'b': 0.3333333333333333}
    """

    tasks: tuple[str, ...]
    layers: tuple[LayerPriority, ...]

    @classmethod
    def from_connections(
        cls, connections: Sequence[Connection], tasks: Sequence[str]
    ) -> PriorityMap:
        """Read the current priority of every connection."""
        tasks = tuple(tasks)
        layers = []
        for connection in connections:
            owner = connection.owner(tasks)
            shares = owner_shares(owner, len(tasks)).tolist()
            layers.append(
                LayerPriority(
                    name=connection.name,
                    owner=tuple(owner.tolist()),
                    shares=dict(zip(tasks, shares, strict=True)),
                    is_degenerate=bool((owner == owner[0]).all()),
                )
            )
        return cls(tasks=tasks, layers=tuple(layers))

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and dicts, ready for JSON."""
        return {
            "tasks": list(self.tasks),
            "layers": [
                {
                    "name": layer.name,
                    "owner": list(layer.owner),
                    "shares": dict(layer.shares),
                    "is_degenerate": layer.is_degenerate,
                }
                for layer in self.layers
            ],
        }
