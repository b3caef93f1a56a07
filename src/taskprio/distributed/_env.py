"""The process group that ``torchrun`` describes, and who this process is in it."""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

# The variables torchrun (and torch.distributed.launch) set in every worker.
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in the job.

    Attributes:
        rank: this process's global rank, 0 ≤ rank < world_size.
        world_size: the number of processes (1 without a process group).
        local_rank: the rank on this machine (selects the GPU).
        device: the device this process trains on.
        backend: the process group's backend (``"gloo"``, ``"nccl"``), or None without one.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main_process(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0


def init_from_env(
    *,
    backend: str | None = None,
    device: torch.device | str | None = None,
    timeout_s: float = 1800.0,
) -> RankInfo:
    """Join the process group that ``torchrun`` describes in the environment.

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` in every worker; this reads them and initializes the default process group
    once (a second call, or a group initialized by the caller, is reused). Without those
    variables (a plain ``python`` run) nothing is initialized and the process is rank 0 of 1,
    so one training script serves both cases.

    Args:
        backend: the collective backend; None picks ``"nccl"`` when CUDA is available and
            ``"gloo"`` otherwise.
        device: this process's device; None picks ``cuda:LOCAL_RANK`` (and makes it the current
            CUDA device) when CUDA is available, else the CPU.
        timeout_s: how long a collective waits for the other ranks before failing.

    Returns:
        A :class:`RankInfo`.

    Raises:
        ValueError: a torchrun variable is missing or not an integer.

    >>> info = init_from_env()  # a plain run: no torchrun variables
    >>> info.rank, info.world_size, info.backend, info.is_main_process
    (0, 1, None, True)
    """
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if dist.is_available() and dist.is_initialized():
        return _current_info(device)
    if not present:
        chosen = torch.device("cpu") if device is None else torch.device(device)
        return RankInfo(rank=0, world_size=1, local_rank=0, device=chosen, backend=None)
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"The environment sets {present} but not {missing}: launch with `torchrun`, which "
            "sets all of them, or set them yourself."
        )
    if not dist.is_available():
        raise RuntimeError("This PyTorch build has no torch.distributed; install one that has.")
    local_rank = _int_variable("LOCAL_RANK", default=_int_variable("RANK"))
    is_cuda = torch.cuda.is_available()
    chosen_backend = backend if backend is not None else ("nccl" if is_cuda else "gloo")
    chosen_device = _default_device(local_rank) if device is None else device
    chosen_device = torch.device(chosen_device)
    if chosen_device.type == "cuda":
        torch.cuda.set_device(chosen_device)
    dist.init_process_group(
        backend=chosen_backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=chosen_device if chosen_backend == "nccl" else None,
    )
    return _current_info(chosen_device)


def _int_variable(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"The environment variable {name} is not set; launch with torchrun.")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"The environment variable {name} must be an integer; got {value!r}."
        ) from None


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _current_info(device: torch.device | str | None) -> RankInfo:
    backend = str(dist.get_backend())
    local_rank = _int_variable("LOCAL_RANK", default=dist.get_rank())
    if device is None:
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
    return RankInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=torch.device(device),
        backend=backend,
    )


def shutdown() -> None:
    """Leave the process group (a no-op without one); call once at the end of training.

    >>> shutdown()
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group with two or more processes is initialized.

    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes in the default group (1 without a process group).

    >>> world_size()
    1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank in the default group (0 without a process group).

    >>> rank()
    0
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs and writes files.

    >>> is_main_process()
    True
    """
    return rank() == 0


def collective_device(group: dist.ProcessGroup | None = None) -> torch.device:
    """Where tensors handed to a collective of ``group`` must live: CUDA for NCCL, else CPU.

    >>> collective_device()
    device(type='cpu')
    """
    if dist.is_available() and dist.is_initialized() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_seed(seed: int | None = None, *, src: int = 0) -> int:
    """The seed of rank ``src`` on every rank, so all ranks draw the same random decisions.

    Seed the methods' and weightings' generators (``seed=`` of PCGrad, GradDrop, wPCGrad, RLW,
    CSO), the data order and the model initialization with it.

    Args:
        seed: this rank's seed; only rank ``src``'s counts. None on rank ``src`` draws a fresh
            one from the operating system.
        src: the rank whose seed wins.

    Returns:
        The seed, a non-negative integer below 2**63, the same on every rank. Without a process
        group: ``seed`` itself (or a fresh one).

    >>> broadcast_seed(7)
    7
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"`seed` must be a non-negative integer or None; got {seed!r}.")
    own = secrets.randbits(62) if seed is None else seed
    if not is_distributed():
        return own
    value = torch.tensor([own], dtype=torch.int64, device=collective_device())
    dist.broadcast(value, src=src)
    return int(value.item())


def broadcast_module(module: nn.Module, *, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place.

    What ``DistributedDataParallel`` does at construction: call it once after building the
    model (and :func:`taskprio.nn.make_task_specific`), before the first step, so that every
    rank starts from the same weights. A no-op without a process group.

    >>> broadcast_module(nn.Linear(2, 2))
    """
    if not is_distributed():
        return
    tensors = list(_state_tensors(module))
    for bucket in _same_dtype_device(tensors):
        flat = torch.cat([t.detach().reshape(-1) for t in bucket])
        staging = flat.to(collective_device())
        dist.broadcast(staging, src=src)
        flat = staging.to(flat.device)
        offset = 0
        with torch.no_grad():
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def _state_tensors(module: nn.Module) -> Iterator[Tensor]:
    seen: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen and t.numel() > 0:
            seen.add(id(t))
            yield t


def _same_dtype_device(tensors: list[Tensor]) -> list[list[Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())
