"""`taskprio data`: status table, layouts of the paper datasets, builds, bad names."""

from __future__ import annotations

from typer.testing import CliRunner

from taskprio.cli import app

runner = CliRunner()


def test_status_lists_every_data_set(tmp_path):
    result = runner.invoke(app, ["data", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("multimnist", "qm9", "yeast", "nyuv2", "pascal_context", "cityscapes", "celeba"):
        assert name in result.output
    assert "built" not in result.output.replace("not built", "")


def test_paper_dataset_shows_its_layout(tmp_path):
    result = runner.invoke(app, ["data", "nyuv2", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "gt_sets" in result.output and str(tmp_path / "nyuv2") in result.output
    result = runner.invoke(app, ["data", "nyuv2", "--build", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "nothing to build" in result.output


def test_unknown_data_set_exits_2_and_lists_the_known_ones():
    result = runner.invoke(app, ["data", "nyu"])
    assert result.exit_code == 2
    assert "unknown data set 'nyu'" in result.output and "nyuv2" in result.output


def test_build_a_small_cache(tmp_path):
    import pytest

    pytest.importorskip("river", reason="yeast ships in river; `pip install 'taskprio[data]'`")
    result = runner.invoke(app, ["data", "yeast", "--build", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "yeast.npz").is_file()
