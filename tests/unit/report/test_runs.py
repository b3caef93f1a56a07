"""load_run and find_runs: the run-directory format read back, and errors that name the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _report_runs import BASELINE_TEST, EPOCHS, METHOD_TEST, write_bench, write_run

from taskprio.report import RunRecord, find_runs, load_run


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bench(tmp_path_factory.mktemp("runs") / "bench")


def copy_run(bench: Path, tmp_path: Path, name: str = "cso/seed0") -> Path:
    target = tmp_path / "run"
    shutil.copytree(bench / name, target)
    return target


def test_load_run_reads_every_file(bench: Path):
    run = load_run(bench / "cso" / "seed0")
    assert (run.role, run.method, run.weighting, run.seed) == ("method", "cso", "equal", 0)
    assert run.tasks == ("left", "right") and run.counted_tasks == ("left", "right")
    assert run.metrics == {"left": {"acc": True, "nll": False}, "right": {"acc": True}}
    assert run.main_metric("left") == "acc"
    assert run.test == METHOD_TEST["cso", 0]
    assert run.epochs == EPOCHS and run.train_time_s == 12.0
    assert run.environment["torch"] == "2.13.0"
    # 3 epochs × (2 train losses + 3 val metrics).
    assert len(run.history) == EPOCHS * 5
    assert sorted(run.curve("val", "left", "nll")) == [0, 1, 2]
    assert run.curve("val", "left", "nll")[2] == pytest.approx(0.38)
    assert len(run.steps) == 15 and run.steps[1].phase == "phase1"
    assert run.steps[0].conflict == {"cos_min": -0.1} and run.steps[0].weights == {}
    assert [snapshot.epoch for snapshot in run.priority] == [0, 1, 2]
    assert run.priority[-1].layers[-1].is_degenerate
    assert sum(run.priority[0].layers[0].shares.values()) == pytest.approx(1.0)


def test_load_run_accepts_final_json_and_baselines(bench: Path):
    run = load_run(bench / "baselines" / "left" / "seed1" / "final.json")
    assert run.is_baseline and run.tasks == ("left",)
    assert run.test == {"left": BASELINE_TEST["left", 1]}
    assert run.priority == ()
    assert run.path == bench / "baselines" / "left" / "seed1"


def test_find_runs_searches_bench_dirs_and_reads_each_run_once(bench: Path):
    runs = find_runs([bench])
    assert len(runs) == 8
    assert sum(run.is_baseline for run in runs) == 4
    mixed = find_runs([bench / "cso" / "seed1", bench, bench / "baselines"])
    assert sorted(str(run.path) for run in mixed) == sorted(str(run.path) for run in runs)
    assert all(isinstance(run, RunRecord) for run in mixed)


def test_missing_final_json_names_it_and_its_writer(bench: Path, tmp_path: Path):
    run_dir = copy_run(bench, tmp_path)
    (run_dir / "final.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"not a run directory: final\.json is missing"):
        load_run(run_dir)
    # Through find_runs too: a directory with metrics.csv but no final.json is a broken run.
    with pytest.raises(FileNotFoundError, match=r"final\.json is missing; the trainer"):
        find_runs([run_dir])


def test_missing_metrics_csv_names_it(bench: Path, tmp_path: Path):
    run_dir = copy_run(bench, tmp_path)
    (run_dir / "metrics.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv is missing; the trainer appends"):
        load_run(run_dir)


def test_paths_without_runs(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs([tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"No run under .*no final\.json"):
        find_runs([tmp_path])
    with pytest.raises(ValueError, match="`paths` is empty"):
        find_runs([])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("epoch,task,value\n0,left,1.0\n", r"header must be `epoch,split,task,metric,value`"),
        ("", r"header must be .* got an empty file"),
        ("epoch,split,task,metric,value\n0,train,left,loss,abc\n", r"line 2: `value` .* 'abc'"),
        ("epoch,split,task,metric,value\n0,val,left,acc\n", r"line 2: expected 5 fields"),
        ("epoch,split,task,metric,value\n0,train,left,loss,1\nx,val,left,acc,1\n", r"line 3"),
    ],
)
def test_malformed_metrics_csv_names_file_and_line(
    bench: Path, tmp_path: Path, content: str, message: str
):
    run_dir = copy_run(bench, tmp_path)
    (run_dir / "metrics.csv").write_text(content)
    with pytest.raises(ValueError, match=r"metrics\.csv.*" + message):
        load_run(run_dir)


def test_malformed_final_json_reports_every_problem_at_once(bench: Path, tmp_path: Path):
    run_dir = copy_run(bench, tmp_path)
    final = json.loads((run_dir / "final.json").read_text())
    final["role"] = "teacher"
    del final["seed"]
    del final["test"]["right"]
    (run_dir / "final.json").write_text(json.dumps(final))
    with pytest.raises(ValueError, match="malformed") as error:
        load_run(run_dir)
    text = str(error.value)
    assert "`role` must be one of ['method', 'baseline']; got 'teacher'" in text
    assert "`seed` is missing" in text
    assert "`test`['right'] lacks ['acc']" in text


def test_baseline_with_two_tasks_is_rejected(tmp_path: Path):
    write_run(
        tmp_path / "run", role="baseline", method="single", weighting="equal", seed=0,
        tasks=("left", "right"), test=METHOD_TEST["cso", 0],
    )  # fmt: skip
    with pytest.raises(ValueError, match="a baseline run has exactly one task"):
        load_run(tmp_path / "run")


def test_damaged_json_names_the_line(bench: Path, tmp_path: Path):
    run_dir = copy_run(bench, tmp_path)
    with (run_dir / "records.jsonl").open("a") as file:
        file.write('{"step": 150, "epoch"\n')
    with pytest.raises(ValueError, match=r"records\.jsonl, line 16: not valid JSON"):
        load_run(run_dir)
    (run_dir / "final.json").write_text("{")
    with pytest.raises(ValueError, match=r"final\.json, line 1: not valid JSON"):
        load_run(run_dir)


def test_optional_files_may_be_absent(bench: Path, tmp_path: Path):
    run_dir = copy_run(bench, tmp_path)
    for name in ("records.jsonl", "priority.jsonl", "environment.json", "config.yaml"):
        (run_dir / name).unlink()
    run = load_run(run_dir)
    assert run.steps == () and run.priority == () and run.environment == {}
