"""The report stage: the run's report.html, built last from what the other stages wrote."""

from __future__ import annotations

from typing import Any

from workbench.report.run_report import build_run_report


def report_stage(ctx) -> dict[str, Any]:
    """Build <run>/report.html from the run directory and ``ctx.config`` (``ReportConfig``: title, sections,
    headline, captions). It reads only the run directory, so ``workbench-report <run>`` gives the same page later.
    The report has no numbers of its own: its headline is empty."""
    path = build_run_report(ctx.run.path, config=ctx.config)
    return {"report": str(path), "headline": []}
