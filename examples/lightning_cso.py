"""Train MultiLeNet with CSO, or any taskprio method, inside a PyTorch Lightning Trainer.

The LightningModule turns automatic optimization off and hands each batch to a
`taskprio.MultiTaskStep`, which forms the per-task gradients, combines them and steps the
optimizer itself (CSO's Phase 1 steps it once per task).

Run (needs `pip install "taskprio[lightning]"`):
    .venv/bin/python examples/lightning_cso.py --synthetic             # no data needed
    .venv/bin/python examples/lightning_cso.py --epochs 3              # MultiMNIST (`make data`)
    .venv/bin/python examples/lightning_cso.py --synthetic --method pcgrad
"""

from __future__ import annotations

import argparse
import collections
import inspect
import math
import sys
from collections.abc import Iterator, Sequence

import lightning
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor
from torch.nn import functional

import taskprio
from taskprio.data import TensorMultiTaskDataset, get_benchmark, iterate_batches
from taskprio.train import create_method

TASKS = ("left", "right")
Batch = tuple[Tensor, dict[str, Tensor]]  # ([B, 1, 28, 28] images, {task: [B] classes})


def build_model(
    tasks: Sequence[str], *, seed: int, task_norms: bool = True
) -> taskprio.models.MultiLeNet:
    """MultiLeNet initialized from `seed`, with one BatchNorm per task in the trunk."""
    with torch.random.fork_rng(devices=[]):  # seed the initialization, leave the global RNG
        torch.manual_seed(seed)
        model = taskprio.models.MultiLeNet(tasks)
    if task_norms:
        taskprio.nn.make_task_specific(model.trunk, tasks)  # same output, one norm per task
    return model


def synthetic_multi_mnist(num_samples: int, *, seed: int) -> taskprio.data.MultiMNIST:
    """Random MultiMNIST-shaped data that can be learnt: a class template per quadrant.

    Image i is noise plus the template of its left class in the top-left 14x14 quadrant and
    the template of its right class in the bottom-right one.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(len(TASKS), 10, 14, 14, generator=generator)  # [task, class, 14, 14]
    labels = {task: torch.randint(10, (num_samples,), generator=generator) for task in TASKS}
    images = 0.5 * torch.randn(num_samples, 1, 28, 28, generator=generator)  # [N, 1, 28, 28]
    images[:, 0, :14, :14] += templates[0, labels["left"]]
    images[:, 0, 14:, 14:] += templates[1, labels["right"]]
    return taskprio.data.MultiMNIST(images, labels)


class ShuffledBatches:
    """Each iteration is one epoch of shuffled mini-batches, drawn from one seeded generator.

    Lightning accepts any iterable with a length as training data. Cutting batches from the
    in-memory tensors avoids a DataLoader (its worker processes, and Lightning's warning about
    having few of them) and gives the same batches as a plain loop over `iterate_batches` with
    a generator seeded alike.
    """

    def __init__(self, dataset: TensorMultiTaskDataset, batch_size: int, *, seed: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Batch]:
        return iterate_batches(
            self.dataset, self.batch_size, shuffle=True, generator=self.generator
        )

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)


class MultiTaskLightningModule(lightning.LightningModule):
    """A MultiLeNet trained by `taskprio.MultiTaskStep` under manual optimization.

    Args:
        tasks: the task names.
        method: a name from `taskprio.methods.available()`.
        epochs: the training budget; methods with a schedule (CSO) are built for it, and it
            must equal the Trainer's `max_epochs`.
        lr: Adam's learning rate.
        seed: seeds the initialization and the method's own generator.
        task_norms: one BatchNorm per task in the trunk (the closure form, one forward per
            task), or shared norms (one forward, the step given the losses and the shared
            features). None: task norms, except for methods that weight the tasks from the
            gradients of the one shared representation (MGDA-UB, Aligned-MTL-UB), which task
            norms do not have.
    """

    def __init__(
        self,
        tasks: Sequence[str] = TASKS,
        *,
        method: str = "cso",
        epochs: int,
        lr: float = 1e-3,
        seed: int = 0,
        task_norms: bool | None = None,
    ) -> None:
        super().__init__()
        # MultiTaskStep runs the backward passes and the optimizer steps itself.
        self.automatic_optimization = False
        self.tasks = tuple(tasks)
        self.epochs = epochs
        self.lr = lr
        # A submodule, so its state (CSO's generator and phase draws) is in Lightning's
        # checkpoints and follows the module to its device.
        self.method = create_method(method, epochs=epochs, seed=seed)
        if task_norms is None:
            task_norms = not self.method.uses_representation
        if task_norms and self.method.uses_representation:
            raise ValueError(
                f"{self.method} weights the tasks from the gradients of the one shared "
                "representation, which task-specific norms do not have: pass task_norms=False."
            )
        self.task_norms = task_norms
        self.model = build_model(self.tasks, seed=seed, task_norms=task_norms)
        self.records: list[taskprio.StepRecord] = []
        self.multitask_step: taskprio.MultiTaskStep | None = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # After make_task_specific (in __init__), so the per-task norms are optimized too.
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def on_fit_start(self) -> None:
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(
                f"precision={self.trainer.precision!r} scales the loss in `manual_backward`, "
                "but MultiTaskStep runs its own backward passes. Use precision='32-true' or "
                "'bf16-mixed'."
            )
        max_epochs = self.trainer.max_epochs
        takes_epochs = "epochs" in inspect.signature(type(self.method)).parameters
        if takes_epochs and max_epochs is not None and max_epochs > 0 and max_epochs != self.epochs:
            raise ValueError(
                f"{self.method.name} was built for epochs={self.epochs} but Trainer(max_epochs="
                f"{max_epochs}), and its schedule follows that budget (CSO: Phase 1 with "
                "probability 1 - e/E). Give both the same number."
            )
        lightning_optimizer = self.optimizers()
        assert isinstance(lightning_optimizer, LightningOptimizer)
        # Lightning wraps the optimizer in a LightningOptimizer whose step() runs the precision
        # plugin and the on_before_optimizer_step hooks and counts one `trainer.global_step`.
        # MultiTaskStep calls optimizer.step() itself, after backward passes of its own (not
        # `manual_backward`), and CSO's Phase 1 calls it K times per batch: through the wrapper,
        # a batch would count as K steps or 1 depending on the phase drawn, and a GradScaler
        # would unscale gradients that were never scaled. So MultiTaskStep gets the torch
        # optimizer inside the wrapper; training_step tells Lightning about the batch.
        self.multitask_step = taskprio.MultiTaskStep(
            self.model, lightning_optimizer.optimizer, self.tasks, method=self.method
        )

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, labels = batch
        step = self.multitask_step
        assert step is not None  # built in on_fit_start
        if self.task_norms or self.method.steps_optimizer:

            def task_loss(task: str) -> Tensor:
                with taskprio.nn.active_task(self.model, task):  # this task's norms
                    logits = self.model.forward_task(x, task)  # [B, 10]
                return functional.cross_entropy(logits, labels[task])

            record = step(task_loss, epoch=self.current_epoch)
        else:
            features = self.model.trunk(x)  # [B, 50], one forward shared by the tasks
            losses = {
                task: functional.cross_entropy(self.model.heads[task](features), labels[task])
                for task in self.tasks
            }
            record = step(losses, epoch=self.current_epoch, features=features)
        self.records.append(record)

        # Lightning counts `trainer.global_step` (which drives max_steps and ModelCheckpoint)
        # in LightningOptimizer.step(). The update is already applied: with every .grad cleared,
        # that step changes no parameter (torch optimizers skip parameters without a gradient)
        # and counts this batch as one step. Callbacks' on_before_optimizer_step sees no gradient.
        step.optimizer.zero_grad(set_to_none=True)
        lightning_optimizer = self.optimizers()
        assert isinstance(lightning_optimizer, LightningOptimizer)
        lightning_optimizer.step()

        batch_size = len(x)
        self.log_dict({f"loss/{t}": v for t, v in record.losses.items()}, batch_size=batch_size)
        self.log_dict({f"weight/{t}": v for t, v in record.weights.items()}, batch_size=batch_size)
        if record.phase is not None:  # steps per phase in each epoch (CSO: phase1, phase2)
            self.log(
                f"steps/{record.phase}", 1.0, on_step=False, on_epoch=True, reduce_fx="sum",
                batch_size=batch_size,
            )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> MultiTaskLightningModule:
    """Parse `argv`, train, print a summary; returns the trained module (its `records`)."""
    benchmark = get_benchmark("multimnist")
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Examples: --synthetic  ·  --method pcgrad --epochs 3  ·  --synthetic "
        "--limit-batches 5",
    )
    parser.add_argument("--method", default="cso", choices=taskprio.methods.available())
    parser.add_argument(
        "--synthetic", action="store_true", help="random learnable images instead of MultiMNIST"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=benchmark.batch_size)
    parser.add_argument("--lr", type=float, default=benchmark.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=2048, help="synthetic set size")
    parser.add_argument("--limit-batches", type=int, default=None, help="batches per epoch")
    parser.add_argument("--shared-norms", action="store_true", help="no task-specific norms")
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto …")
    args = parser.parse_args(argv)

    if args.synthetic:
        data = synthetic_multi_mnist(args.num_samples + args.num_samples // 4, seed=args.seed)
        cut = args.num_samples  # train on the first samples, test on the others
        train = taskprio.data.MultiMNIST(
            data.inputs[:cut], {t: y[:cut] for t, y in data.labels.items()}
        )
        test = taskprio.data.MultiMNIST(
            data.inputs[cut:], {t: y[cut:] for t, y in data.labels.items()}
        )
    else:
        train, test = benchmark.load("train"), benchmark.load("test")

    module = MultiTaskLightningModule(
        train.tasks,
        method=args.method,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        task_norms=False if args.shared_norms else None,
    )
    trainer = lightning.Trainer(
        max_epochs=args.epochs,
        limit_train_batches=args.limit_batches,  # None: every batch
        accelerator=args.accelerator,
        devices=1,
        # The summary below is printed; add a logger and checkpointing here for real runs.
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=ShuffledBatches(train, args.batch_size, seed=args.seed))

    phases = collections.Counter(record.phase for record in module.records if record.phase)
    shown = ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()))
    num_batches = len(module.records)
    print(f"{module.method.name}: {num_batches} batches" + (f" ({shown})" if shown else ""))
    print("last losses: " + "  ".join(f"{t} {v:.4f}" for t, v in module.records[-1].losses.items()))
    metrics = benchmark.evaluate(module.model, test.to(module.device))
    print("test accuracy: " + "  ".join(f"{t} {100 * m['acc']:.2f}%" for t, m in metrics.items()))
    return module


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as error:  # MultiMNIST not built: the message says how
        print(f"error: {error}\nOr run with --synthetic.", file=sys.stderr)
        raise SystemExit(2) from None
