"""Open generated reports in headless Chromium: every figure decoded, no console error, no blocked fetch."""

from __future__ import annotations

import re

import pytest

from workbench.report import build_run_report
from workbench.report.browser import check_page, find_chromium, screenshot
from workbench.report.sweep import build_sweep_report

from test_report import copy_run, sweep_of

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found (set WORKBENCH_CHROMIUM or install Debian's `chromium`: apt-get install -y chromium)",
)


def test_run_report_loads_in_chromium(tiny_run, tmp_path):
    run = copy_run(tiny_run[0], tmp_path / "run")
    report = build_run_report(run)
    check = check_page(report)
    n_png = len(list((run / "figures").glob("*.png")))
    assert n_png and len(check.images) == n_png
    assert all(im["naturalWidth"] > 0 and im["complete"] for im in check.images), check.broken_images
    assert check.errors == []
    assert check.title == "Topographic alignment"


def test_sweep_report_loads_in_chromium(tiny_run, tmp_path):
    sweep = sweep_of(tiny_run[0], tmp_path)
    report = build_sweep_report(sweep)
    check = check_page(report)
    assert len(check.images) == len(list((sweep / "figures").glob("*.png"))) >= 1
    assert check.ok, (check.broken_images, check.errors)


def test_checker_catches_broken_images_and_errors(tmp_path):
    """The check must be able to fail: a missing image, a corrupt one, a script error, a fetch the CSP blocks."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="img-src data:"></head><body>'
        '<img src="missing.png"><img src="data:image/png;base64,AAAA"><img src="https://example.invalid/x.png">'
        '<script>console.error("boom"); notDefined();</script></body></html>'
    )
    check = check_page(page)
    assert len(check.broken_images) == 3 and not check.ok
    joined = "\n".join(check.errors)
    assert "boom" in joined and "notDefined" in joined and "Content Security Policy" in joined


def test_screenshot(tiny_run, tmp_path):
    run = copy_run(tiny_run[0], tmp_path / "run")
    png = screenshot(build_run_report(run), tmp_path / "shot.png", width=1000, height=800)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 800)
    assert re.search(rb"IDAT", data)


def test_headlines_state_their_ci_and_a_failed_check_is_summarised_on_the_first_screen(tiny_run, tmp_path):
    import json

    run = copy_run(tiny_run[0], tmp_path / "run")
    check = check_page(build_run_report(run))
    assert check.cards and all(card["ci"] for card in check.cards), check.cards  # a CI, or "no CI" said outright
    assert any(card["ci"].startswith("CI [") for card in check.cards)  # the RSA cards carry their bootstrap CI
    # the randomisation check of one method, passed and then forced to fail (maps unchanged by randomisation)
    metrics = json.loads((run / "metrics.json").read_text())
    method = next(iter(metrics["attribute"]["checks"]["methods"]))
    message = f"randomisation check failed for {method}"
    for spearman, shown in ((0.05, False), (0.95, True)):
        metrics["attribute"]["checks"]["methods"][method]["randomisation"]["spearman_fully_randomised"] = spearman
        (run / "metrics.json").write_text(json.dumps(metrics))
        check = check_page(build_run_report(run))
        summaries = [n for n in check.notices if "checks" in n["kind"]]
        assert any(message in n["text"] for n in summaries) is shown
    assert summaries[0]["top"] < 1000  # on the first screen
    assert check.ok, (check.broken_images, check.errors)
