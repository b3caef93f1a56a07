"""Task priority from connection strength (CSO): connections, strengths, shares, owners.

A *connection* is a shared Conv/ConvTranspose/Linear layer whose output is the input of one
norm per task. Its output channel p belongs to the task whose normalized connection strength
is largest there.
"""

from taskprio.priority._connections import Connection, ConnectionTracer, discover_connections
from taskprio.priority._map import LayerPriority, PriorityMap
from taskprio.priority._strength import (
    CONNECTED_LAYER_TYPES,
    channel_energy,
    channel_owner,
    channel_rows,
    connection_strength,
    normalized_shares,
    owner_shares,
    rows_to_weight,
)

__all__ = [
    "CONNECTED_LAYER_TYPES",
    "Connection",
    "ConnectionTracer",
    "LayerPriority",
    "PriorityMap",
    "channel_energy",
    "channel_owner",
    "channel_rows",
    "connection_strength",
    "discover_connections",
    "normalized_shares",
    "owner_shares",
    "rows_to_weight",
]
