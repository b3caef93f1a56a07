"""The ``taskprio`` command line: ``train``, ``bench``, ``report``, ``methods``, ``data``.

Loaded only by the console script, never by ``import taskprio``.
"""

from taskprio.cli._main import app, main

__all__ = ["app", "main"]
