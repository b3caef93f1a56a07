"""Experiment configs: every problem reported with its key path and the closest valid key."""

from __future__ import annotations

import pytest

from taskprio.train import ConfigError, apply_overrides, dump_config, load_config, parse_config


def _message(raw):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return str(caught.value)


def test_defaults_are_filled_in_and_round_trip_through_yaml(tmp_path):
    config = parse_config({"benchmark": "multimnist", "method": {"name": "cso"}})
    assert config.optimizer.name == "adam" and config.seeds == [0]
    assert config.model.task_norms is True and config.on_nonfinite == "stop"
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_unknown_keys_name_the_path_and_the_closest_key():
    message = _message(
        {"benchmark": "yeast", "optimiser": {}, "schedule": {"nmae": "poly"}, "epochs": 0}
    )
    assert "optimiser: unknown key; did you mean `optimizer`?" in message
    assert "schedule.nmae: unknown key; did you mean `name`?" in message
    assert "epochs: Input should be greater than or equal to 1" in message


def test_wrong_types_name_the_field_path():
    message = _message({"benchmark": "yeast", "optimizer": {"lr": "fast"}, "seeds": "one"})
    assert "optimizer.lr:" in message and "'fast'" in message
    assert "seeds:" in message


def test_names_and_options_are_checked_against_the_registries():
    message = _message(
        {
            "benchmark": "yeast",
            "tasks": ["class1", "clas2"],
            "method": {"name": "cso", "options": {"schedul": "mixed"}},
            "weighting": {"name": "uncertainy"},
        }
    )
    assert "tasks: yeast has no task 'clas2' (did you mean 'class2'?)" in message
    assert "method.options.schedul: cso takes no option 'schedul' (did you mean 'schedule'?)" in (
        message
    )
    assert "weighting.name:" in message and "'uncertainty'" in message


def test_option_values_are_checked_by_the_constructor_and_run_settings_refused():
    message = _message({"benchmark": "yeast", "method": {"name": "cso", "options": {"draw": "x"}}})
    assert "method.options:" in message and "`draw` must be one of" in message
    message = _message({"benchmark": "yeast", "method": {"name": "cso", "options": {"seed": 1}}})
    assert "method.options.seed: the run sets it from the top-level `seeds`" in message


def test_unknown_benchmark_and_model_options():
    assert "unknown benchmark 'multimnst' (did you mean 'multimnist'?)" in _message(
        {"benchmark": "multimnst"}
    )
    message = _message({"benchmark": "qm9", "model": {"options": {"hiden_sizes": [8]}}})
    assert "model.options.hiden_sizes: qm9 has no option 'hiden_sizes'" in message
    assert "'hidden_sizes'" in message
    assert "set `optimizer.lr` instead" in _message(
        {"benchmark": "qm9", "model": {"options": {"lr": 0.1}}}
    )


def test_overrides_parse_values_as_yaml_and_reject_malformed_ones(tmp_path):
    assert apply_overrides({}, ["a.b=3", "c=[0, 1]", "d=cso"]) == {
        "a": {"b": 3},
        "c": [0, 1],
        "d": "cso",
    }
    with pytest.raises(ConfigError, match="must look like `key=value`"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(ConfigError, match="`epochs` is not a section"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])
    path = tmp_path / "c.yaml"
    path.write_text("benchmark: yeast\nepochs: 2\n")
    assert load_config(path, ["epochs=5", "method.name=pcgrad"]).epochs == 5


def test_unreadable_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: [yeast\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- benchmark\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listed)
