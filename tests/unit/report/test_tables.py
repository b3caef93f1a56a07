"""Δm and per-task tables: numbers against a hand computation, bold marks, baseline matching."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from _report_runs import BASELINE_TEST, METHOD_TEST, METRICS, write_bench

from taskprio.report import RunRecord, delta_m_table, find_runs, metric_tables


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[RunRecord]:
    return find_runs([write_bench(tmp_path_factory.mktemp("runs") / "bench")])


def hand_delta_m(label: str, seed: int, baseline_seed: int | None = None) -> float:
    """Δm (%) written out with explicit loops in float64, + is better."""
    baseline_seed = seed if baseline_seed is None else baseline_seed
    changes = []
    for task, directions in METRICS.items():
        for metric, is_higher in directions.items():
            ours = METHOD_TEST[label, seed][task][metric]
            theirs = BASELINE_TEST[task, baseline_seed][metric]
            sign = 1.0 if is_higher else -1.0
            changes.append(sign * (ours - theirs) / theirs)
    return 100.0 * sum(changes) / len(changes)


def test_hand_values_are_the_ones_in_the_fixture_comment():
    # The fixture picks values whose Δm is a round mix of ±1 %, ±2 %, ±5 %.
    assert hand_delta_m("cso", 0) == pytest.approx(9.5 / 3)
    assert hand_delta_m("cso", 1) == pytest.approx(7.0 / 3)
    assert hand_delta_m("sum+uw", 0) == pytest.approx(-5.0 / 3)
    assert hand_delta_m("sum+uw", 1) == pytest.approx(-1.0)


def test_delta_m_matches_hand_computation(runs: list[RunRecord]):
    table = delta_m_table(runs)
    rows = {row.method: row for row in table.rows}
    for label in ("cso", "sum+uw"):
        expected = [hand_delta_m(label, seed) for seed in (0, 1)]
        assert rows[label].per_seed_pct == pytest.approx(dict(enumerate(expected)), abs=1e-12)
        assert rows[label].delta_m_pct is not None
        assert rows[label].delta_m_pct.mean == pytest.approx(statistics.fmean(expected))
        assert rows[label].delta_m_pct.std == pytest.approx(statistics.stdev(expected))
        assert rows[label].seeds == (0, 1) and rows[label].delta_m_pct.num_runs == 2
    # mean (3.1667 + 2.3333) / 2, std |3.1667 − 2.3333| / √2; −1.3333 ± 0.4714.
    assert rows["cso"].cells()[2] == "+2.75 ± 0.59"
    assert rows["sum+uw"].cells()[2] == "-1.33 ± 0.47"


def test_baseline_row_first_and_best_row_bold(runs: list[RunRecord]):
    table = delta_m_table(runs)
    assert [row.method for row in table.rows] == ["single-task", "cso", "sum+uw"]
    assert table.rows[0].is_baseline and table.rows[0].cells()[2] == "0.00"
    assert [row.is_best for row in table.rows] == [False, True, False]
    markdown = table.to_markdown().splitlines()
    assert markdown[0].startswith("| Method | Weighting | Δm (%) ↑[^dm] |")
    assert markdown[2].startswith("| single-task | — | 0.00 | 2 | 3 |")
    assert markdown[3].startswith("| **cso** | **equal** | **+2.75 ± 0.59** |")
    assert markdown[4].startswith("| sum+uw | uncertainty | -1.33 ± 0.47 |")
    assert "baseline of the same seed" in markdown[-1] and markdown[-1].startswith("[^dm]:")


def test_baseline_best_when_every_method_is_worse(runs: list[RunRecord]):
    table = delta_m_table([run for run in runs if run.method != "cso"])
    assert [(row.method, row.is_best) for row in table.rows] == [
        ("single-task", True),
        ("sum+uw", False),
    ]


def test_missing_seed_uses_the_mean_over_baseline_seeds(runs: list[RunRecord]):
    # Drop the seed-1 baselines: the seed-1 runs fall back to the mean over baseline seeds,
    # which is then the seed-0 baseline alone; then drop seed 0 and keep seed 1 for `left`.
    kept = [run for run in runs if not (run.is_baseline and run.seed == 1)]
    rows = {row.method: row for row in delta_m_table(kept).rows}
    assert rows["cso"].per_seed_pct[1] == pytest.approx(hand_delta_m("cso", 1, baseline_seed=0))
    assert rows["cso"].per_seed_pct[0] == pytest.approx(hand_delta_m("cso", 0))
    notes = " ".join(delta_m_table(kept).notes)
    assert "mean of the baseline over its seeds" in notes
    assert "task 'left': run seeds 1, baseline seeds 0" in notes


def test_mean_over_two_baseline_seeds_by_hand():
    # Baseline seeds 0 and 1 (acc 80, 90 → mean 85); the method's seed 2 has none of its own.
    def run(role: str, method: str, seed: int, acc: float) -> RunRecord:
        return RunRecord(
            role=role, method=method, seed=seed, tasks=("a",), metrics={"a": {"acc": True}},
            test={"a": {"acc": acc}},
        )  # fmt: skip

    runs = [run("baseline", "single", 0, 80.0), run("baseline", "single", 1, 90.0)]
    row = delta_m_table([*runs, run("method", "m", 2, 93.5)]).rows[1]
    assert row.per_seed_pct[2] == pytest.approx((93.5 - 85.0) / 85.0 * 100.0)
    assert row.cells()[2] == "+10.00"  # One seed: no ± std.


def test_no_baselines_gives_na_and_says_how_to_train_them(runs: list[RunRecord]):
    table = delta_m_table([run for run in runs if not run.is_baseline])
    assert not table.has_baselines
    assert [row.cells()[2] for row in table.rows] == ["n/a", "n/a"]
    assert not any(row.is_best for row in table.rows)
    assert "`taskprio bench multimnist` trains them" in table.notes[0]
    assert "[^dm]" not in table.to_markdown()


def test_a_task_without_baseline_gives_na_for_that_method(runs: list[RunRecord]):
    table = delta_m_table([run for run in runs if run.tasks != ("right",)])
    assert [row.cells()[2] for row in table.rows] == ["0.00", "n/a", "n/a"]
    assert "no baseline of task(s) right" in " ".join(table.notes)


def test_metric_tables_mean_std_and_best_per_column(runs: list[RunRecord]):
    tables = {table.task: table for table in metric_tables(runs)}
    left = tables["left"]
    assert left.header == ("Method", "acc ↑", "nll ↓")
    rows = {row.method: row for row in left.rows}
    assert [row.method for row in left.rows] == ["single-task", "cso", "sum+uw"]
    acc = [METHOD_TEST["cso", s]["left"]["acc"] for s in (0, 1)]
    assert rows["cso"].values["acc"] is not None
    assert rows["cso"].values["acc"].mean == pytest.approx(statistics.fmean(acc))
    assert rows["cso"].values["acc"].std == pytest.approx(statistics.stdev(acc))
    # Lower nll is better: cso's 0.361 beats the baseline's 0.38 and sum+uw's 0.399.
    assert rows["cso"].best == frozenset({"acc", "nll"})
    assert rows["single-task"].best == frozenset()
    assert "| cso | **92.82 ± 1.44** | **0.3610 ± 0.0269** |" in left.to_markdown()
    right = {row.method: row for row in tables["right"].rows}
    assert right["sum+uw"].best == frozenset({"acc"})


def test_runs_that_cannot_be_compared_are_rejected(runs: list[RunRecord]):
    cso = next(run for run in runs if run.method == "cso")
    with pytest.raises(ValueError, match="Two runs of 'cso' with seed 0"):
        delta_m_table([cso, cso])
    other = RunRecord(
        role="method", method="x", seed=0, tasks=("a",), metrics={"a": {"acc": True}},
        test={"a": {"acc": 1.0}}, benchmark="qm9", path=Path("elsewhere"),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"2 benchmarks .* report each benchmark separately"):
        delta_m_table([cso, other])


def test_non_finite_metric_gives_nan_not_an_error(runs: list[RunRecord]):
    cso = next(run for run in runs if run.method == "cso" and run.seed == 0)
    diverged = RunRecord(**{**cso.__dict__, "test": {"left": {"acc": math.nan, "nll": 1.0},
                                                      "right": {"acc": 1.0}}})  # fmt: skip
    kept = [run for run in runs if run.method != "cso" or run.seed != 0]
    row = next(row for row in delta_m_table([*kept, diverged]).rows if row.method == "cso")
    assert row.delta_m_pct is not None and math.isnan(row.delta_m_pct.mean)
    assert row.cells()[2] == "nan" and not row.is_best
