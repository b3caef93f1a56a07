"""Step cost of every registered aggregation method against linear scalarization and torchjd.

Run: .venv/bin/python benchmarks/bench_methods.py [--model conv|mlp|both] [--rounds 5]
     [--steps 3] [--repeats 1] [--methods a,b,...] [--strategy auto|loop|vmap]
     [--engine-strategies] [--conflict-statistics-every 1] [--threads N] [--device cpu]

Models:
  conv: 6 shared 3×3 convs (3→32 s2, 32→32, 32→64 s2, 64→64 ×3) with *shared* BatchNorm,
        three dense heads (conv3×3 + conv1×1, ×4 bilinear upsample): depth (L1), normal (L1),
        seg (13-class CE); K = 3, batch 16, 3×64×64.
  mlp:  MLP 64→256→256→256 (ReLU), ten Linear(256, 1) regression heads (MSE); K = 10,
        batch 128.
Every variant gets its own copy of the model (same seed) and Adam, 3 warm-up steps, then rounds
of steps interleaved across variants in one process, so machine noise hits all alike.
"LS" is one backward of the summed losses; "torchjd" is mtl_backward + jac_to_grad(Sum), its
Jacobian cost; "per-task rows, summed" is taskprio's per-task gradients with a plain sum.
Each method runs through taskprio.MultiTaskStep in the mapping form with `features=` (heads
once per task, then the trunk: one batched backward for the MLP, one backward per task for the
conv trunk, as `strategy="auto"` picks; representation methods weight from the representation
gradients): the fastest engine path for both models (`--engine-strategies` adds the rows summed
through the `loop` and `vmap` strategies without `features=`, for comparison).
Prints each variant's median step time and its ratio to LS. With `--repeats R` the whole
interleaved run is repeated R times in the process: the ratio printed is the median of the R
ratios, each measured within one run, with their range.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.nn import functional

import taskprio

CONV_TASKS = ("depth", "normal", "seg")
CONV_CHANNELS = {"depth": 1, "normal": 3, "seg": 13}
MLP_TASKS = tuple(f"y{k}" for k in range(10))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in [
            (3, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1), (64, 64, 1)
        ]:  # fmt: skip
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU())
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, c, 1))
                for t, c in CONV_CHANNELS.items()
            }
        )

    def losses(self, batch):
        x, y = batch
        features = self.trunk(x)
        out = {
            t: functional.interpolate(h(features), scale_factor=4, mode="bilinear")
            for t, h in self.heads.items()
        }
        return features, {
            "depth": functional.l1_loss(out["depth"], y["depth"]),
            "normal": functional.l1_loss(out["normal"], y["normal"]),
            "seg": functional.cross_entropy(out["seg"], y["seg"]),
        }


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256),
            nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({t: nn.Linear(256, 1) for t in MLP_TASKS})

    def losses(self, batch):
        x, y = batch
        features = self.trunk(x)
        return features, {
            t: functional.mse_loss(h(features).squeeze(1), y[:, k])
            for k, (t, h) in enumerate(self.heads.items())
        }


def make(model_name, device):
    generator = torch.Generator().manual_seed(0)
    if model_name == "conv":
        x = torch.randn(16, 3, 64, 64, generator=generator)
        y = {
            "depth": torch.rand(16, 1, 64, 64, generator=generator),
            "normal": torch.randn(16, 3, 64, 64, generator=generator),
            "seg": torch.randint(13, (16, 64, 64), generator=generator),
        }
        torch.manual_seed(0)
        return ConvNet().to(device), (x.to(device), {k: v.to(device) for k, v in y.items()})
    x = torch.randn(128, 64, generator=generator)
    y = torch.randn(128, 10, generator=generator)
    torch.manual_seed(0)
    return MLP().to(device), (x.to(device), y.to(device))


class RowSum(taskprio.methods.Method):
    """The plain sum computed from the per-task rows: the engine's cost alone."""

    name = "row_sum"
    summary = "benchmark only"

    def forward(self, per_task_grads, tasks=None):
        # A product with ones, as in GradDrop: sum(dim=0) of a wide [K, n] matrix suffers far
        # more from other processes on the cores.
        return per_task_grads.new_ones(per_task_grads.shape[0]) @ per_task_grads


def variants(model_name, base, batch, method_names, args):
    strategy, statistics_every = args.strategy, args.conflict_statistics_every
    tasks = CONV_TASKS if model_name == "conv" else MLP_TASKS
    runs = {}

    def fresh():
        model = copy.deepcopy(base)
        return model, torch.optim.Adam(model.parameters(), lr=1e-4)

    model, optimizer = fresh()

    def ls(model=model, optimizer=optimizer):
        optimizer.zero_grad(set_to_none=True)
        _, losses = model.losses(batch)
        torch.autograd.backward(sum(losses.values()))
        optimizer.step()

    runs["LS (one backward)"] = ls
    from torchjd.aggregation import Sum as TorchJDSum
    from torchjd.autojac import jac_to_grad, mtl_backward

    model, optimizer = fresh()

    aggregator = TorchJDSum()

    def torchjd_sum(model=model, optimizer=optimizer):
        optimizer.zero_grad(set_to_none=True)
        features, losses = model.losses(batch)
        mtl_backward(list(losses.values()), features=features)
        jac_to_grad(list(model.trunk.parameters()), aggregator)
        optimizer.step()

    runs["torchjd Jacobian + Sum"] = torchjd_sum
    model, optimizer = fresh()
    rows_step = taskprio.MultiTaskStep(
        model,
        optimizer,
        tasks,
        method=RowSum(),
        strategy=strategy,
        conflict_statistics_every=statistics_every,
    )

    def rows(model=model, step=rows_step):
        features, losses = model.losses(batch)
        step(losses, features=features)

    runs["per-task rows, summed"] = rows
    for engine_strategy in ("loop", "vmap") if args.engine_strategies else ():
        model, optimizer = fresh()
        plain_step = taskprio.MultiTaskStep(
            model,
            optimizer,
            tasks,
            method=RowSum(),
            strategy=engine_strategy,
            conflict_statistics_every=statistics_every,
        )

        def plain(model=model, step=plain_step):
            _, losses = model.losses(batch)
            step(losses)

        runs[f"rows, {engine_strategy}, no features"] = plain
    for name in method_names:
        if taskprio.methods.METHODS.get(name).steps_optimizer:
            continue  # CSO needs task-specific norms: benchmarks/bench_cso.py times it
        method = taskprio.methods.create(name)
        model, optimizer = fresh()
        step = taskprio.MultiTaskStep(
            model,
            optimizer,
            tasks,
            method=method,
            strategy=strategy,
            conflict_statistics_every=statistics_every,
        )

        def run(model=model, step=step):
            features, losses = model.losses(batch)
            step(losses, features=features)

        runs[name] = run
    return runs


def bench(model_name, args):
    device = torch.device(args.device)
    base, batch = make(model_name, device)
    names = args.methods.split(",") if args.methods else taskprio.methods.available()
    runs = variants(model_name, base, batch, names, args)
    for run in runs.values():
        for _ in range(3):
            run()
    times = {name: [] for name in runs}
    ratios = {name: [] for name in runs}
    for _ in range(args.repeats):
        repeat_times = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                for _ in range(args.steps):
                    started = time.perf_counter()
                    run()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    repeat_times[name].append(time.perf_counter() - started)
        ls = statistics.median(repeat_times["LS (one backward)"])
        for name, samples in repeat_times.items():
            times[name] += samples
            ratios[name].append(statistics.median(samples) / ls)
    print(
        f"\n{model_name}: device {device}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, strategy {args.strategy}, conflict statistics every "
        f"{args.conflict_statistics_every}, "
        f"{args.repeats}×{args.rounds}×{args.steps} steps per variant"
    )
    print(f"{'variant':28s} {'median ms':>10s} {'× LS':>6s} {'range':>12s}")
    for name, samples in times.items():
        spread = f"{min(ratios[name]):.2f}–{max(ratios[name]):.2f}" if args.repeats > 1 else ""
        print(
            f"{name:28s} {1e3 * statistics.median(samples):10.2f} "
            f"{statistics.median(ratios[name]):6.2f} {spread:>12s}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["conv", "mlp", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="whole interleaved runs")
    parser.add_argument("--methods", default="")
    parser.add_argument("--strategy", default="auto", choices=["auto", "loop", "vmap"])
    parser.add_argument(
        "--engine-strategies",
        action="store_true",
        help="add the rows summed by the loop and vmap strategies, without features=",
    )
    parser.add_argument(
        "--conflict-statistics-every",
        type=int,
        default=1,
        help="MultiTaskStep(conflict_statistics_every=...): 1 every step (default), 0 never",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for model_name in ("conv", "mlp") if args.model == "both" else (args.model,):
        bench(model_name, args)


if __name__ == "__main__":
    main()
