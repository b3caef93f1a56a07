"""Front plots written to PNG.

A curve for 2 objectives, a 3-D scatter for 3, parallel coordinates for more. matplotlib is
imported only inside :func:`plot_front`, and only its object-oriented API is used (no pyplot,
no global backend change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from taskprio.pareto._hypervolume import _as_array


def plot_front(
    fronts: Mapping[str, ArrayLike | Tensor],
    path: str | Path,
    *,
    objective_names: Sequence[str],
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw one or more fronts (e.g. one per method) into a PNG file.

    - 2 objectives: each front as a curve through its points, in the given order (the order
      of the preferences, so the curve follows the front);
    - 3 objectives: a 3-D scatter;
    - more: parallel coordinates, one line per point, one axis per objective.

    Args:
        fronts: label → [P, m] points (rows in preference order); all with the same m ≥ 2.
        path: the PNG file to write; missing parent folders are created.
        objective_names: m axis names.
        title: the figure's title.
        dpi: resolution.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = plot_front({"lorpman": [[0.9, 0.5], [0.6, 0.8]]},
    ...                          Path(folder) / "front.png", objective_names=["left", "right"])
    ...     written.stat().st_size > 0
    True
    """
    if not fronts:
        raise ValueError("`fronts` must hold at least one labelled front; got none.")
    arrays = {label: _as_array(points) for label, points in fronts.items()}
    num_objectives = len(objective_names)
    for label, array in arrays.items():
        if array.ndim != 2 or array.shape[1] != num_objectives:
            raise ValueError(
                f"front {label!r} must be [P, {num_objectives}] (one column per name in "
                f"`objective_names`); got shape {array.shape}."
            )
    if num_objectives < 2:
        raise ValueError(f"a front needs at least 2 objectives to plot; got {num_objectives}.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8) if num_objectives <= 3 else (8.0, 4.8))
    FigureCanvasAgg(figure)
    if num_objectives == 2:
        _curve(figure, arrays, objective_names)
    elif num_objectives == 3:
        _scatter_3d(figure, arrays, objective_names)
    else:
        _parallel_coordinates(figure, arrays, objective_names)
    if title is not None:
        figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=dpi, format="png")
    return target


def _curve(figure: Any, arrays: Mapping[str, NDArray[np.float64]], names: Sequence[str]) -> None:
    axes = figure.add_subplot()
    for label, array in arrays.items():
        axes.plot(array[:, 0], array[:, 1], marker="o", markersize=4, label=label)
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    axes.grid(alpha=0.3)
    axes.legend()


def _scatter_3d(
    figure: Any, arrays: Mapping[str, NDArray[np.float64]], names: Sequence[str]
) -> None:
    axes = figure.add_subplot(projection="3d")
    for label, array in arrays.items():
        axes.scatter(array[:, 0], array[:, 1], array[:, 2], s=12, label=label)
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    axes.set_zlabel(names[2])
    axes.legend()


def _parallel_coordinates(
    figure: Any, arrays: Mapping[str, NDArray[np.float64]], names: Sequence[str]
) -> None:
    from matplotlib import rcParams

    axes = figure.add_subplot()
    positions = np.arange(len(names))
    colors = rcParams["axes.prop_cycle"].by_key()["color"]  # the default color cycle
    for front_index, (label, array) in enumerate(arrays.items()):
        color = colors[front_index % len(colors)]
        for row_index, row in enumerate(array):
            axes.plot(
                positions,
                row,
                color=color,
                alpha=0.6,
                linewidth=1,
                label=label if row_index == 0 else None,
            )
    axes.set_xticks(positions, list(names), rotation=45, ha="right")
    axes.set_xlim(positions[0], positions[-1])
    axes.grid(axis="x", alpha=0.5)
    axes.legend()
