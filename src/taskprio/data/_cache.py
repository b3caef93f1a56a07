"""Reading and writing the ``.npz`` caches that every data set is built into."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from taskprio.data._paths import data_root

KEY_VERSION = "format_version"


def build_command(dataset: str, root: Path | None) -> str:
    """The shell command that builds ``dataset``'s cache under ``root``.

    Args:
        dataset: the subcommand of ``python -m taskprio.data``, e.g. ``"qm9"``.
        root: the data root; None (or the default root) gives the command without ``--root``.

    Returns:
        The command, e.g. ``"python -m taskprio.data qm9 --root /srv/data"``.

    >>> build_command("qm9", Path("/srv/data"))
    'python -m taskprio.data qm9 --root /srv/data'
    """
    if root is None or root == data_root():
        return f"python -m taskprio.data {dataset}"
    return f"python -m taskprio.data {dataset} --root {root}"


def write_npz(out: Path, arrays: Mapping[str, NDArray[np.generic]]) -> Path:
    """Write a compressed ``.npz`` atomically: a temporary file, then ``os.replace``.

    A reader never sees a half-written cache, and an interrupted build leaves no file behind.

    Args:
        out: the cache to write; its folder is created if needed.
        arrays: key → array.

    Returns:
        ``out``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as file:
            # numpy's stub types **kwds like its `allow_pickle: bool` keyword.
            np.savez_compressed(file, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def read_npz(
    path: Path,
    keys: Sequence[str],
    *,
    title: str,
    format_version: int,
    missing_message: str,
    rebuild_hint: str,
) -> dict[str, NDArray[np.generic]]:
    """Read ``keys`` from a cache, checking that it exists and has the expected format version.

    Args:
        path: the ``.npz`` file.
        keys: the arrays to read (besides ``format_version``).
        title: the data set's name in messages, e.g. ``"QM9"``.
        format_version: the version this code reads.
        missing_message: the FileNotFoundError message when ``path`` does not exist.
        rebuild_hint: appended to the errors about a damaged or outdated cache.

    Returns:
        key → array, for every key in ``keys``.

    Raises:
        FileNotFoundError: no cache (``missing_message``).
        ValueError: an unreadable cache, a missing key, or another format version.
    """
    if not path.is_file():
        raise FileNotFoundError(missing_message)
    arrays: dict[str, NDArray[np.generic]] = {}
    try:
        with np.load(path, allow_pickle=False) as cache:
            version = int(cache[KEY_VERSION])
            if version == format_version:
                arrays = {key: cache[key] for key in keys}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        # np.load raises ValueError for a file that is neither .npz nor .npy.
        raise ValueError(
            f"{title} cache at {path} is unreadable ({type(error).__name__}: {error}). "
            f"{rebuild_hint}"
        ) from error
    if version != format_version:
        raise ValueError(
            f"{title} cache at {path} has format version {version}, but this taskprio reads "
            f"version {format_version}. {rebuild_hint}"
        )
    return arrays
