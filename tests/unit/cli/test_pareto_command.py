"""`taskprio pareto` and `pareto-front`: files, tables, exact reload, configs, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskprio.cli import app
from taskprio.data import data_root
from taskprio.pareto import load_pareto_config, parse_pareto_config
from taskprio.train import ConfigError
from taskprio.train._checkpoint import load_checkpoint

runner = CliRunner()
METHODS = ("lorpman", "pamal", "cosmos")
CONFIGS = sorted((Path(__file__).parents[3] / "configs" / "pareto").glob("*.yaml"))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models: on a loaded 2-core machine two threads only slow them down."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _require(name):
    if not (data_root() / f"{name}.npz").is_file():
        pytest.skip(f"{name} cache not found at {data_root() / f'{name}.npz'}; run `make data`")


def _invoke(*arguments):
    return runner.invoke(app, [str(argument) for argument in arguments], terminal_width=200)


def _first_table(markdown):
    """The rows of the first Markdown table as lists of cells (header first, rule dropped)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_pareto_on_yeast_writes_every_file_and_pareto_front_reproduces_it(tmp_path):
    _require("yeast")
    out = tmp_path / "fronts"
    result = _invoke(
        "pareto", "yeast", "--tasks", "class1,class2", "--epochs", "1", "--limit-batches", "2",
        "--seed", "3", "--preferences", "0.2,0.8;1,1", "--device", "cpu", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "HV (metrics)" in result.output and f"report: {out / 'pareto.md'}" in result.output

    header, *rows = _first_table((out / "pareto.md").read_text())
    assert header[:4] == ["method", "HV (metrics)", "HV (losses)", "parameters"]
    assert [row[0] for row in rows] == list(METHODS)
    for method, row in zip(METHODS, rows, strict=True):
        front = json.loads((out / method / "front.json").read_text())
        assert front["method"] == method and front["tasks"] == ["class1", "class2"]
        assert front["seed"] == 3 and front["epochs"] == 1 and front["steps"] == 2
        assert float(row[1]) == pytest.approx(front["hypervolume"], rel=1e-3)
        assert int(row[3].replace(",", "")) == front["num_parameters"]
    assert rows[0][4] == "1.00"  # parameters relative to LORPMAN

    import matplotlib.image

    for image in [out / "fronts.png", *(out / method / "front.png" for method in METHODS)]:
        pixels = matplotlib.image.imread(image)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 0

    for method in METHODS:
        saved = load_checkpoint(out / method / "model.ckpt")
        assert saved["method"] == method and saved["benchmark"] == "yeast"
        assert saved["tasks"] == ["class1", "class2"] and saved["network"] == "norm_free"
        at = json.loads((out / method / "preferences.json").read_text())
        assert at["preferences"] == [[0.2, 0.8], [0.5, 0.5]]  # "1,1" divided by its sum
        # The same α in the default grid gives the same numbers.
        front = json.loads((out / method / "front.json").read_text())["test"]
        index = front["preferences"].index([0.5, 0.5])
        assert at["metrics"][1] == front["metrics"][index]
        assert at["losses"][1] == front["losses"][index]
        # Reloaded without training: the same losses and metrics, bit for bit.
        again = tmp_path / f"{method}.json"
        result = _invoke(
            "pareto-front", out / method, "--preferences", "0.2,0.8;1,1", "--json", again,
            "--device", "cpu",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(again.read_text()) == at
    assert f"{at['metrics'][0]['class2']['acc']:.4g}" in result.output

    # Without --preferences: the default set, as in front.json.
    default = tmp_path / "default.json"
    result = _invoke(
        "pareto-front", out / "lorpman" / "model.ckpt", "--json", default, "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    front = json.loads((out / "lorpman" / "front.json").read_text())["test"]
    assert json.loads(default.read_text()) == front

    result = _invoke("pareto-front", out / "cosmos", "--preferences", "1,2,3")
    assert result.exit_code == 2
    assert "has 3 values; expected 2, one per task (class1, class2)" in result.output
    result = _invoke("pareto-front", out / "cosmos" / "front.json")
    assert result.exit_code == 2 and "not a taskprio checkpoint" in result.output


def test_flags_override_the_config(tmp_path):
    _require("yeast")
    config = tmp_path / "pareto.yaml"
    config.write_text(
        "benchmark: yeast\nmethods: [pamal]\ntasks: [class1, class2]\nepochs: 4\nseed: 5\n"
        "options: {cosmos: {cosine_weight: 2.0}}\n"
    )
    out = tmp_path / "out"
    result = _invoke(
        "pareto", "--config", config, "--methods", "cosmos", "--epochs", "1",
        "--limit-batches", "1", "--option", "cosmos.window=2", "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cosmos epoch 1/1" in result.output  # not --quiet: one line per epoch
    front = json.loads((out / "cosmos" / "front.json").read_text())
    assert (front["epochs"], front["seed"], front["steps"]) == (1, 5, 1)
    assert front["options"] == {"window": 2, "concentration": 1.0, "cosine_weight": 2.0}
    assert not (out / "pamal").exists()


def test_wrong_preferences_exit_2_naming_the_number_of_tasks():
    result = _invoke("pareto", "yeast", "--tasks", "class1,class2", "--preferences", "0.2,0.3,0.5")
    assert result.exit_code == 2
    assert (
        "preference 1 (0.2, 0.3, 0.5) has 3 values; expected 2, one per task (class1, class2)"
        in (result.output)
    )
    result = _invoke("pareto", "yeast", "--tasks", "class1,class2", "--preferences", "1,1;0.5,-1")
    assert result.exit_code == 2 and "preference 2 (0.5, -1) has a negative" in result.output
    result = _invoke("pareto", "yeast", "--preferences", "a,b")
    assert result.exit_code == 2 and "is not a comma-separated list of numbers" in result.output


def test_misspelt_config_keys_and_options_name_the_closest_one(tmp_path):
    config = tmp_path / "pareto.yaml"
    config.write_text("benchmark: yeast\nmethds: [lorpman]\noptions: {lorpman: {rnak: 4}}\n")
    result = _invoke("pareto", "--config", config)
    assert result.exit_code == 2
    assert "methds: unknown key; did you mean `methods`?" in result.output
    assert "options.lorpman.rnak: lorpman takes no option 'rnak' (did you mean 'rank'?)" in (
        result.output
    )
    result = _invoke(
        "pareto", "yeast", "--methods", "lorpman,cosmso", "--option", "lorpman.rank=-1"
    )
    assert result.exit_code == 2
    assert "Did you mean 'cosmos'?" in result.output
    assert "options.lorpman: `rank` must be non-negative, but got -1." in result.output
    result = _invoke("pareto", "yeast", "--option", "rank=4")
    assert result.exit_code == 2 and "must look like METHOD.NAME=VALUE" in result.output
    result = _invoke("pareto")
    assert result.exit_code == 2 and "name a BENCHMARK" in result.output


def test_missing_data_exits_2_with_the_build_command(tmp_path):
    result = _invoke("pareto", "yeast", "--root", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "Yeast not found at" in result.output and "taskprio.data yeast" in result.output


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_shipped_configs_validate_and_give_their_command(path):
    config = load_pareto_config(path)
    assert config.benchmark == path.stem
    assert f"taskprio pareto --config configs/pareto/{path.name}" in path.read_text()


def test_there_is_a_shipped_config_per_documented_benchmark():
    assert [path.stem for path in CONFIGS] == ["multimnist", "qm9", "yeast"]


def test_config_values_are_checked_against_the_tasks():
    with pytest.raises(ConfigError) as caught:
        parse_pareto_config(
            {"benchmark": "yeast", "tasks": ["class1", "clas2"], "reference_point": [0.0]}
        )
    assert "tasks: yeast has no task 'clas2' (did you mean 'class2'?)" in str(caught.value)
    with pytest.raises(ConfigError, match="reference_point: has 1 values; expected 2"):
        parse_pareto_config(
            {"benchmark": "yeast", "tasks": ["class1", "class2"], "reference_point": [0.0]}
        )
