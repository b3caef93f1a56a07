"""Batch normalization over the global batch of all ranks, on any backend (gloo on CPU too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from taskprio.nn import TaskNorm


class _AllReduceSum(torch.autograd.Function):
    """A differentiable sum over the ranks: the backward sums the output gradients likewise.

    Rank r's loss depends on the statistics S = Σ_r' s_r', so ∂(Σ_r L_r)/∂s_r is
    Σ_r ∂L_r/∂S, the all-reduced output gradient.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        reduced = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(reduced, group=group)
        return reduced

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        reduced: Tensor = _AllReduceSum.apply(grad_output, ctx.group)  # type: ignore[no-untyped-call]
        return reduced, None


def all_reduce_sum(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Σ over the ranks of ``tensor``, differentiable; ``tensor`` itself without a group.

    >>> all_reduce_sum(torch.ones(2))
    tensor([1., 1.])
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return tensor
    result: Tensor = _AllReduceSum.apply(tensor, group)  # type: ignore[no-untyped-call]
    return result


class DistributedBatchNorm(_BatchNorm):
    """Batch normalization whose training statistics are those of the global batch.

    :class:`torch.nn.SyncBatchNorm`'s semantics on every device and backend (PyTorch's own
    accepts only GPU inputs): in training mode, with a process group of two or more ranks, the
    mean and the (biased) variance that normalize the batch, and the running statistics, are
    computed over the samples of all ranks, so every rank normalizes as one process would on
    the concatenated batch and holds the same running statistics. The statistics are
    differentiable through the ranks (the backward all-reduces their gradients). Otherwise
    (eval mode, one process) it is an ordinary batch norm.

    Two small all-reduces per training forward: the per-channel sums and the count, then the
    per-channel sums of squared deviations (two passes, for accuracy). Every rank must run the
    same forwards, and the backward of each, in the same order.

    Args:
        num_features: C, the channels of the input [B, C, *].
        eps: added to the variance.
        momentum: the running statistics' update factor (None: cumulative average).
        affine: learn a per-channel scale and shift.
        track_running_stats: keep running statistics.
        process_group: the ranks that share statistics (None: all of them).
        device: the parameters' device.
        dtype: the parameters' dtype.

    >>> norm = DistributedBatchNorm(3)
    >>> norm(torch.randn(4, 3, 2)).shape  # one process: an ordinary batch norm
    torch.Size([4, 3, 2])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device=device,
            dtype=dtype,
        )
        self.process_group = process_group

    @classmethod
    def from_batch_norm(
        cls, norm: _BatchNorm, *, process_group: dist.ProcessGroup | None = None
    ) -> DistributedBatchNorm:
        """A DistributedBatchNorm that shares ``norm``'s parameters and buffers (same objects).

        >>> bn = nn.BatchNorm2d(4)
        >>> DistributedBatchNorm.from_batch_norm(bn).weight is bn.weight
        True
        """
        converted = cls.__new__(cls)
        nn.Module.__init__(converted)
        converted.num_features = norm.num_features
        converted.eps = norm.eps
        converted.momentum = norm.momentum
        converted.affine = norm.affine
        converted.track_running_stats = norm.track_running_stats
        # The same Parameter and buffer objects: an optimizer built before still updates them.
        converted.register_parameter("weight", norm.weight)
        converted.register_parameter("bias", norm.bias)
        converted.register_buffer("running_mean", norm.running_mean)
        converted.register_buffer("running_var", norm.running_var)
        converted.register_buffer("num_batches_tracked", norm.num_batches_tracked)
        converted.process_group = process_group
        converted.train(norm.training)
        return converted

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"DistributedBatchNorm expects an input [B, C, *] of 2 or more dimensions; got "
                f"shape {tuple(input.shape)}."
            )

    def forward(self, input: Tensor) -> Tensor:
        """Normalize [B, C, *] with the global batch's statistics (training, several ranks)."""
        group = self.process_group
        is_synchronized = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(group) > 1
        )
        if not is_synchronized:
            out: Tensor = super().forward(input)
            return out
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch's batch norms
                factor = 1.0 / float(self.num_batches_tracked)
        # Statistics in at least float32, whatever the input's dtype (bf16 under autocast).
        stat_dtype = torch.promote_types(input.dtype, torch.float32)
        if self.weight is not None:
            stat_dtype = torch.promote_types(stat_dtype, self.weight.dtype)
        x = input.to(stat_dtype)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_full((1,), float(x.numel() // max(x.shape[1], 1)))
        sums = all_reduce_sum(torch.cat([x.sum(dim=dims), count]), group)  # [C + 1]
        total = sums[-1]
        mean = sums[:-1] / total  # [C]
        centered = x - mean.view(shape)
        var = all_reduce_sum(centered.square().sum(dim=dims), group) / total  # [C], biased
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None and self.bias is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None
            with torch.no_grad():
                # The running variance is unbiased, as torch's batch norms keep it.
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        return out.to(input.dtype)


def sync_batch_norms(
    model: nn.Module,
    *,
    tasks: Sequence[str] | None = None,
    include_shared: bool = True,
    process_group: dist.ProcessGroup | None = None,
) -> nn.Module:
    """Make batch norms compute their training statistics over the global batch, in place.

    Each BatchNorm1d/2d/3d becomes a :class:`DistributedBatchNorm` sharing its parameters and
    buffers: those inside a :class:`taskprio.nn.TaskNorm` for the chosen ``tasks`` (SyncBatchNorm
    semantics per task: task t's norm normalizes task t's forward with the statistics of all
    ranks), and, with ``include_shared``, those outside task norms. The running statistics CSO
    reads for its priority are then the same on every rank, and equal to one process's on the
    concatenated batch. Call it after :func:`taskprio.nn.make_task_specific` and before
    building the optimizer (parameters are kept, so an earlier optimizer also works).

    With synchronized norms every rank must run each task's forward, and the backward of it:
    a closure must return a loss for every task on every rank, e.g. ``0 * output.sum()`` for a
    batch without that task's labels, with ``sample_counts`` giving 0 for it.

    Args:
        model: the model.
        tasks: the tasks whose task norms are synchronized; None: all of them.
        include_shared: also synchronize batch norms outside task norms.
        process_group: the ranks that share statistics (None: all).

    Returns:
        ``model``, converted (or the replacement when ``model`` itself is a batch norm).

    >>> from taskprio.nn import make_task_specific
    >>> net = make_task_specific(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), ["a", "b"])
    >>> net = sync_batch_norms(net, tasks=["b"])
    >>> type(net[1].norms["a"]).__name__, type(net[1].norms["b"]).__name__
    ('BatchNorm1d', 'DistributedBatchNorm')
    """
    chosen = None if tasks is None else set(tasks)
    if isinstance(model, _BatchNorm) and not isinstance(model, DistributedBatchNorm):
        if not include_shared:
            return model
        return DistributedBatchNorm.from_batch_norm(model, process_group=process_group)
    for module in model.modules():
        if isinstance(module, TaskNorm):
            unknown = sorted(set() if chosen is None else chosen - set(module.tasks))
            if unknown:
                raise ValueError(
                    f"`tasks` names {unknown}, which the task norm {module!r} does not have; its "
                    f"tasks are {module.tasks}."
                )
            for task, norm in module.norms.items():
                if (chosen is None or task in chosen) and _is_plain_batch_norm(norm):
                    assert isinstance(norm, _BatchNorm)
                    module.norms[task] = DistributedBatchNorm.from_batch_norm(
                        norm, process_group=process_group
                    )
    if include_shared:
        inside = {id(m) for tn in model.modules() if isinstance(tn, TaskNorm) for m in tn.modules()}
        for parent in list(model.modules()):
            if id(parent) in inside:
                continue
            for name, child in list(parent.named_children()):
                if id(child) not in inside and _is_plain_batch_norm(child):
                    assert isinstance(child, _BatchNorm)
                    setattr(
                        parent,
                        name,
                        DistributedBatchNorm.from_batch_norm(child, process_group=process_group),
                    )
    return model


def _is_plain_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and not isinstance(
        module, (DistributedBatchNorm, nn.SyncBatchNorm)
    )
