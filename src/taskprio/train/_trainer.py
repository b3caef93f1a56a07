"""The training loop: a config in, a run directory out, resumable at any checkpointed step.

:class:`Trainer` builds everything a run needs from an ``ExperimentConfig`` (benchmark, model,
optimizer, learning-rate schedule, method, weighting, data order), trains epoch by epoch with
:class:`taskprio.MultiTaskStep`, evaluates the validation split after every epoch and the test
split once at the end (model selection never looks at test), and, given a run directory,
writes there what :mod:`taskprio.report` reads:

- ``config.yaml`` (resolved, every default filled in), ``environment.json``;
- ``metrics.csv`` (``epoch,split,task,metric,value``: mean training loss and every validation
  metric per epoch) and TensorBoard event files under ``tensorboard/``;
- ``records.jsonl``: every ``record_every``-th step's losses, weights, phase, conflict numbers;
- ``priority.jsonl``: CSO's per-layer priority shares after each epoch;
- ``checkpoints/``: atomic, checksummed (:mod:`taskprio.train._checkpoint`);
- ``final.json``: test and validation metrics, Δm when baselines are given, timings.

A resumed run restores the model, optimizer, schedule, method and weighting state, every RNG
and the batch order, and drops log lines written after the checkpoint, so it finishes with the
same parameters, bit for bit on the CPU, as a run that was never stopped.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from taskprio.data import (
    Benchmark,
    BenchmarkSplit,
    TensorMultiTaskDataset,
    get_benchmark,
    hide_labels,
)
from taskprio.methods import METHODS, Method
from taskprio.metrics import delta_m
from taskprio.nn import active_task, task_norms
from taskprio.optim import MultiTaskStep, StepRecord
from taskprio.train import _checkpoint as ckpt
from taskprio.train._config import dump_config, method_label
from taskprio.weighting import WEIGHTINGS, Weighting

FINAL_FILE = "final.json"


class NonFiniteLossError(FloatingPointError):
    """A task loss was NaN or infinite and the run's policy is to stop."""


class TrainProgress(Protocol):
    """What the trainer reports while it runs (the CLI draws progress bars from it)."""

    def start(self, *, total_steps: int, done_steps: int, epochs: int) -> None:
        """Training starts (or resumes with ``done_steps`` already done)."""

    def step(self, *, global_step: int, epoch: int, losses: Mapping[str, float]) -> None:
        """One step has run."""

    def epoch_end(
        self,
        *,
        epoch: int,
        train_losses: Mapping[str, float],
        val: Mapping[str, Mapping[str, float]],
    ) -> None:
        """An epoch has ended and the validation split was evaluated."""


@dataclass
class BenchmarkRun:
    """The outcome of a training run.

    Attributes:
        benchmark: the benchmark's name.
        tasks: the tasks trained.
        method: the method's registry key.
        seed: the seed of the model's initialization and the batch order.
        epochs: epochs trained.
        val: task → metric → value on the validation split after the last epoch.
        test: the same on the test split.
        epoch_losses: per epoch, task → mean training loss.
        train_time_s: wall time in training steps.
        label: the run's name in reports (``method`` or ``method+weighting``; ``single`` for
            a single-task baseline).
        run_dir: where the run was written, if anywhere.
        skipped_steps: steps skipped for a non-finite loss (policy ``skip``).
        delta_m: Δm (%) on test against the baselines the run was given, else None.
    """

    benchmark: str
    tasks: tuple[str, ...]
    method: str
    seed: int
    epochs: int
    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    epoch_losses: list[dict[str, float]]
    train_time_s: float = 0.0
    label: str = ""
    run_dir: Path | None = None
    skipped_steps: int = 0
    delta_m: float | None = None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → the first CUDA device if there is one, else the CPU; others as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def create_method(name: str, options: Mapping[str, Any] | None = None, **run: Any) -> Method:
    """Build a method with its ``options``, passing each run setting its constructor takes.

    Run settings (``epochs``, ``seed``) are matched by constructor argument name, so a method
    that needs the epoch budget (CSO) declares an ``epochs`` argument and gets it; no method is
    special-cased.

    >>> create_method("cso", epochs=3, seed=1).epochs
    3
    >>> create_method("sum", epochs=3)
    Sum()
    """
    method: Method = _create(METHODS.get(name), options, run)
    return method


def create_weighting(name: str, options: Mapping[str, Any] | None = None, **run: Any) -> Weighting:
    """Build a loss weighting like :func:`create_method`.

    >>> create_weighting("rlw", seed=2)
    RLW(...)
    """
    weighting: Weighting = _create(WEIGHTINGS.get(name), options, run)
    return weighting


def _create(
    cls: Callable[..., Any], options: Mapping[str, Any] | None, run: Mapping[str, Any]
) -> Any:
    accepted = inspect.signature(cls).parameters
    settings = {k: v for k, v in run.items() if k in accepted}
    return cls(**dict(options or {}), **settings)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, as tensors and plain data (``weights_only``-safe)."""
    python_state = random.getstate()
    numpy_state: Any = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": [
            numpy_state[0],
            torch.from_numpy(np.asarray(numpy_state[1]).copy()),
            *[float(v) if isinstance(v, float) else int(v) for v in numpy_state[2:]],
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def learning_rate_factor(config: Any, total_steps: int) -> Callable[[int], float]:
    """The schedule as a factor of the base learning rate, per global step.

    ``poly`` decays to 0 at the last step as ``(1 - t/T)^power`` (MTI-Net's schedule), ``cosine``
    likewise along half a cosine, ``step`` multiplies by ``gamma`` every ``step_epochs``.
    """
    schedule = config.schedule
    steps_per_epoch = max(1, total_steps // max(1, _epochs(config, None)))

    def factor(step: int) -> float:
        progress = min(step, total_steps) / max(1, total_steps)
        if schedule.name == "poly":
            return float((1.0 - progress) ** schedule.power)
        if schedule.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule.name == "step":
            return float(schedule.gamma ** ((step // steps_per_epoch) // schedule.step_epochs))
        return 1.0

    return factor


def _epochs(config: Any, benchmark: Benchmark | None) -> int:
    if config.epochs is not None:
        return int(config.epochs)
    if benchmark is None:
        benchmark = get_benchmark(config.benchmark, **config.model.options)
    return benchmark.epochs


_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, o, lr: torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay),
    "adamw": lambda params, o, lr: torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay),
    "sgd": lambda params, o, lr: torch.optim.SGD(
        params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay
    ),
}


class Trainer:
    """Train one seed of an experiment config, optionally writing a run directory.

    Args:
        config: a validated ``ExperimentConfig`` (:func:`taskprio.train.load_config`).
        seed: the seed (one of ``config.seeds``).
        run_dir: where to write logs, checkpoints and results; None writes nothing.
        benchmark: use this benchmark object instead of looking up ``config.benchmark``
            (its field overrides win over ``config.model.options``).
        method: use this method object instead of building ``config.method``.
        weighting: likewise for the loss weighting.
        role: ``"method"``, or ``"baseline"`` for a single-task baseline.
        baselines: task → test metrics of single-task baselines; Δm goes into the results.
        progress: receives progress events.

    >>> from taskprio.train import parse_config
    >>> config = parse_config({"benchmark": "yeast", "epochs": 1})
    >>> Trainer(config, seed=0).label
    'sum'
    """

    def __init__(
        self,
        config: Any,
        *,
        seed: int,
        run_dir: Path | None = None,
        benchmark: Benchmark | None = None,
        method: Method | None = None,
        weighting: Weighting | None = None,
        role: str = "method",
        baselines: Mapping[str, Mapping[str, float]] | None = None,
        progress: TrainProgress | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.run_dir = run_dir
        self.role = role
        self.baselines = baselines
        self.progress = progress
        self.benchmark = benchmark or get_benchmark(config.benchmark, **config.model.options)
        self.tasks = tuple(spec.name for spec in self.benchmark.select(config.tasks))
        self.epochs = _epochs(config, self.benchmark)
        self.batch_size = config.batch_size or self.benchmark.batch_size
        from taskprio.distributed import init_from_env

        # Under torchrun: join the process group; each rank trains on its part of every
        # global batch and the per-task gradients are averaged before any method sees them.
        self.rank_info = init_from_env(
            device=None if config.device == "auto" else resolve_device(config.device)
        )
        self.world_size = self.rank_info.world_size
        self.device = (
            self.rank_info.device if self.world_size > 1 else resolve_device(config.device)
        )
        if not self.rank_info.is_main_process:
            self.progress = None
        self.label = "single" if role == "baseline" else method_label(config)
        self._method = method
        self._weighting = weighting
        self._built = False

    # -- construction -----------------------------------------------------------------------

    def _build(self) -> None:
        config = self.config
        seed_everything(self.seed)
        self.model: nn.Module = self.benchmark.make_model(
            self.tasks, task_norms=config.model.task_norms
        ).to(self.device)
        gradient_sync = None
        if self.world_size > 1:
            from taskprio.distributed import GradientSync, broadcast_module, sync_batch_norms

            if config.distributed.sync_norms:
                self.model = sync_batch_norms(self.model)
            broadcast_module(self.model)
            gradient_sync = GradientSync(bucket=config.distributed.bucket)
        lr = config.optimizer.lr or self.benchmark.lr
        self.optimizer = _OPTIMIZERS[config.optimizer.name](
            self.model.parameters(), config.optimizer, lr
        )
        method = self._method or create_method(
            config.method.name, config.method.options, epochs=self.epochs, seed=self.seed
        )
        weighting = self._weighting or create_weighting(
            config.weighting.name, config.weighting.options, epochs=self.epochs, seed=self.seed
        )
        self.step = MultiTaskStep(
            self.model,
            self.optimizer,
            self.tasks,
            method=method,
            weighting=weighting,
            gradient_sync=gradient_sync,
        )
        root = config.data.root
        self.splits: dict[str, BenchmarkSplit] = {}
        for split in ("train", "val", "test"):
            dataset = self.benchmark.load(split, root)
            if split == "train" and config.data.partial_labels > 0:
                if not isinstance(dataset, TensorMultiTaskDataset):
                    raise ValueError(
                        f"data.partial_labels needs an in-memory benchmark; {self.benchmark.name} "
                        "reads its data from disk (its own ignore masks apply)."
                    )
                dataset = hide_labels(dataset, config.data.partial_labels, seed=self.seed)
            self.splits[split] = dataset.to(self.device)
        self.steps_per_epoch = math.ceil(len(self.splits["train"]) / self.batch_size)
        if config.limit_batches is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.limit_batches)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, learning_rate_factor(config, self.total_steps)
        )
        self.generator = torch.Generator().manual_seed(self.seed)
        self.uses_closure = bool(task_norms(self.model))
        self.epoch = 0
        self.batch = 0
        self.global_step = 0
        self.epoch_start_order = self.generator.get_state()
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)
        self.skipped_steps = 0
        self.train_time_s = 0.0
        self.epoch_losses: list[dict[str, float]] = []
        self.val: dict[str, dict[str, float]] = {}
        self._built = True

    # -- checkpoint state -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, keyed by the checkpoint constants."""
        return {
            ckpt.MODEL: self.model.state_dict(),
            ckpt.OPTIMIZER: self.optimizer.state_dict(),
            ckpt.SCHEDULER: self.scheduler.state_dict(),
            ckpt.STEP_STATE: self.step.state_dict(),
            ckpt.RNG: rng_state(),
            ckpt.DATA_ORDER: self.epoch_start_order,
            ckpt.EPOCH: self.epoch,
            ckpt.BATCH: self.batch,
            ckpt.GLOBAL_STEP: self.global_step,
            ckpt.EPOCH_LOSSES: {
                "sums": dict(self.sums),
                "counts": dict(self.counts),
                "history": [dict(e) for e in self.epoch_losses],
                "val": {t: dict(m) for t, m in self.val.items()},
            },
            ckpt.COUNTERS: {
                "skipped_steps": self.skipped_steps,
                "train_time_s": self.train_time_s,
                "world_size": self.world_size,
            },
            ckpt.CONFIG: dump_config(self.config),
            ckpt.VERSION: _version(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after construction)."""
        if not self._built:
            self._build()
        self.model.load_state_dict(state[ckpt.MODEL])
        self.optimizer.load_state_dict(state[ckpt.OPTIMIZER])
        self.scheduler.load_state_dict(state[ckpt.SCHEDULER])
        self.step.load_state_dict(state[ckpt.STEP_STATE])
        set_rng_state(state[ckpt.RNG])
        self.epoch_start_order = state[ckpt.DATA_ORDER]
        self.epoch = int(state[ckpt.EPOCH])
        self.batch = int(state[ckpt.BATCH])
        self.global_step = int(state[ckpt.GLOBAL_STEP])
        losses = state[ckpt.EPOCH_LOSSES]
        self.sums = {t: float(losses["sums"][t]) for t in self.tasks}
        self.counts = {t: int(losses["counts"][t]) for t in self.tasks}
        self.epoch_losses = [dict(e) for e in losses["history"]]
        self.val = {t: dict(m) for t, m in losses["val"].items()}
        self.skipped_steps = int(state[ckpt.COUNTERS]["skipped_steps"])
        self.train_time_s = float(state[ckpt.COUNTERS]["train_time_s"])

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, *, resume: bool = False) -> BenchmarkRun:
        """Train (or continue training) to the end, evaluate, write the results.

        Args:
            resume: continue from the newest good checkpoint in ``run_dir/checkpoints``; a run
                that already finished returns its stored results.

        Raises:
            NonFiniteLossError: a loss was NaN or infinite under the ``stop`` policy; the
                message names the task, epoch and step, and the checkpoint to resume from.
        """
        if not self._built:
            self._build()
        if resume and self.run_dir is None:
            raise ValueError("`resume` needs a run directory.")
        # Every rank reads checkpoints (a shared file system); only rank 0 writes files.
        files = None if self.run_dir is None else RunLog(self.run_dir)
        log = files if self.rank_info.is_main_process else None
        if resume and files is not None:
            found = ckpt.latest_checkpoint(files.checkpoints)
            if found is None:
                raise FileNotFoundError(
                    f"no usable checkpoint under {str(files.checkpoints)!r}; start the run "
                    "again without --resume."
                )
            self._check_resumable(found[1])
            self.load_state_dict(found[1])
            self._barrier()  # nobody writes before every rank has read
            if log is not None:
                log.truncate(epoch=self.epoch, global_step=self.global_step)
        elif log is not None:
            log.start(self.config, self._environment())
        if self.progress is not None:
            self.progress.start(
                total_steps=self.total_steps, done_steps=self.global_step, epochs=self.epochs
            )
        writer = None if log is None else log.tensorboard(purge_step=self.global_step)
        try:
            while self.epoch < self.epochs:
                self._train_epoch(log, writer)
        finally:
            if writer is not None:
                writer.close()
        return self._finish(log)

    def _train_epoch(self, log: RunLog | None, writer: Any) -> None:
        self.generator.set_state(self.epoch_start_order)
        self.model.train()
        started = time.perf_counter()
        for x, labels, masks in self.benchmark.batches(
            self.splits["train"],
            self.batch_size,
            shuffle=True,
            generator=self.generator,
            skip=self.batch,
        ):
            if self.batch >= self.steps_per_epoch:
                break
            if self.world_size > 1:
                x, labels, masks = _rank_part((x, labels, masks), self.rank_info)
            x, labels, masks = _to_device((x, labels, masks), self.device)
            record = self._step(x, labels, masks, log)
            self.batch += 1
            self.global_step += 1
            if record is not None:
                for task, value in record.losses.items():
                    self.sums[task] += value
                    self.counts[task] += 1
                if log is not None and self.global_step % self.config.record_every == 0:
                    log.record(self.global_step, self.epoch, record)
                if self.progress is not None:
                    self.progress.step(
                        global_step=self.global_step, epoch=self.epoch, losses=record.losses
                    )
            every = self.config.checkpoint.every_steps
            if log is not None and every and self.global_step % every == 0:
                self.train_time_s += time.perf_counter() - started
                started = time.perf_counter()
                self._save(log)
        self.train_time_s += time.perf_counter() - started
        epoch_loss = {
            t: self.sums[t] / self.counts[t] if self.counts[t] else float("nan") for t in self.tasks
        }
        self.epoch_losses.append(epoch_loss)
        self.val = self.evaluate("val")
        if log is not None:
            log.epoch(self.epoch, epoch_loss, self.val, self.global_step, writer)
            priority = getattr(self.step.method, "priority_map", None)
            if callable(priority) and getattr(self.step.method, "connections", None):
                log.priority(self.epoch, priority().to_dict())
        if self.progress is not None:
            self.progress.epoch_end(epoch=self.epoch, train_losses=epoch_loss, val=self.val)
        self.epoch += 1
        self.batch = 0
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)
        self.epoch_start_order = self.generator.get_state()
        if log is not None:
            self._save(log)

    def _step(
        self,
        x: Tensor,
        labels: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        log: RunLog | None,
    ) -> StepRecord | None:
        # Norm statistics move in the forward even when the step then stops on a non-finite
        # loss; they are put back so that a skipped or failed step leaves no trace.
        buffers = [buffer.clone() for buffer in self.model.buffers()]
        # Distributed: every rank gives every task a loss (an exact 0 without labels) and the
        # label counts weigh the ranks, so that each task's gradient is its global-batch mean
        # and every rank runs the same collectives.
        distributed = self.world_size > 1
        counts = None
        if distributed:
            from taskprio.distributed import label_counts

            counts = label_counts({t: masks[t] for t in self.tasks})
        # bf16: the forwards run under autocast; MultiTaskStep turns it off for the per-task
        # gradient matrix, the weighting and the method, which stay in float32.
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )
        try:
            with autocast:
                if self.uses_closure:
                    closure = self._closure(x, labels, masks, skip_unlabeled=not distributed)
                    record = self.step(closure, epoch=self.epoch, sample_counts=counts)
                else:
                    outputs = self.model(x)
                    losses = self.benchmark.losses(
                        {t: outputs[t] for t in self.tasks},
                        labels,
                        masks,
                        skip_unlabeled=not distributed,
                    )
                    record = self.step(losses, epoch=self.epoch, sample_counts=counts)
        except FloatingPointError as error:
            with torch.no_grad():
                for buffer, saved_buffer in zip(self.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved_buffer)
            where = f"epoch {self.epoch}, step {self.global_step} (batch {self.batch})"
            if self.config.on_nonfinite == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                if log is not None:
                    log.event(f"skipped step at {where}: {error}")
                return None
            saved = ""
            if log is not None and not self.step.method.steps_optimizer:
                # The step stopped before any parameter changed: this state is good.
                saved = f" The state before this step is saved in {self._save(log)}."
            elif log is not None:
                previous = ckpt.list_checkpoints(log.checkpoints)
                if previous:
                    saved = f" The last good checkpoint is {previous[-1]}."
            raise NonFiniteLossError(
                f"{error} At {where}.{saved} Set `on_nonfinite: skip` to skip such steps."
            ) from None
        self.scheduler.step()
        return record

    def _closure(
        self,
        x: Tensor,
        labels: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        *,
        skip_unlabeled: bool = True,
    ) -> Callable[[str], Tensor | None]:
        model, benchmark = self.model, self.benchmark

        def task_loss(task: str) -> Tensor | None:
            with active_task(model, task):
                output = model.forward_task(x, task)  # type: ignore[operator]
            losses = benchmark.losses({task: output}, labels, masks, skip_unlabeled=skip_unlabeled)
            return losses.get(task)

        return task_loss

    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        """Every task's metrics on ``split`` with the current model."""
        return self.benchmark.evaluate(self.model, self.splits[split], tasks=self.tasks)

    def _save(self, log: RunLog) -> Path:
        return ckpt.save_checkpoint(
            log.checkpoints,
            self.state_dict(),
            step=self.global_step,
            keep=self.config.checkpoint.keep,
        )

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _check_resumable(self, state: Mapping[str, Any]) -> None:
        import yaml

        saved_world = int(state[ckpt.COUNTERS].get("world_size", 1))
        if saved_world != self.world_size:
            raise ValueError(
                f"cannot resume: the checkpoint was written by {saved_world} process(es) and "
                f"this run has {self.world_size}; resume with the same world size."
            )
        saved = yaml.safe_load(state[ckpt.CONFIG])
        current = yaml.safe_load(dump_config(self.config))
        for key in ("benchmark", "tasks", "model", "batch_size", "data"):
            if saved.get(key) != current.get(key):
                raise ValueError(
                    f"cannot resume: the checkpoint was trained with {key}={saved.get(key)!r} "
                    f"but the config now says {current.get(key)!r}; these must match."
                )
        for key in ("method", "weighting", "optimizer", "schedule", "epochs"):
            if saved.get(key) != current.get(key):
                import warnings

                warnings.warn(
                    f"resuming with {key}={current.get(key)!r}, which differs from the "
                    f"checkpoint's {saved.get(key)!r}; the current config wins.",
                    stacklevel=3,
                )

    def _finish(self, log: RunLog | None) -> BenchmarkRun:
        test = self.evaluate("test")
        run = BenchmarkRun(
            benchmark=self.benchmark.name,
            tasks=self.tasks,
            method=self.step.method.name,
            seed=self.seed,
            epochs=self.epochs,
            val=self.val,
            test=test,
            epoch_losses=self.epoch_losses,
            train_time_s=self.train_time_s,
            label=self.label,
            run_dir=self.run_dir,
            skipped_steps=self.skipped_steps,
        )
        if self.baselines is not None:
            try:
                run.delta_m = run_delta_m(self.benchmark, run, self.baselines)
            except ValueError as error:  # e.g. a baseline metric of 0: Δm is undefined
                import warnings

                warnings.warn(f"no Δm for {self.label} seed {self.seed}: {error}", stacklevel=2)
        if log is not None:
            log.final(self._final(run))
        return run

    def _final(self, run: BenchmarkRun) -> dict[str, Any]:
        specs = self.benchmark.select(self.tasks)
        return {
            "role": self.role,
            "benchmark": run.benchmark,
            "method": run.label,
            "weighting": self.config.weighting.name,
            "seed": run.seed,
            "tasks": list(run.tasks),
            "auxiliary": [spec.name for spec in specs if spec.is_auxiliary],
            "metrics": {spec.name: dict(spec.metrics) for spec in specs},
            "val": run.val,
            "test": run.test,
            "epochs": run.epochs,
            "train_time_s": run.train_time_s,
            "skipped_steps": run.skipped_steps,
            "delta_m": run.delta_m,
        }

    def _environment(self) -> dict[str, Any]:
        return {
            "taskprio": _version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "seed": self.seed,
            "command": " ".join(sys.argv),
        }


def run_delta_m(
    benchmark: Benchmark, run: BenchmarkRun, baselines: Mapping[str, Mapping[str, float]]
) -> float:
    """Δm (%) of ``run``'s test metrics against single-task baselines' test metrics.

    Every metric of every non-auxiliary task of the run counts, each with its direction.

    Args:
        benchmark: the spec (directions, auxiliary tasks).
        run: the multi-task run.
        baselines: task → metric → the single-task model's test value.
    """
    values: dict[str, float] = {}
    reference: dict[str, float] = {}
    lower: dict[str, bool] = {}
    for spec in benchmark.select(run.tasks):
        if spec.is_auxiliary:
            continue
        if spec.name not in baselines:
            raise ValueError(f"no single-task baseline for task {spec.name!r}.")
        for metric, higher_is_better in spec.metrics:
            key = f"{spec.name}/{metric}"
            values[key] = run.test[spec.name][metric]
            reference[key] = baselines[spec.name][metric]
            lower[key] = not higher_is_better
    return delta_m(values, reference, lower)


def _rank_part(batch: Any, info: Any) -> Any:
    """This rank's contiguous part of every tensor of a global batch (``tensor_split``)."""
    if isinstance(batch, Tensor):
        return batch.tensor_split(info.world_size)[info.rank]
    if isinstance(batch, Mapping):
        return {key: _rank_part(value, info) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_rank_part(value, info) for value in batch)
    return batch


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_device(value, device) for value in batch)
    return batch


def _version() -> str:
    from taskprio import __version__

    return __version__


class RunLog:
    """The files of one run directory (see the module docstring for the layout)."""

    METRICS_HEADER = ("epoch", "split", "task", "metric", "value")

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.checkpoints = self.dir / "checkpoints"

    def start(self, config: Any, environment: Mapping[str, Any]) -> None:
        """Begin a fresh run: write the config and environment, empty the logs."""
        if (self.dir / FINAL_FILE).exists() or ckpt.list_checkpoints(self.checkpoints):
            raise FileExistsError(
                f"{str(self.dir)!r} already holds a run; resume it with --resume, or choose "
                "another output_dir."
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(dump_config(config))
        (self.dir / "environment.json").write_text(json.dumps(environment, indent=2) + "\n")
        with open(self.dir / "metrics.csv", "w", newline="") as file:
            csv.writer(file).writerow(self.METRICS_HEADER)
        for name in ("records.jsonl", "priority.jsonl", "events.log"):
            (self.dir / name).write_text("")

    def truncate(self, *, epoch: int, global_step: int) -> None:
        """Drop log lines written after the checkpoint a run resumes from."""
        rows = _read_csv(self.dir / "metrics.csv")
        with open(self.dir / "metrics.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(self.METRICS_HEADER)
            writer.writerows(row for row in rows if int(row[0]) < epoch)
        _filter_jsonl(self.dir / "records.jsonl", lambda line: line["step"] <= global_step)
        _filter_jsonl(self.dir / "priority.jsonl", lambda line: line["epoch"] < epoch)
        (self.dir / FINAL_FILE).unlink(missing_ok=True)

    def tensorboard(self, *, purge_step: int) -> Any:
        """A TensorBoard ``SummaryWriter`` under ``tensorboard/``.

        Events after ``purge_step`` left by an interrupted run are discarded.
        """
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.dir / "tensorboard"), purge_step=purge_step or None)

    def record(self, global_step: int, epoch: int, record: StepRecord) -> None:
        """Append one step record."""
        numbers = {
            key: float(value)
            for key, value in record.diagnostics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        line = {
            "step": global_step,
            "epoch": epoch,
            "phase": record.phase,
            "losses": record.losses,
            "weights": record.weights,
            "skipped": list(record.skipped_tasks),
            "conflict": numbers,
        }
        with open(self.dir / "records.jsonl", "a") as file:
            file.write(json.dumps(line, allow_nan=True) + "\n")

    def epoch(
        self,
        epoch: int,
        train_losses: Mapping[str, float],
        val: Mapping[str, Mapping[str, float]],
        global_step: int,
        writer: Any,
    ) -> None:
        """Append an epoch's training losses and validation metrics (CSV and TensorBoard)."""
        rows = [(epoch, "train", task, "loss", value) for task, value in train_losses.items()]
        rows += [
            (epoch, "val", task, metric, value)
            for task, metrics in val.items()
            for metric, value in metrics.items()
        ]
        with open(self.dir / "metrics.csv", "a", newline="") as file:
            csv.writer(file).writerows((e, s, t, m, repr(float(v))) for e, s, t, m, v in rows)
        if writer is not None:
            for _, split, task, metric, value in rows:
                writer.add_scalar(f"{split}/{task}/{metric}", value, global_step)
            writer.flush()

    def priority(self, epoch: int, priority_map: Mapping[str, Any]) -> None:
        """Append CSO's priority shares after an epoch."""
        with open(self.dir / "priority.jsonl", "a") as file:
            file.write(json.dumps({"epoch": epoch, **priority_map}) + "\n")

    def event(self, message: str) -> None:
        """Append a line to ``events.log`` (skipped steps and the like)."""
        with open(self.dir / "events.log", "a") as file:
            file.write(message + "\n")

    def final(self, results: Mapping[str, Any]) -> None:
        """Write ``final.json`` (atomically: its presence marks a finished run)."""
        temporary = self.dir / f".{FINAL_FILE}.tmp"
        temporary.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
        temporary.replace(self.dir / FINAL_FILE)


def _read_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.reader(file))[1:]


def _filter_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    if not path.is_file():
        return
    kept = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line torn by the interruption
        if keep(line):
            kept.append(text)
    path.write_text("".join(text + "\n" for text in kept))


def load_final(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's ``final.json``, or None if the run has not finished."""
    path = Path(run_dir) / FINAL_FILE
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def seeds_of(config: Any) -> Sequence[int]:
    """The config's seeds."""
    return tuple(int(seed) for seed in config.seeds)
