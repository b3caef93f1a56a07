"""Reports from saved training runs: Δm and metric tables (Markdown, CSV) and PNG plots.

A run directory holds ``final.json``, ``metrics.csv``, ``records.jsonl`` and, for CSO,
``priority.jsonl`` (the format is in ``docs/report.md``). :func:`find_runs` reads run
directories and ``taskprio bench`` directories in any mix; :func:`delta_m_table` and
:func:`metric_tables` summarize them over seeds; :func:`write_report` writes ``report.md``,
``results.csv`` and ``plots/*.png``. matplotlib is imported only when plots are drawn.

>>> from taskprio.report import RunRecord, delta_m_table
>>> base = RunRecord(role="baseline", method="single", seed=0, tasks=("a",),
...                  metrics={"a": {"rmse": False}}, test={"a": {"rmse": 0.5}})
>>> run = RunRecord(role="method", method="cso", seed=0, tasks=("a",),
...                 metrics={"a": {"rmse": False}}, test={"a": {"rmse": 0.4}})
>>> delta_m_table([base, run]).cells()[1][:3]
('cso', '—', '+20.00')
"""

from taskprio.report._runs import (
    LayerShares,
    MetricRow,
    PrioritySnapshot,
    RunRecord,
    StepEntry,
    find_runs,
    load_run,
)
from taskprio.report._tables import (
    DeltaMRow,
    DeltaMTable,
    MetricTable,
    MetricTableRow,
    delta_m_table,
    metric_tables,
)
from taskprio.report._write import write_report

__all__ = [
    "DeltaMRow",
    "DeltaMTable",
    "LayerShares",
    "MetricRow",
    "MetricTable",
    "MetricTableRow",
    "PrioritySnapshot",
    "RunRecord",
    "StepEntry",
    "delta_m_table",
    "find_runs",
    "load_run",
    "metric_tables",
    "write_report",
]
