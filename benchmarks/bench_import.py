"""Import time of taskprio next to that of torch alone, in fresh interpreters.

Run: .venv/bin/python benchmarks/bench_import.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys


def _import_s(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {"import torch": [], "import taskprio": []}
    for _ in range(args.repeats):  # interleaved, so noise hits both alike
        for statement in rows:
            rows[statement].append(_import_s(statement))
    torch_s = statistics.median(rows["import torch"])
    print(f"{'statement':20s} {'median s':>9s} {'× torch':>8s}")
    for statement, samples in rows.items():
        median = statistics.median(samples)
        print(f"{statement:20s} {median:9.3f} {median / torch_s:8.2f}")


if __name__ == "__main__":
    main()
