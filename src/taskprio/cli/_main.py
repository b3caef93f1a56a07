"""The typer application; one module per subcommand."""

from __future__ import annotations

import typer

from taskprio.cli import _bench, _data, _methods, _pareto, _report, _train

app = typer.Typer(
    name="taskprio",
    help="Multi-task optimization for PyTorch, built around task priority (CSO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="train", epilog=_train.EXAMPLES)(_train.train)
app.command(name="bench", epilog=_bench.EXAMPLES)(_bench.bench)
app.command(name="report", epilog=_report.EXAMPLES)(_report.report)
app.command(name="methods", epilog=_methods.EXAMPLES)(_methods.methods)
app.command(name="data", epilog=_data.EXAMPLES)(_data.data)
app.command(name="pareto", epilog=_pareto.EXAMPLES)(_pareto.pareto)
app.command(name="pareto-front", epilog=_pareto.FRONT_EXAMPLES)(_pareto.pareto_front)


def main() -> None:
    """Entry point of the ``taskprio`` console script."""
    app()
