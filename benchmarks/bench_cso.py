"""Step cost of CSO's two phases against linear scalarization on a task-specific-BN trunk.

Run: .venv/bin/python benchmarks/bench_cso.py [--rounds 5] [--steps 5] [--device cpu]

Model: 6 shared 3×3 convs (3→32 s2, 32→32, 32→64 s2, 64→64 ×3), each followed by a
task-specific BatchNorm and ReLU; three dense heads (conv3×3 + conv1×1, ×4 bilinear upsample):
depth (1 channel, L1), normal (3, L1), seg (13 classes, CE). Batch 16, 3×64×64 inputs, Adam.
Linear scalarization (LS) runs the K task forwards, sums the losses and runs one backward.
Every variant has its own copy of the model; 5 warm-up steps, then rounds of steps
interleaved across variants in one process. Peak memory: a fresh process per variant runs 3
steps and reports the growth of its peak RSS over the RSS after building the model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.nn import functional

import taskprio
from taskprio.nn import active_task, make_task_specific

TASKS = ("depth", "normal", "seg")
CHANNELS = {"depth": 1, "normal": 3, "seg": 13}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = []
        for c_in, c_out, stride in [
            (3, 32, 2),
            (32, 32, 1),
            (32, 64, 2),
            (64, 64, 1),
            (64, 64, 1),
            (64, 64, 1),
        ]:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        self.backbone = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, c, 1))
                for t, c in CHANNELS.items()
            }
        )

    def forward_task(self, x, task):
        out = self.heads[task](self.backbone(x))
        return functional.interpolate(out, scale_factor=4, mode="bilinear", align_corners=False)


def make_batch(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 64, 64, generator=generator).to(device)
    y = {
        "depth": torch.rand(16, 1, 64, 64, generator=generator).to(device),
        "normal": torch.randn(16, 3, 64, 64, generator=generator).to(device),
        "seg": torch.randint(13, (16, 64, 64), generator=generator).to(device),
    }
    return x, y


def task_loss_fn(model, x, y):
    def task_loss(task):
        with active_task(model, task):
            out = model.forward_task(x, task)
        if task == "seg":
            return functional.cross_entropy(out, y[task])
        return functional.l1_loss(out, y[task])

    return task_loss


def build(variant, device):
    torch.manual_seed(0)
    model = make_task_specific(Net(), TASKS).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = make_batch(device)
    closure = task_loss_fn(model, x, y)
    if variant == "LS":

        def run():
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(sum(closure(t) for t in TASKS))
            optimizer.step()

        return model, run
    schedule = {"CSO phase 1": "phase1", "CSO phase 2": "phase2"}[variant]
    step = taskprio.MultiTaskStep(
        model, optimizer, TASKS, method=taskprio.methods.CSO(epochs=1, schedule=schedule)
    )
    return model, lambda: step(closure, epoch=0)


VARIANTS = ("LS", "CSO phase 1", "CSO phase 2")


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def peak_growth_mb(variant, device):
    """Peak RSS over 3 steps minus RSS before them, in this fresh process (Linux only)."""
    _, run = build(variant, device)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS:")
    for _ in range(3):
        run()
    return (_status_kb("VmHWM:") - before) / 1024


def peak_memory_mb(variant, device):
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bench_cso as b; "
        f"print(b.peak_growth_mb({variant!r}, {str(device)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    runs = {v: build(v, device)[1] for v in VARIANTS}
    for run in runs.values():
        for _ in range(5):
            run()
    times = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant, run in runs.items():
            for _ in range(args.steps):
                started = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[variant].append(time.perf_counter() - started)
    ls = statistics.median(times["LS"])
    print(
        f"6-conv task-BN trunk, K=3, batch 16, 64×64, device {device}, torch "
        f"{torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.rounds}×{args.steps} steps per variant"
    )
    header = f"{'variant':14s} {'median ms':>10s} {'IQR ms':>14s} {'× LS':>6s}"
    memory = {}
    if not args.no_memory and device.type == "cpu":
        memory = {v: peak_memory_mb(v, device) for v in VARIANTS}
        header += f" {'Δpeak RSS MB':>13s}"
    print(header)
    for variant, samples in times.items():
        q = statistics.quantiles(samples, n=4)
        line = (
            f"{variant:14s} {1e3 * statistics.median(samples):10.1f} "
            f"{1e3 * q[0]:6.1f}–{1e3 * q[2]:6.1f} {statistics.median(samples) / ls:6.3f}"
        )
        if memory:
            line += f" {memory[variant]:13.1f}"
        print(line)


if __name__ == "__main__":
    main()
