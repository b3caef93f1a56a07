"""`taskprio bench`: any benchmark, a table of test metrics per method, clear errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from taskprio.cli import app
from taskprio.data import data_root

runner = CliRunner()


def test_bench_prints_every_metric_for_every_method():
    if not (data_root() / "yeast.npz").is_file():
        pytest.skip(f"yeast cache not found at {data_root() / 'yeast.npz'}; run `make data`")
    result = runner.invoke(
        app,
        ["bench", "yeast", "--epochs", "1", "--methods", "sum,mgda", "--shared-norms", "--quiet"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "sum" in result.output and "mgda" in result.output
    assert "class14" in result.output and "f1" in result.output and "train s" in result.output


def test_unknown_benchmark_or_method_exits_2():
    result = runner.invoke(app, ["bench", "multimnst"])
    assert result.exit_code == 2
    assert "Did you mean 'multimnist'" in result.output
    result = runner.invoke(app, ["bench", "multimnist", "--methods", "sum,pcgrd"])
    assert result.exit_code == 2
    assert "Did you mean 'pcgrad'" in result.output


def test_missing_data_exits_2_with_the_build_command(tmp_path):
    result = runner.invoke(app, ["bench", "multimnist", "--root", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert "make data" in result.output
