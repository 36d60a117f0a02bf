"""``workbench-report PATH``: the report of a run directory or of a sweep directory (auto-detected)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.report.discovery import is_run_dir, is_sweep_dir, not_a_run_message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench-report",
        description="Write a self-contained report.html for a workbench run directory, or metrics.csv + comparison "
                    "figures + report.html for a sweep (Hydra multirun) directory.",
    )
    parser.add_argument("path", metavar="PATH", type=Path,
                        help="a run directory (holds config.yaml and metrics.json) or a sweep directory (holds run "
                             "directories, e.g. results/<study>/multirun/<timestamp>)")
    parser.add_argument("--title", default=None, help="report title (default: the study name)")
    parser.add_argument("--no-run-reports", action="store_true",
                        help="for a sweep: do not (re)build the runs' own reports")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path: Path = args.path
    try:
        if is_run_dir(path):
            from workbench.report.run_report import build_run_report

            out = build_run_report(path, title=args.title)
        elif is_sweep_dir(path):
            from workbench.report.sweep import build_sweep_report

            out = build_sweep_report(path, title=args.title, run_reports=not args.no_run_reports)
        else:
            parser.exit(2, f"workbench-report: error: {not_a_run_message(path)}\n")
    except (ValueError, KeyError, FileNotFoundError) as err:
        parser.exit(2, f"workbench-report: error: {err}\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
