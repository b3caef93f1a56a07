"""Where taskprio looks for data sets and their sources."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "TASKPRIO_DATA"
DEFAULT_DATA_DIR = "data"


def data_root() -> Path:
    """The folder that holds built data sets and, under ``sources/``, the files they come from.

    It is ``$TASKPRIO_DATA`` when that environment variable is set and non-empty (``~`` is
    expanded), else ``data`` relative to the current working directory, so commands run from
    the repository root find ``<repo>/data``. The path is returned as given, not resolved.

    Returns:
        The data root, e.g. ``Path("data")``.

    >>> from unittest import mock
    >>> with mock.patch.dict("os.environ", {"TASKPRIO_DATA": "/srv/taskprio"}):
    ...     str(data_root())
    '/srv/taskprio'
    >>> with mock.patch.dict("os.environ", {"TASKPRIO_DATA": ""}):
    ...     str(data_root())
    'data'
    """
    from_env = os.environ.get(DATA_ENV_VAR, "")
    return Path(from_env).expanduser() if from_env else Path(DEFAULT_DATA_DIR)


def sources_dir(root: Path | None = None) -> Path:
    """The folder under the data root where downloaded source archives are kept.

    Args:
        root: data root; :func:`data_root` when None.

    Returns:
        ``<root>/sources``.

    >>> str(sources_dir(Path("/srv/taskprio")))
    '/srv/taskprio/sources'
    """
    return (data_root() if root is None else root) / "sources"
