"""Every shipped config in configs/ validates, and names the benchmark of its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskprio.train import load_config

# configs/pareto/ holds `taskprio pareto` configs, checked in tests/unit/cli/test_pareto_command.py.
CONFIGS = sorted(
    path
    for path in (Path(__file__).parents[3] / "configs").rglob("*.yaml")
    if path.parent.name != "pareto"
)


def test_there_is_a_config_for_every_offline_benchmark():
    from taskprio.data import available_benchmarks

    directories = {path.parent.name for path in CONFIGS}
    assert set(available_benchmarks()) <= directories


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    config = load_config(path)
    assert config.benchmark == path.parent.name
    assert f"taskprio train configs/{path.parent.name}/{path.name}" in path.read_text()
