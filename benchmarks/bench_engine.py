"""Step cost of per-task gradients: taskprio's strategies vs linear scalarization vs torchjd.

Run: .venv/bin/python benchmarks/bench_engine.py [--steps 20] [--batch 256] [--device cpu]

Every variant gets its own copy of the same MultiLeNet (MultiMNIST shapes, random inputs) and
runs interleaved rounds in one process, so machine noise hits all alike. Prints the median step
time and its ratio to one backward of the summed loss (linear scalarization, "LS").
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.nn import functional
from torchjd.aggregation import Sum as JDSum
from torchjd.autojac import jac_to_grad, mtl_backward

import taskprio
from taskprio.engine import per_task_grads
from taskprio.models import MultiLeNet

TASKS = ("left", "right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = {t: torch.randint(10, (args.batch,), device=device) for t in TASKS}
    base = MultiLeNet(TASKS).to(device)
    task_norm_base = copy.deepcopy(base)
    taskprio.nn.make_task_specific(task_norm_base.trunk, TASKS)

    def losses(model):
        out = model(x)
        return {t: functional.cross_entropy(out[t], y[t]) for t in TASKS}

    def closure(model):
        def task_loss(task):
            with taskprio.nn.active_task(model, task):
                return functional.cross_entropy(model.forward_task(x, task), y[task])

        return task_loss

    variants = {}

    def add(name, model, run):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        variants[name] = (model, optimizer, run)

    add(
        "LS: sum(losses).backward()",
        copy.deepcopy(base),
        lambda m, o: sum(losses(m).values()).backward(),
    )
    add("MultiTaskStep sum (one backward)", copy.deepcopy(base), None)
    add(
        "engine loop, K backward",
        copy.deepcopy(base),
        lambda m, o: per_task_grads(losses(m), list(m.parameters()), strategy="loop"),
    )
    add(
        "engine vmap, 1 batched backward",
        copy.deepcopy(base),
        lambda m, o: per_task_grads(losses(m), list(m.parameters()), strategy="vmap"),
    )
    add("torchjd mtl_backward + jac_to_grad(Sum)", copy.deepcopy(base), None)
    add("task norms: MultiTaskStep sum (closure)", copy.deepcopy(task_norm_base), None)

    steps = {}
    for name, (model, optimizer, run) in variants.items():
        if name.startswith(("MultiTaskStep", "task norms")):
            step = taskprio.MultiTaskStep(model, optimizer, TASKS)
            is_closure = name.startswith("task norms")
            steps[name] = lambda m, o, s=step, c=is_closure: s(closure(m) if c else losses(m))
        elif name.startswith("torchjd"):

            def jd(m, o):
                features = m.trunk(x)
                out = {t: m.heads[t](features) for t in TASKS}
                task_losses = [functional.cross_entropy(out[t], y[t]) for t in TASKS]
                mtl_backward(task_losses, features=features)
                jac_to_grad(list(m.trunk.parameters()), JDSum())

            steps[name] = jd
        else:
            steps[name] = lambda m, o, r=run: (o.zero_grad(set_to_none=True), r(m, o), o.step())

    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, (model, optimizer, _) in variants.items():  # warm-up
        for _ in range(3):
            steps[name](model, optimizer)
    for _ in range(args.rounds):
        for name, (model, optimizer, _) in variants.items():
            for _ in range(max(1, args.steps // args.rounds)):
                started = time.perf_counter()
                steps[name](model, optimizer)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - started)
    ls = statistics.median(times["LS: sum(losses).backward()"])
    print(
        f"MultiLeNet, batch {args.batch}, K=2, device {device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'variant':45s} {'median ms':>10s} {'× LS':>6s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:45s} {1e3 * median:10.2f} {median / ls:6.2f}")


if __name__ == "__main__":
    main()
