"""The report stage: the run's report.html, built last from what the other stages wrote."""

from __future__ import annotations

from typing import Any

from workbench.report.run_report import build_run_report


def report_stage(run, cfg: dict) -> dict[str, Any]:
    """Build <run>/report.html; reads cfg["report"]: title, sections, headline, captions (all optional).

    The report is rebuilt from the run directory alone, so `workbench-report <run>` gives the same page later.
    """
    rc = cfg.get("report") or {}
    if not isinstance(rc, dict):
        raise ValueError(f"cfg['report'] should be a mapping (configs/report/*.yaml), got {type(rc).__name__}")
    unknown = set(rc) - {"title", "sections", "headline", "captions"}
    if unknown:
        raise KeyError(f"unknown report config keys {sorted(unknown)}; known: title, sections, headline, captions")
    path = build_run_report(getattr(run, "path", run), title=rc.get("title"), sections=rc.get("sections"),
                            headline=rc.get("headline"), captions=rc.get("captions"))
    return {"report": str(path)}
