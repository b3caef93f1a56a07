"""``taskprio methods``: every method and loss weighting with its one-line summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from taskprio.methods import METHODS
from taskprio.weighting import WEIGHTINGS

EXAMPLES = "Example: taskprio methods"


def methods() -> None:
    """List every gradient aggregation method and loss weighting by registry name."""
    table = Table(title="taskprio methods and weightings")
    table.add_column("kind")
    table.add_column("name", style="bold")
    table.add_column("summary")
    for name in METHODS.names():
        table.add_row("method", name, METHODS.get(name).summary)
    for name in WEIGHTINGS.names():
        table.add_row("weighting", name, WEIGHTINGS.get(name).summary)
    Console().print(table)
