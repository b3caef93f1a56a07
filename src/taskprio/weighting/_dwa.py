"""Dynamic weight average: weights from how fast each loss fell per epoch (Liu et al.)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from taskprio.weighting._base import WEIGHTINGS
from taskprio.weighting._per_task import PerTaskWeighting


def dwa_weights(older: Tensor, newer: Tensor, temperature: float) -> Tensor:
    """K · softmax(r / T) with r_t = newer_t / older_t, the descending rate of each loss.

    Args:
        older: [K] each task's average loss in the epoch before last.
        newer: [K] each task's average loss in the last epoch.
        temperature: T; larger is more uniform.

    Returns:
        [K] weights summing to K.

    >>> dwa_weights(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.0]), temperature=2.0)
    tensor([0.8756, 1.1244])
    """
    rates = newer / older
    return older.shape[0] * torch.softmax(rates / temperature, dim=0)


@WEIGHTINGS.register("dwa")
class DWA(PerTaskWeighting):
    """Dynamic weight average: Liu, Johns and Davison, CVPR 2019 (MTAN), arXiv 1803.10704.

    :meth:`update` sums each task's losses per epoch. At epoch e the weights are
    ``K · softmax(r / T)`` over the K present tasks, with r_t = L̄_t(e−1) / L̄_t(e−2) the ratio
    of the task's average training loss over the last two epochs: a task whose loss fell
    less gets more weight. The weights **sum to K**. While a present task has fewer than two
    finished epochs of averages (the first two epochs), all weights are 1. This is MTAN's, LibMTL's
    and ``torchjd.scalarization.DWA``'s rule (TorchJD rolls the epochs with ``step()``; here
    the ``epoch`` argument does).

    The epoch must be given (``step(losses, epoch=e)``) and may not go back; an epoch ends when
    a step comes with a larger one. With partial supervision each task averages over the steps
    it had a loss in; an epoch without a task's loss leaves its history as it was, so its rate
    compares its last two epochs with losses. Losses must keep one sign and not average to 0.

    Args:
        temperature: T (2, as the paper).

    >>> dwa = DWA()
    >>> for epoch, losses in enumerate([[1.0, 1.0], [0.5, 1.0]]):
    ...     dwa.update(torch.tensor(losses), ["seg", "depth"], epoch=epoch)
    >>> dwa(torch.tensor([0.4, 0.9]), ["seg", "depth"], epoch=2)  # seg fell faster: less weight
    tensor([0.8756, 1.1244])
    """

    name: ClassVar[str] = "dwa"
    summary: ClassVar[str] = (
        "K·softmax of each loss's epoch-over-epoch ratio (Liu et al., MTAN, CVPR 2019)."
    )
    # Sums in float64: an epoch of float32 losses would lose digits. ``averages`` holds the
    # epoch before last (column 0) and the last epoch (column 1) that had the task's losses.
    task_buffers: ClassVar[dict[str, tuple[tuple[int, ...], torch.dtype | None, float]]] = {
        "epoch_sums": ((), torch.float64, 0.0),
        "epoch_counts": ((), torch.int64, 0),
        "averages": ((2,), torch.float64, 0.0),
        "num_averages": ((), torch.int64, 0),
    }

    epoch_sums: Tensor
    epoch_counts: Tensor
    averages: Tensor
    num_averages: Tensor

    def __init__(self, *, temperature: float = 2.0) -> None:
        super().__init__()
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(
                f"`temperature` must be positive and finite; got {temperature}. The paper uses 2."
            )
        self.temperature = temperature
        self._epoch: int | None = None

    def _check_epoch(self, epoch: int | None) -> int:
        if epoch is None or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                f"DWA averages the losses per epoch: pass the 0-based `epoch` to the step, "
                f"`step(losses, epoch=e)`; got epoch={epoch!r}."
            )
        if self._epoch is not None and epoch < self._epoch:
            raise ValueError(
                f"DWA's `epoch` went back from {self._epoch} to {epoch}. Pass the epoch of the "
                "run (non-decreasing), or call `reset()` to start over."
            )
        return epoch

    def _history(self, epoch: int) -> tuple[Tensor, Tensor]:
        """[K_seen, 2] averages and [K_seen] their count, as they are during ``epoch``.

        When ``epoch`` is past the one being summed, that one is finished: its averages are
        rolled in here without changing the state (forward is pure; update commits the roll).
        """
        averages, counts = self.averages, self.num_averages
        if self._epoch is None or epoch == self._epoch:
            return averages, counts
        has_losses = self.epoch_counts > 0
        finished = self.epoch_sums / self.epoch_counts.clamp_min(1)
        rolled = torch.stack([averages[:, 1], finished], dim=1)
        averages = torch.where(has_losses.unsqueeze(1), rolled, averages)
        counts = torch.where(has_losses, (counts + 1).clamp_max(2), counts)
        return averages, counts

    def forward(self, losses: Tensor, tasks: Sequence[str], *, epoch: int | None = None) -> Tensor:
        """[K] losses → [K] weights from the present tasks' last two epoch averages."""
        averages, counts = self._history(self._check_epoch(epoch))
        rows = self.rows(tasks)
        if any(row is None or int(counts[row]) < 2 for row in rows):
            return losses.new_ones(losses.shape)
        index = torch.tensor(rows, dtype=torch.long, device=averages.device)
        older, newer = averages[index].unbind(dim=1)
        weights = dwa_weights(older, newer, self.temperature)
        return weights.to(device=losses.device, dtype=losses.dtype)

    def update(
        self,
        losses: Tensor,
        tasks: Sequence[str],
        *,
        epoch: int | None = None,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """Add this step's losses to the epoch's sums, finishing the previous epoch if over."""
        epoch = self._check_epoch(epoch)
        averages, counts = self._history(epoch)
        if epoch != self._epoch:
            self._buffers["averages"] = averages
            self._buffers["num_averages"] = counts
            self.epoch_sums.zero_()
            self.epoch_counts.zero_()
            self._epoch = epoch
        rows = self.register_tasks(tasks, losses)
        sums = self.read("epoch_sums", rows) + losses.detach().to(self.epoch_sums)
        self.write("epoch_sums", rows, sums)
        self.write("epoch_counts", rows, self.read("epoch_counts", rows) + 1)

    def reset(self) -> None:
        """Forget every epoch: the next two epochs have equal weights again."""
        super().reset()
        self._epoch = None

    def get_extra_state(self) -> dict[str, Any]:
        """The task order and the epoch being summed (-1 before the first step)."""
        return {**super().get_extra_state(), "epoch": -1 if self._epoch is None else self._epoch}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        super().set_extra_state(state)
        epoch = int(state["epoch"])
        self._epoch = None if epoch < 0 else epoch

    def extra_repr(self) -> str:
        """The temperature."""
        return f"temperature={self.temperature}"
