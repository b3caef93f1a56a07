"""A training process killed with SIGKILL at a random step resumes to the very same parameters."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from taskprio.data import data_root
from taskprio.train import load_checkpoint
from taskprio.train._checkpoint import list_checkpoints

CONFIG = """\
benchmark: yeast
tasks: [class1, class2, class3, class4]
epochs: 2
method: {name: cso}
weighting: {name: rlw}
schedule: {name: cosine}
checkpoint: {every_steps: 1, keep: 3}
device: cpu
"""


def _train(config, *extra):
    return [sys.executable, "-m", "taskprio.cli", "train", str(config), "--quiet", *extra]


def _last_state(run_dir):
    return load_checkpoint(list_checkpoints(run_dir / "seed0" / "checkpoints")[-1])


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(tmp_path):
    if not (data_root() / "yeast.npz").is_file():
        pytest.skip(f"yeast cache not found at {data_root() / 'yeast.npz'}; run `make data`")
    config = tmp_path / "experiment.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "TASKPRIO_DATA": str(data_root().resolve()), "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(
        _train(config, "--set", f"output_dir={straight}"), env=env, check=True, timeout=300
    )
    kill_at = random.Random().randint(2, 40)  # of 48 steps
    process = subprocess.Popen(
        _train(config, "--set", f"output_dir={killed}"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = killed / "seed0" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(checkpoints)]
        if steps and max(steps) >= kill_at:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "seed0" / "final.json").exists()
    subprocess.run(
        _train(config, "--set", f"output_dir={killed}", "--resume", str(killed)),
        env=env,
        check=True,
        timeout=300,
    )
    expected_state, resumed_state = _last_state(straight), _last_state(killed)
    assert resumed_state["global_step"] == expected_state["global_step"] == 48
    for name, value in expected_state["model"].items():
        assert torch.equal(resumed_state["model"][name], value), f"{name} (killed at {kill_at})"
    assert repr(resumed_state["optimizer"]) == repr(expected_state["optimizer"])
    for name in ("metrics.csv", "records.jsonl", "priority.jsonl", "final.json"):
        expected = (straight / "seed0" / name).read_text()
        resumed = (killed / "seed0" / name).read_text()
        if name == "final.json":  # wall times differ
            expected, resumed = _without_times(expected), _without_times(resumed)
        assert resumed == expected, name


def _without_times(text):
    import json

    data = json.loads(text)
    data.pop("train_time_s")
    return data
