"""Front plots: PNG files that exist and load, for 2, 3 and many objectives."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from taskprio.pareto import evaluation_preferences, plot_front


@pytest.mark.parametrize("num_objectives", [2, 3, 6])
def test_plot_writes_a_png_that_loads(tmp_path, num_objectives):
    from matplotlib.image import imread

    preferences = evaluation_preferences(num_objectives, divisions=4)
    fronts = {"lorpman": 1 - 0.5 * preferences, "pamal": (1 - 0.6 * preferences).numpy()}
    names = [f"task{i}/acc" for i in range(num_objectives)]
    path = plot_front(fronts, tmp_path / "sub" / "front.png", objective_names=names, title="t")
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # Not a blank canvas: something was drawn.
    assert np.ptp(image[..., :3]) > 0


@pytest.mark.parametrize(
    ("fronts", "names", "message"),
    [
        ({}, ["a", "b"], "at least one"),
        ({"x": [[0.1, 0.2, 0.3]]}, ["a", "b"], r"\[P, 2\]"),
        ({"x": [[0.1]]}, ["a"], "at least 2"),
    ],
)
def test_bad_fronts_are_reported(tmp_path, fronts, names, message):
    with pytest.raises(ValueError, match=message):
        plot_front(fronts, tmp_path / "f.png", objective_names=names)


def test_importing_the_package_loads_neither_matplotlib_nor_moocore():
    code = (
        "import sys, taskprio, taskprio.pareto; "
        "print(','.join(m for m in ('matplotlib', 'moocore') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_tensor_fronts_are_accepted(tmp_path):
    front = torch.tensor([[0.9, 0.5], [0.6, 0.8]], requires_grad=True)
    assert plot_front({"a": front}, tmp_path / "f.png", objective_names=["x", "y"]).is_file()
