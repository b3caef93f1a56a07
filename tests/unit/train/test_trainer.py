"""The trainer: run directory contents, exact resume, non-finite losses, incompatible resumes."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from taskprio.data import data_root
from taskprio.train import (
    NonFiniteLossError,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    parse_config,
    run_experiment,
)
from taskprio.train._checkpoint import list_checkpoints

TASKS = ["class1", "class2", "class3"]


@pytest.fixture(autouse=True)
def _yeast():
    if not (data_root() / "yeast.npz").is_file():
        pytest.skip(f"yeast cache not found at {data_root() / 'yeast.npz'}; run `make data`")


def _config(**changes):
    raw = {
        "benchmark": "yeast",
        "tasks": TASKS,
        "epochs": 2,
        "method": {"name": "cso"},
        "weighting": {"name": "dwa"},
        "schedule": {"name": "poly"},
        "checkpoint": {"every_steps": 5, "keep": 50},
        "record_every": 3,
        "device": "cpu",
    }
    raw.update(changes)
    return parse_config(raw)


def _final_state(run_dir):
    path = list_checkpoints(run_dir / "checkpoints")[-1]
    return load_checkpoint(path)


def _assert_same_state(first, second):
    for key in ("model",):
        assert first[key].keys() == second[key].keys()
        for name in first[key]:
            assert torch.equal(first[key][name], second[key][name]), name
    assert first["global_step"] == second["global_step"]
    assert repr(first["optimizer"]) == repr(second["optimizer"])
    assert repr(first["multitask_step"]) == repr(second["multitask_step"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run = Trainer(_config(), seed=1, run_dir=run_dir).fit()
    return run_dir, run


def test_run_directory_holds_what_reports_read(reference):
    run_dir, run = reference
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "environment.json", "metrics.csv", "records.jsonl"} <= names
    assert {"priority.jsonl", "final.json", "checkpoints", "tensorboard"} <= names
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert {(r["epoch"], r["split"]) for r in rows} == {
        ("0", "train"), ("0", "val"), ("1", "train"), ("1", "val"),
    }  # fmt: skip
    assert {r["metric"] for r in rows if r["split"] == "val"} == {"acc", "f1"}
    records = _jsonl(run_dir / "records.jsonl")
    assert [r["step"] for r in records] == list(range(3, run_dir_steps(run_dir) + 1, 3))
    assert {r["phase"] for r in records} <= {"phase1", "phase2"}
    priority = _jsonl(run_dir / "priority.jsonl")
    assert [p["epoch"] for p in priority] == [0, 1]
    shares = priority[-1]["layers"][0]["shares"]
    assert set(shares) == set(TASKS) and sum(shares.values()) == pytest.approx(1.0)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["role"] == "method" and final["method"] == "cso+dwa"
    assert final["test"] == run.test and final["metrics"]["class1"] == {"acc": True, "f1": True}
    assert list((run_dir / "tensorboard").iterdir())


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_dir_steps(run_dir):
    return latest_checkpoint(run_dir / "checkpoints")[1]["global_step"]


@pytest.mark.parametrize("stop_after", [7, 24])
def test_resume_from_any_checkpoint_is_bitwise_identical(reference, tmp_path, stop_after):
    reference_dir, reference_run = reference
    run_dir = tmp_path / "run"
    # Copy the run, then drop everything after the checkpoint of step `stop_after` (mid-epoch
    # for 7 — 5 is the last checkpoint before it — and an epoch boundary region for 24).
    import shutil

    shutil.copytree(reference_dir, run_dir)
    for path in list_checkpoints(run_dir / "checkpoints"):
        if int(path.stem.split("-")[1]) > stop_after:
            path.unlink()
    (run_dir / "final.json").unlink()
    resumed = Trainer(_config(), seed=1, run_dir=run_dir).fit(resume=True)
    _assert_same_state(_final_state(reference_dir), _final_state(run_dir))
    assert resumed.test == reference_run.test
    for name in ("metrics.csv", "records.jsonl", "priority.jsonl"):
        assert (run_dir / name).read_text() == (reference_dir / name).read_text(), name


def test_corrupted_newest_checkpoint_falls_back_and_still_matches(reference, tmp_path):
    import shutil

    reference_dir, _ = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    (run_dir / "final.json").unlink()
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    for path in checkpoints[-3:]:
        path.unlink()
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # torn write
    with pytest.warns(UserWarning, match="is truncated"):
        Trainer(_config(), seed=1, run_dir=run_dir).fit(resume=True)
    _assert_same_state(_final_state(reference_dir), _final_state(run_dir))


def test_a_second_fresh_run_into_a_used_directory_is_refused(reference):
    run_dir, _ = reference
    with pytest.raises(FileExistsError, match="resume it with --resume"):
        Trainer(_config(), seed=1, run_dir=run_dir).fit()


def test_resume_with_other_tasks_is_an_error_and_other_method_a_warning(reference, tmp_path):
    import shutil

    reference_dir, _ = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    with pytest.raises(ValueError, match="cannot resume: the checkpoint was trained with tasks"):
        Trainer(_config(tasks=["class1", "class2"]), seed=1, run_dir=run_dir).fit(resume=True)
    with pytest.warns(UserWarning, match="the current config wins"):
        Trainer(_config(epochs=3), seed=1, run_dir=run_dir).fit(resume=True)


def _exploding(**changes):
    return _config(
        method={"name": "pcgrad"},
        weighting={"name": "equal"},
        optimizer={"name": "sgd", "lr": 1e12, "momentum": 0.0},
        **changes,
    )


class _Snapshots:
    """Keeps the model state after each successful step (the last good state)."""

    def __init__(self):
        self.trainer = None
        self.last = None

    def start(self, **_):
        pass

    def step(self, **_):
        self.last = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}

    def epoch_end(self, **_):
        pass


def test_nonfinite_loss_stops_naming_task_epoch_and_step_with_state_saved(tmp_path):
    run_dir = tmp_path / "run"
    snapshots = _Snapshots()
    trainer = Trainer(_exploding(), seed=0, run_dir=run_dir, progress=snapshots)
    snapshots.trainer = trainer
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "loss of task 'class" in message and "At epoch 0, step " in message
    assert "on_nonfinite: skip" in message
    step = trainer.global_step
    assert step > 0 and f"step {step} (batch {step})" in message
    path, state = latest_checkpoint(run_dir / "checkpoints")
    assert state["global_step"] == step and str(path) in message
    # The failed step changed nothing: parameters and norm statistics are those of the last
    # good step, in the model and in the checkpoint.
    for name, value in snapshots.last.items():
        torch.testing.assert_close(state["model"][name], value, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(
            trainer.model.state_dict()[name], value, rtol=0, atol=0, equal_nan=True
        )


def test_nonfinite_policy_skip_counts_and_logs_the_steps(tmp_path):
    run_dir = tmp_path / "run"
    run = Trainer(_exploding(on_nonfinite="skip"), seed=0, run_dir=run_dir).fit()
    assert run.skipped_steps > 0
    events = (run_dir / "events.log").read_text().splitlines()
    assert len(events) == run.skipped_steps and events[0].startswith("skipped step at epoch")
    assert json.loads((run_dir / "final.json").read_text())["skipped_steps"] == run.skipped_steps


def test_run_experiment_trains_each_seed_and_resume_reads_finished_ones(tmp_path):
    config = _config(method={"name": "sum"}, weighting={"name": "equal"}, seeds=[0, 1], epochs=1)
    runs = run_experiment(config, output_dir=tmp_path)
    assert [run.seed for run in runs] == [0, 1]
    assert runs[0].test != runs[1].test
    again = run_experiment(config, output_dir=tmp_path, resume=True)
    assert [run.test for run in again] == [run.test for run in runs]


def test_bf16_precision_runs_the_forwards_under_autocast():
    config = _config(method={"name": "sum"}, weighting={"name": "equal"}, epochs=1)
    bf16 = Trainer(_config(method={"name": "sum"}, weighting={"name": "equal"}, epochs=1,
                           precision="bf16"), seed=0)  # fmt: skip
    dtypes = set()
    bf16._build()
    first_linear = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    run = bf16.fit()
    assert torch.bfloat16 in dtypes
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    reference = Trainer(config, seed=0).fit()
    assert run.epoch_losses != reference.epoch_losses
    assert all(abs(a - b) < 0.05 for a, b in zip(
        run.epoch_losses[0].values(), reference.epoch_losses[0].values(), strict=True
    ))  # fmt: skip


def test_bench_reuses_matching_runs_and_retrains_changed_ones(tmp_path):
    from taskprio.train import run_bench

    base = {"benchmark": "yeast", "tasks": ["class1", "class2"], "limit_batches": 2,
            "epochs": 1, "device": "cpu"}  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        # Two batches leave some F1 at 0, for which Δm is undefined (warned, stored as None).
        warnings.simplefilter("ignore", UserWarning)
        first = run_bench(base, ["sum"], output_dir=tmp_path)
        again = run_bench(base, ["sum"], output_dir=tmp_path)
        changed = run_bench({**base, "epochs": 2}, ["sum"], output_dir=tmp_path)
    assert again.runs["sum"][0].train_time_s == first.runs["sum"][0].train_time_s  # reused
    assert changed.runs["sum"][0].epochs == 2
    assert changed.baselines["class1"][0].epochs == 2
    # A report is written even when a baseline metric of 0 leaves Δm undefined.
    from taskprio.report import write_report

    report = write_report([tmp_path], out_dir=tmp_path).read_text()
    assert "| sum | equal |" in report
