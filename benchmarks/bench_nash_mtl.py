"""Nash-MTL aggregation time: taskprio's solver vs torchjd's cvxpy/ECOS one, on random [K, n].

Run: .venv/bin/python benchmarks/bench_nash_mtl.py [--n 100000] [--calls 30] [--rounds 5]

For K = 3 and 10, each method keeps one instance (warm starts carry over, as in training) and
aggregates the same sequence of random float32 [K, n] matrices; rounds interleave the methods so
machine noise hits all alike. Prints the median time per call, the ratio torchjd / taskprio, and
the largest difference between the two outputs. "floor" is the Gramian plus the weighted sum,
the part any implementation pays. torchjd's columns need cvxpy (`pip install "torchjd[nash_mtl]"`).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from taskprio.methods._nash_mtl import NashMTL

try:
    import cvxpy  # noqa: F401
    from torchjd.aggregation import NashMTL as TorchJDNashMTL
except ImportError:
    TorchJDNashMTL = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=30, help="calls per method and K")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # cvxpy warns on every call that torchjd's problem is not DPP.
    warnings.filterwarnings("ignore", message=".*not DPP.*")
    print(
        f"Nash-MTL on random float32 [K, {args.n}], {args.calls} calls per K, torch "
        f"{torch.__version__}, threads {torch.get_num_threads()}, device cpu"
    )
    if TorchJDNashMTL is None:
        print(
            "cvxpy is not installed: torchjd's columns are skipped (pip install torchjd[nash_mtl])"
        )
    header = ("K", "floor ms", "taskprio ms", "torchjd ms", "ratio", "max |Δ|")
    print("{:>3s} {:>9s} {:>12s} {:>11s} {:>7s} {:>9s}".format(*header))
    for num_tasks in args.tasks:
        generator = torch.Generator().manual_seed(num_tasks)
        matrices = [torch.randn(num_tasks, args.n, generator=generator) for _ in range(args.calls)]
        methods = {"floor": None, "taskprio": NashMTL()}
        if TorchJDNashMTL is not None:
            methods["torchjd"] = TorchJDNashMTL(n_tasks=num_tasks)
        times: dict[str, list[float]] = {name: [] for name in methods}
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
        per_round = max(1, args.calls // args.rounds)
        for start in range(0, args.calls, per_round):
            for name, method in methods.items():
                for matrix in matrices[start : start + per_round]:
                    started = time.perf_counter()
                    if method is None:
                        gramian = matrix @ matrix.T
                        result = gramian.sum(dim=0) @ matrix
                    else:
                        result = method(matrix)
                    times[name].append(time.perf_counter() - started)
                    outputs[name].append(result)
        floor = 1e3 * statistics.median(times["floor"])
        ours = 1e3 * statistics.median(times["taskprio"])
        if "torchjd" in methods:
            theirs = 1e3 * statistics.median(times["torchjd"])
            difference = max(
                float((a - b).abs().max())
                for a, b in zip(outputs["taskprio"], outputs["torchjd"], strict=True)
            )
            print(
                f"{num_tasks:3d} {floor:9.2f} {ours:12.2f} {theirs:11.2f} "
                f"{theirs / ours:6.1f}× {difference:9.1e}"
            )
        else:
            print(f"{num_tasks:3d} {floor:9.2f} {ours:12.2f} {'-':>11s} {'-':>7s} {'-':>9s}")


if __name__ == "__main__":
    main()
