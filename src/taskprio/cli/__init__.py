"""The ``taskprio`` command line.

Commands: ``train``, ``bench``, ``report``, ``pareto``, ``pareto-front``, ``methods``, ``data``.

Loaded only by the console script, never by ``import taskprio``.
"""

from taskprio.cli._main import app, main

__all__ = ["app", "main"]
