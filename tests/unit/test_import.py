"""``import taskprio`` stays light: no CLI, plotting, solver or data-frame libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "cvxpy", "pandas", "tensorboard", "typer", "rich", "taskprio.cli", "scipy")


def test_import_loads_no_heavy_module():
    code = f"import sys, taskprio; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"imported at `import taskprio`: {result.stdout}"


def test_public_names_resolve():
    import taskprio

    for name in taskprio.__all__:
        assert getattr(taskprio, name) is not None
