"""`taskprio bench`: baselines once, each method over seeds, Δm, a report; clear errors."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from taskprio.cli import app
from taskprio.data import data_root

runner = CliRunner()


def _require(name):
    if not (data_root() / f"{name}.npz").is_file():
        pytest.skip(f"{name} cache not found at {data_root() / f'{name}.npz'}; run `make data`")


@pytest.mark.slow
def test_bench_two_seeds_writes_baselines_runs_and_a_report_that_parses(tmp_path):
    _require("multimnist")
    out = tmp_path / "bench"
    arguments = ["bench", "multimnist", "--methods", "sum,cso", "--seeds", "2", "--epochs", "2"]
    arguments += ["--limit-batches", "3", "--out", str(out), "--quiet"]
    result = runner.invoke(app, arguments, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Δm %" in result.output and f"report: {out / 'report.md'}" in result.output
    for run in ("baselines/left", "baselines/right", "sum", "cso"):
        for seed in (0, 1):
            final = json.loads((out / run / f"seed{seed}" / "final.json").read_text())
            assert final["seed"] == seed
            assert (final["delta_m"] is None) == run.startswith("baselines")
    report = (out / "report.md").read_text()
    assert "## Δm against single-task baselines" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "equal" in line]
    assert len(rows) == 2  # sum and cso, each with its Δm
    with open(out / "results.csv", newline="") as file:
        results = list(csv.DictReader(file))
    assert len(results) == 8  # 2 baselines + 2 methods, 2 seeds each
    import matplotlib.image

    linked = [part.split(")")[0] for part in report.split("](")[1:] if ".png" in part]
    assert any("priority" in path for path in linked)
    for path in set(linked):
        image = matplotlib.image.imread(out / path)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0
    # Baselines are reused: a second bench with another method trains only that method.
    again = runner.invoke(app, [*arguments[:3], "pcgrad", *arguments[4:]], terminal_width=200)
    assert again.exit_code == 0, again.output
    assert "single-task left seed" not in again.output and "pcgrad seed 1" in again.output
    assert "reusing 8 finished run(s)" in again.output


def test_unknown_benchmark_or_method_exits_2():
    result = runner.invoke(app, ["bench", "multimnst"], terminal_width=200)
    assert result.exit_code == 2
    assert "unknown benchmark 'multimnst' (did you mean 'multimnist'?)" in result.output
    result = runner.invoke(app, ["bench", "multimnist", "--methods", "sum,pcgrd"])
    assert result.exit_code == 2
    assert "Did you mean 'pcgrad'" in result.output


def test_missing_data_exits_2_with_the_build_command(tmp_path):
    result = runner.invoke(
        app, ["bench", "multimnist", "--root", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "make data" in result.output
