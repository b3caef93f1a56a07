"""PNG plots of a set of runs: training curves, loss weights, CSO priority shares, trade-offs.

matplotlib is imported inside the functions, and figures are drawn on an Agg canvas without
pyplot: no window opens, and the caller's pyplot backend and state are left alone.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskprio.report._tables import BASELINE_LABEL, RunSet

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
PANEL_SIZE = (4.6, 3.1)  # inches per subplot: legible 9–10 pt text at DPI
MAX_TASKS_PER_PAGE = 4
BASELINE_COLOUR = "#222222"
ARROWS = {True: "↑", False: "↓"}


def method_colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per row label, the same in every plot: baseline near-black, then tab10."""
    from matplotlib import colormaps, colors

    palette = [colors.to_hex(c) for c in colormaps["tab10"].colors]  # type: ignore[attr-defined]
    if len([label for label in labels if label != BASELINE_LABEL]) > len(palette):
        palette = [colors.to_hex(c) for c in colormaps["tab20"].colors]  # type: ignore[attr-defined]
    methods = (label for label in labels if label != BASELINE_LABEL)
    colours = {label: palette[i % len(palette)] for i, label in enumerate(methods)}
    if BASELINE_LABEL in labels:
        colours[BASELINE_LABEL] = BASELINE_COLOUR
    return colours


def write_plots(runs: RunSet, plots_dir: Path) -> list[tuple[str, Path]]:
    """Draw every plot that the runs support into ``plots_dir``.

    Returns:
        (caption, path) per PNG written, in the order the report shows them.
    """
    _require_matplotlib()
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = method_colours(runs.labels)
    written: list[tuple[str, Path]] = []
    written += plot_training_curves(runs, plots_dir, colours)
    written += plot_loss_weights(runs, plots_dir, colours)
    written += plot_priority(runs, plots_dir)
    written += plot_tradeoff(runs, plots_dir, colours)
    return written


# --- training curves ------------------------------------------------------------------------


def plot_training_curves(
    runs: RunSet, plots_dir: Path, colours: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """Per task, train loss and the val main metric per epoch; mean over seeds, min–max band."""
    tasks = runs.tasks
    pages = [tasks[i : i + MAX_TASKS_PER_PAGE] for i in range(0, len(tasks), MAX_TASKS_PER_PAGE)]
    written = []
    for page_index, page in enumerate(pages, start=1):
        figure, axes = _figure(len(page), 2)
        for row, task in enumerate(page):
            directions = runs.directions(task)
            main = next(iter(directions), None)
            loss_axes, metric_axes = axes[row][0], axes[row][1]
            aux = " (auxiliary)" if task in runs.auxiliary else ""
            losses: list[float] = []
            for label in runs.labels:
                task_runs = runs.runs_of(label, task)
                if not task_runs:
                    continue
                style = _line_style(label, colours)
                loss_curves = [r.curve("train", task, "loss") for r in task_runs]
                losses += [value for curve in loss_curves for value in curve.values()]
                _mean_band(loss_axes, loss_curves, style)
                if main is not None:
                    curves = [r.curve("val", task, main) for r in task_runs]
                    _mean_band(metric_axes, curves, style)
            loss_axes.set_title(f"{task}{aux}: train loss")
            loss_axes.set_ylabel("loss")
            _log_if_wide(loss_axes, losses)
            if main is not None:
                metric_axes.set_title(f"{task}{aux}: val {main} ({ARROWS[directions[main]]})")
                metric_axes.set_ylabel(main)
            for ax in (loss_axes, metric_axes):
                ax.set_xlabel("epoch")
                _integer_ticks(ax)
        suffix = f" ({page_index}/{len(pages)})" if len(pages) > 1 else ""
        figure.suptitle(
            f"{runs.benchmark}: training curves, mean over seeds (band: min–max){suffix}"
        )
        _legend(figure, runs.labels, colours)
        name = "training_curves.png" if len(pages) == 1 else f"training_curves_{page_index}.png"
        written.append((f"Training curves{suffix}", _save(figure, plots_dir / name)))
    return written


def _mean_band(
    ax: Axes, curves: Sequence[Mapping[int, float]], style: dict[str, Any], *, offset: int = 1
) -> None:
    """Plot x → mean over ``curves`` with a min–max band; x shifted by ``offset``.

    Epochs are 0-based in the files and shown 1-based (offset 1); steps are shown as they are.
    """
    epochs = sorted({epoch for curve in curves for epoch in curve})
    if not epochs:
        return
    per_epoch = [[curve[e] for curve in curves if e in curve] for e in epochs]
    x = [epoch + offset for epoch in epochs]
    mean = [statistics.fmean(values) for values in per_epoch]
    ax.plot(x, mean, marker="o" if len(x) < 15 else None, markersize=3, **style)
    if len(curves) > 1:
        low = [min(values) for values in per_epoch]
        high = [max(values) for values in per_epoch]
        ax.fill_between(x, low, high, color=style["color"], alpha=0.15, linewidth=0)


# --- loss weights ---------------------------------------------------------------------------


def plot_loss_weights(
    runs: RunSet, plots_dir: Path, colours: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """Per task, the loss weight over steps of each method whose weights vary or differ."""
    weighted = [label for label in runs.methods if _has_weights(runs, label)]
    if not weighted:
        return []
    tasks = [
        task
        for task in runs.tasks
        if any(
            task in s.weights for label in weighted for r in runs.runs_of(label) for s in r.steps
        )
    ]
    columns = min(len(tasks), 3)
    figure, axes = _figure(math.ceil(len(tasks) / columns), columns)
    flat = [ax for row in axes for ax in row]
    for ax, task in zip(flat, tasks, strict=False):
        for label in weighted:
            curves = [
                {s.step: s.weights[task] for s in run.steps if task in s.weights}
                for run in runs.runs_of(label)
            ]
            _mean_band(ax, curves, _line_style(label, colours), offset=0)
        ax.set_title(f"loss weight of {task}")
        ax.set_xlabel("step")
        ax.set_ylabel("weight")
    for ax in flat[len(tasks) :]:
        ax.set_visible(False)
    figure.suptitle(f"{runs.benchmark}: loss weights over training, mean over seeds")
    _legend(figure, weighted, colours)
    return [("Loss weights over time", _save(figure, plots_dir / "loss_weights.png"))]


def _has_weights(runs: RunSet, label: str) -> bool:
    """Whether the method recorded weights that are not one constant (equal weighting)."""
    values = {
        weight
        for run in runs.runs_of(label)
        for step in run.steps
        for weight in step.weights.values()
    }
    return len(values) > 1


# --- CSO priority ---------------------------------------------------------------------------


def plot_priority(runs: RunSet, plots_dir: Path) -> list[tuple[str, Path]]:
    """Per method with ``priority.jsonl``: per layer, the task shares over epochs, stacked.

    The CSO paper's Fig. 4. Shares are averaged over seeds at each epoch end.
    """
    from matplotlib import colormaps, colors

    written = []
    for label in runs.methods:
        snapshots = [s for run in runs.runs_of(label) for s in run.priority]
        if not snapshots:
            continue
        tasks = list(dict.fromkeys(t for s in snapshots for t in s.tasks))
        palette = colormaps["Set2"].colors  # type: ignore[attr-defined]
        task_colours = [colors.to_hex(palette[i % len(palette)]) for i in range(len(tasks))]
        layers = list(dict.fromkeys(layer.name for s in snapshots for layer in s.layers))
        last_epoch = max(s.epoch for s in snapshots)
        columns = min(len(layers), 4)
        figure, axes = _figure(math.ceil(len(layers) / columns), columns, scale=0.8)
        flat = [ax for row in axes for ax in row]
        for ax, layer in zip(flat, layers, strict=False):
            per_epoch: dict[int, list[dict[str, float]]] = {}
            degenerate_at_end = []  # per seed: one task owns the whole layer after training
            for snapshot in snapshots:
                for entry in snapshot.layers:
                    if entry.name == layer:
                        per_epoch.setdefault(snapshot.epoch, []).append(entry.shares)
                        if snapshot.epoch == last_epoch:
                            degenerate_at_end.append(entry.is_degenerate)
            epochs = sorted(per_epoch)
            x = [epoch + 1 for epoch in epochs]
            stacks = [
                [statistics.fmean(s.get(task, 0.0) for s in per_epoch[e]) for e in epochs]
                for task in tasks
            ]
            if len(x) > 1:
                ax.stackplot(x, stacks, colors=task_colours, alpha=0.9)
                ax.set_xlim(x[0], x[-1])
            else:  # One epoch: a stacked bar, since an area needs two points.
                bottom = 0.0
                for stack, colour in zip(stacks, task_colours, strict=True):
                    ax.bar(x, stack, bottom=bottom, color=colour, width=0.6)
                    bottom += stack[0]
            ax.set_ylim(0, 1)
            ax.set_title(_shorten(layer) + _degenerate_note(degenerate_at_end))
            ax.set_xlabel("epoch")
            ax.set_ylabel("share of channels")
            _integer_ticks(ax)
        for ax in flat[len(layers) :]:
            ax.set_visible(False)
        from matplotlib.patches import Patch

        handles = [Patch(color=c, label=t) for t, c in zip(tasks, task_colours, strict=True)]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(tasks), 8))
        seeds = len(runs.runs_of(label))
        figure.suptitle(
            f"{runs.benchmark}, {label}: channel share owned by each task per layer "
            f"(mean over {seeds} seed{'s' if seeds > 1 else ''})"
        )
        path = plots_dir / f"priority_{_file_stem(label)}.png"
        written.append((f"Priority shares per layer ({label})", _save(figure, path)))
    return written


# --- trade-off ------------------------------------------------------------------------------


def plot_tradeoff(
    runs: RunSet, plots_dir: Path, colours: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """Test main metric of task A against task B per method, one point per seed (2–3 tasks)."""
    tasks = [task for task in runs.tasks if task not in runs.auxiliary]
    if not 2 <= len(tasks) <= 3 or not runs.methods:
        return []
    pairs = list(itertools.combinations(tasks, 2))
    figure, axes = _figure(1, len(pairs), square=True, min_width=6.4)
    for ax, (task_x, task_y) in zip(axes[0], pairs, strict=True):
        main_x, main_y = _main(runs, task_x), _main(runs, task_y)
        if main_x is None or main_y is None:
            continue
        up_x, up_y = runs.directions(task_x)[main_x], runs.directions(task_y)[main_y]
        for label in runs.methods:
            pairs_run = [r for r in runs.runs_of(label) if {task_x, task_y} <= set(r.tasks)]
            xs = [r.test[task_x][main_x] for r in pairs_run]
            ys = [r.test[task_y][main_y] for r in pairs_run]
            if not xs:
                continue
            colour = colours[label]
            ax.scatter(xs, ys, color=colour, s=28, alpha=0.75, label=label)
            ax.scatter(
                [statistics.fmean(xs)], [statistics.fmean(ys)], color=colour, s=110, marker="X",
                edgecolors="black", linewidths=0.6,
            )  # fmt: skip
        for task, main, draw in ((task_x, main_x, ax.axvline), (task_y, main_y, ax.axhline)):
            baseline = [r.test[task][main] for r in runs.runs_of(BASELINE_LABEL, task)]
            if baseline:
                draw(statistics.fmean(baseline), color=BASELINE_COLOUR, linestyle="--", lw=1)
        ax.set_xlabel(f"test {task_x} {main_x} ({ARROWS[up_x]})")
        ax.set_ylabel(f"test {task_y} {main_y} ({ARROWS[up_y]})")
        ax.set_title(f"{task_x} vs {task_y}")
        ax.margins(0.15)
        corner = {(True, True): "↗", (True, False): "↘", (False, True): "↖", (False, False): "↙"}
        ax.text(
            0.98 if up_x else 0.02, 0.98 if up_y else 0.02, f"better {corner[up_x, up_y]}",
            transform=ax.transAxes, ha="right" if up_x else "left",
            va="top" if up_y else "bottom", fontsize=9, color="0.35",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )  # fmt: skip
    legend = "dots: seeds, ✕: mean over seeds" + (", dashed: single-task" if runs.baselines else "")
    figure.suptitle(f"{runs.benchmark}: test trade-off\n({legend})")
    _legend(figure, runs.labels, colours, marker="o")
    return [("Task trade-off on test", _save(figure, plots_dir / "tradeoff.png"))]


def _main(runs: RunSet, task: str) -> str | None:
    return next(iter(runs.directions(task)), None)


# --- helpers --------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Plots need matplotlib, which is missing: `pip install matplotlib` (a dependency "
            "of taskprio; reinstall taskprio to get it)."
        ) from error


def _figure(
    rows: int, columns: int, *, scale: float = 1.0, square: bool = False, min_width: float = 0.0
) -> tuple[Figure, list[list[Axes]]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = PANEL_SIZE
    if square:
        height = width
    figure = Figure(
        figsize=(max(width * columns * scale, min_width), height * rows * scale + 0.9),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return figure, [list(row) for row in axes]


def _line_style(label: str, colours: Mapping[str, str]) -> dict[str, Any]:
    is_baseline = label == BASELINE_LABEL
    return {
        "color": colours[label],
        "linestyle": "--" if is_baseline else "-",
        "linewidth": 1.4 if is_baseline else 1.8,
        "label": label,
    }


def _legend(
    figure: Figure, labels: Sequence[str], colours: Mapping[str, str], *, marker: str = ""
) -> None:
    """One legend for the whole figure, below the plots: one entry per row label.

    With a ``marker``, methods show as markers (scatter plots) and the baseline as a line.
    """
    from matplotlib.lines import Line2D

    handles = []
    for label in labels:
        is_baseline = label == BASELINE_LABEL
        handles.append(
            Line2D(
                [],
                [],
                color=colours[label],
                linewidth=1.5 if marker else 2,
                linestyle="--" if is_baseline else ("none" if marker else "-"),
                marker="" if is_baseline else marker,
                label=label,
            )
        )
    # About 1.7 inches per entry keeps the longest labels ("sum+uncertainty") inside the figure.
    fitting = max(1, int(figure.get_size_inches()[0] / 1.7))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(labels), fitting))


def _log_if_wide(ax: Axes, values: Sequence[float]) -> None:
    """Log scale when the losses span more than a factor 20 (a falling loss reads better)."""
    finite = [value for value in values if math.isfinite(value)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _degenerate_note(flags: Sequence[bool]) -> str:
    if not any(flags):
        return ""
    if all(flags):
        return " (degenerate)"
    return f" (degenerate in {sum(flags)}/{len(flags)} seeds)"


def _shorten(name: str, limit: int = 32) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "method"


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path
