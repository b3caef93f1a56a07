"""Train MultiLeNet with CSO on MultiMNIST, then print the task priority of every shared layer.

Run (after `make data`): .venv/bin/python examples/cso_multimnist.py [--epochs 3]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional

import taskprio
from taskprio.data import iterate_batches, load_multi_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    train, test = load_multi_mnist("train"), load_multi_mnist("test")
    tasks = train.tasks  # ("left", "right")

    torch.manual_seed(0)
    model = taskprio.models.MultiLeNet(tasks)
    taskprio.nn.make_task_specific(model.trunk, tasks)  # one BatchNorm per task, same output
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # after the conversion
    step = taskprio.MultiTaskStep(
        model, optimizer, tasks, method=taskprio.methods.CSO(epochs=args.epochs)
    )

    generator = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        phases = {"phase1": 0, "phase2": 0}
        for x, labels in iterate_batches(train, 256, shuffle=True, generator=generator):

            def task_loss(task, x=x, labels=labels):
                with taskprio.nn.active_task(model, task):
                    return functional.cross_entropy(model.forward_task(x, task), labels[task])

            record = step(task_loss, epoch=epoch)
            phases[record.phase] += 1
        print(f"epoch {epoch}: {phases['phase1']} Phase-1 and {phases['phase2']} Phase-2 steps")
        for layer in step.method.priority_map().layers:
            shares = "  ".join(f"{t} {100 * s:5.1f}%" for t, s in layer.shares.items())
            print(f"  {layer.name:10s} channels owned: {shares}")

    model.eval()
    with torch.no_grad():
        for task in tasks:
            with taskprio.nn.active_task(model, task):
                accuracy = model.forward_task(test.images, task).argmax(1) == test.labels[task]
            print(f"test accuracy {task}: {100 * accuracy.float().mean():.2f}%")


if __name__ == "__main__":
    main()
