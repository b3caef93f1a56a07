"""`taskprio train`: runs a config, reports config errors by key, refuses a used directory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from taskprio.cli import app
from taskprio.data import data_root

runner = CliRunner()


def _config(tmp_path, text):
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_config_errors_exit_2_and_name_each_key(tmp_path):
    path = _config(tmp_path, "benchmark: yeast\nmethod: {name: pcgard}\noptimizer: {lr: -1}\n")
    result = runner.invoke(app, ["train", str(path)], terminal_width=200)
    assert result.exit_code == 2
    assert "method.name: Unknown method 'pcgard'. Did you mean 'pcgrad'?" in result.output
    assert "optimizer.lr: Input should be greater than 0" in result.output
    result = runner.invoke(app, ["train", str(path), "--set", "epochs"], terminal_width=200)
    assert result.exit_code == 2 and "must look like `key=value`" in result.output


def test_train_writes_one_run_per_seed_and_refuses_to_overwrite(tmp_path):
    if not (data_root() / "yeast.npz").is_file():
        pytest.skip(f"yeast cache not found at {data_root() / 'yeast.npz'}; run `make data`")
    out = tmp_path / "out"
    path = _config(
        tmp_path, f"benchmark: yeast\ntasks: [class1, class2]\nepochs: 1\noutput_dir: {out}\n"
    )
    result = runner.invoke(
        app, ["train", str(path), "--set", "seeds=[0, 1]", "--quiet"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "class2" in result.output and "±" in result.output
    finals = [json.loads((out / f"seed{s}" / "final.json").read_text()) for s in (0, 1)]
    assert [f["seed"] for f in finals] == [0, 1]
    result = runner.invoke(app, ["train", str(path), "--quiet"], terminal_width=200)
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = runner.invoke(
        app, ["train", str(path), "--quiet", "--resume", str(out)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
