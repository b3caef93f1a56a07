"""Checkpoints: atomic, checksummed files of a run's whole state, loaded with ``weights_only``.

A checkpoint file is one header line ``taskprio-checkpoint 1 sha256=<hex> bytes=<n>`` followed
by a ``torch.save`` payload of exactly ``n`` bytes whose SHA-256 is ``<hex>``. It is written to a
temporary file in the same directory, flushed and fsync'ed, then renamed over its final name
(``os.replace`` is atomic), and the directory is fsync'ed: a crash leaves either the old file
or the new one, never a torn one. A file that is truncated, corrupted or not a checkpoint fails
the checksum and :func:`latest_checkpoint` falls back to the previous good one.

>>> import tempfile
>>> directory = Path(tempfile.mkdtemp())
>>> path = save_checkpoint(directory, {"step": 3, "w": torch.ones(2)}, step=3)
>>> path.name
'step-00000003.ckpt'
>>> load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_MAGIC = b"taskprio-checkpoint"
_NAME = re.compile(r"^step-(\d{8,})\.ckpt$")

# Keys of a run's checkpoint (the trainer writes them all).
MODEL = "model"
OPTIMIZER = "optimizer"
SCHEDULER = "scheduler"
STEP_STATE = "multitask_step"  # the method's and the weighting's state
RNG = "rng"  # python, numpy, torch (CPU and CUDA) generator states
DATA_ORDER = "data_order"  # the batch-order generator's state at the start of the epoch
EPOCH = "epoch"  # the epoch in progress (0-based)
BATCH = "batch"  # batches of that epoch already done
GLOBAL_STEP = "global_step"
EPOCH_LOSSES = "epoch_losses"  # running per-task loss sums and counts of the epoch
COUNTERS = "counters"  # skipped non-finite steps, training time so far
CONFIG = "config"
VERSION = "taskprio_version"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (truncated, corrupted, or not a checkpoint)."""


def checkpoint_path(directory: Path, step: int) -> Path:
    """Where the checkpoint of global step ``step`` lives under ``directory``."""
    return directory / f"step-{step:08d}.ckpt"


def save_checkpoint(directory: Path, state: Mapping[str, Any], *, step: int, keep: int = 2) -> Path:
    """Write ``state`` atomically as ``directory/step-<step>.ckpt``; keep the newest ``keep``.

    Args:
        directory: the checkpoint directory (created if missing).
        state: tensors and plain Python data only (it is loaded with ``weights_only=True``).
        step: the global step the state is at; it orders checkpoints.
        keep: how many checkpoints to keep, newest first; older ones are deleted after the
            new one is safely written.

    Returns:
        The file written.
    """
    if keep < 1:
        raise ValueError(f"`keep` must be at least 1, but got {keep}.")
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = f"{_MAGIC.decode()} {FORMAT_VERSION} sha256={digest} bytes={len(payload)}\n"
    path = checkpoint_path(directory, step)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(header.encode())
        file.write(payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_directory(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify a checkpoint file; tensors are loaded on the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted or not a checkpoint.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {error}") from None
    header, newline, payload = data.partition(b"\n")
    match = re.fullmatch(rb"taskprio-checkpoint (\d+) sha256=([0-9a-f]{64}) bytes=(\d+)", header)
    if not newline or match is None:
        raise CheckpointError(f"{str(path)!r} is not a taskprio checkpoint (bad header).")
    if int(match[1]) > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {int(match[1])}; this taskprio reads "
            f"format {FORMAT_VERSION} or older: upgrade taskprio."
        )
    if len(payload) != int(match[3]):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated: {len(payload)} of {int(match[3])} bytes."
        )
    if hashlib.sha256(payload).hexdigest() != match[2].decode():
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its checksum differs.")
    state: dict[str, Any] = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return state


def list_checkpoints(directory: Path) -> list[Path]:
    """The checkpoint files under ``directory``, oldest first (by step)."""
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint under ``directory`` that verifies, with its state.

    A newer file that fails verification is skipped with a warning naming it and why, and the
    previous good one is used. None when there is no good checkpoint.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as error:  # noqa: PERF203 (a few files, read once)
            warnings.warn(f"{error} Using the previous checkpoint.", stacklevel=2)
    return None


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
