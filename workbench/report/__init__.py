"""Reports: a self-contained report.html for a run directory or a sweep (Hydra multirun) directory.

    build_run_report(run_dir) -> run_dir/report.html
    build_sweep_report(sweep_dir) -> sweep_dir/report.html, sweep_dir/metrics.csv, sweep_dir/figures/sweep_*.{png,pdf}

The summary cards are the ``headline`` lists the stages wrote (``select_headlines``), the sections follow the stage
registry, the references are the stages' ``references`` lists. Command line: ``workbench-report PATH`` (a run or a
sweep directory, auto-detected).
"""

from workbench.report.config import HeadlineCard, ReportConfig
from workbench.report.discovery import find_run_dirs, is_run_dir, is_sweep_dir
from workbench.report.metrics import (Card, collect_references, flatten, numeric_leaves, select_headlines,
                                      stage_headlines)
from workbench.report.run_report import build_run_report
from workbench.report.sweep import build_sweep_report, sweep_table

__all__ = [
    "build_run_report", "build_sweep_report", "sweep_table", "find_run_dirs", "is_run_dir", "is_sweep_dir",
    "ReportConfig", "HeadlineCard", "Card", "select_headlines", "stage_headlines", "collect_references", "flatten",
    "numeric_leaves",
]
