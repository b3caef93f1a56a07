"""write_report end to end on a generated bench directory: report.md, results.csv, PNGs.

One report is generated for the whole module (matplotlib is slow to import and draw).
"""

from __future__ import annotations

import ast
import csv
import re
import sys
from pathlib import Path

import pytest
from _report_runs import METHOD_TEST, write_bench, write_run

from taskprio.report import write_report

EXPECTED_PLOTS = {"training_curves.png", "loss_weights.png", "priority_cso.png", "tradeoff.png"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bench = write_bench(tmp_path_factory.mktemp("runs") / "bench")
    path = write_report([bench])
    # Figures are drawn on their own Agg canvas: none is left open in pyplot's registry.
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []
    return path


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_is_written_in_the_single_directory_given(report: Path):
    assert report.name == "report.md" and report.parent.name == "bench"
    assert (report.parent / "results.csv").is_file()
    assert {path.name for path in (report.parent / "plots").iterdir()} == EXPECTED_PLOTS


def test_delta_m_table_in_markdown(report: Path):
    table = section(report.read_text(), "Δm against single-task baselines").strip().splitlines()
    assert table[2].startswith("| single-task | — | 0.00 | 2 | 3 |")
    assert table[3].startswith("| **cso** | **equal** | **+2.75 ± 0.59** | **2** | **3** |")
    assert table[4].startswith("| sum+uw | uncertainty | -1.33 ± 0.47 | 2 | 3 |")
    assert "Every run is compared with the baseline of the same seed." in table[-1]


def test_summary_and_metric_tables(report: Path):
    text = report.read_text()
    assert "- Seeds: 2 per method (0, 1)." in text
    assert "- Budget: 3 epochs per run." in text
    assert "torch 2.13.0" in text and "device cpu" in text
    metrics = section(text, "Test metrics per task")
    assert "### left\n\n| Method | acc ↑ | nll ↓ |" in metrics
    assert "| sum+uw | **83.24 ± 3.45** |" in metrics  # right: sum+uw has the best acc


def test_every_linked_png_exists_and_loads(report: Path):
    from matplotlib.image import imread

    links = re.findall(r"\]\((plots/[^)]+\.png)\)", report.read_text())
    assert {Path(link).name for link in links} == EXPECTED_PLOTS
    for link in set(links):
        image = imread(report.parent / link)
        height, width = image.shape[:2]
        assert height >= 300 and width >= 500, (link, image.shape)
        assert image[..., :3].std() > 0.05, f"{link} is blank"


def test_results_csv_has_one_row_per_run_with_delta_m(report: Path):
    with (report.parent / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8
    assert {"test/left/acc", "test/left/nll", "val/right/acc"} <= set(rows[0])
    by_run = {(row["method"], row["seed"]): row for row in rows}
    assert float(by_run["cso", "0"]["delta_m_pct"]) == pytest.approx(9.5 / 3)
    assert (
        float(by_run["sum+uw", "1"]["test/right/acc"]) == METHOD_TEST["sum+uw", 1]["right"]["acc"]
    )
    assert by_run["single-task", "0"]["delta_m_pct"] == ""
    assert by_run["single-task", "0"]["role"] == "baseline"


def test_out_dir_is_required_for_several_paths(report: Path, tmp_path: Path):
    bench = report.parent
    with pytest.raises(ValueError, match="`out_dir` is required"):
        write_report([bench / "cso", bench / "baselines"])


def test_report_without_baselines_says_how_to_get_them(tmp_path: Path):
    run_dir = write_run(
        tmp_path / "run", role="method", method="sum", weighting="equal", seed=0,
        tasks=("left", "right"), test=METHOD_TEST["cso", 0], epochs=1,
    )  # fmt: skip
    text = write_report([run_dir], tmp_path / "out").read_text()
    assert "| sum | equal | n/a | 1 | 1 |" in text
    assert "No single-task baselines among these runs, so Δm is n/a." in text
    assert "`taskprio bench multimnist` trains them" in text
    assert (tmp_path / "out" / "plots" / "tradeoff.png").is_file()
    assert "No loss-weight plot" in text and "No priority plot" in text


def test_three_tasks_one_trade_off_subplot_per_pair(tmp_path: Path):
    from matplotlib.image import imread

    from taskprio.report._plots import method_colours, plot_tradeoff
    from taskprio.report._tables import RunSet

    metrics = {"a": {"acc": True}, "b": {"mae": False}, "c": {"acc": True}}
    paths = [
        write_run(
            tmp_path / f"seed{seed}",
            role="method",
            method="sum",
            weighting="equal",
            seed=seed,
            tasks=("a", "b", "c"),
            metrics=metrics,
            epochs=1,
            test={"a": {"acc": 80.0 + seed}, "b": {"mae": 0.5}, "c": {"acc": 60.0 - seed}},
        )
        for seed in (0, 1)
    ]
    from taskprio.report import find_runs

    runs = RunSet.from_runs(find_runs(paths))
    [(_, png)] = plot_tradeoff(runs, tmp_path, method_colours(runs.labels))
    height, width = imread(png).shape[:2]
    assert width > 2.5 * height * 0.8  # three square panels side by side


def test_report_modules_import_only_the_standard_library_at_module_level():
    # matplotlib, and taskprio.metrics (whose torchmetrics loads matplotlib), are imported
    # inside the functions that use them, so `import taskprio.report` stays light. Checked on
    # the source: a subprocess that imports torch would cost seconds.
    import taskprio.report

    allowed = set(sys.stdlib_module_names) | {"taskprio"}
    for source in Path(taskprio.report.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are skipped
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                is_ours = name.startswith("taskprio.report") or name == "__future__"
                assert root in allowed and (root != "taskprio" or is_ours), (source.name, name)
