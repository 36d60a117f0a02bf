"""The report says only what the numbers support: CIs on cards, CIs including 0 flagged, failed checks flagged in
place and summarised at the top, a failed run's partial report names the failed stage."""

from __future__ import annotations

import json

from workbench.report import build_run_report
from workbench.report.checks import card_interval, failed_checks, includes_zero
from workbench.report.metrics import Card
from workbench.run import RunDir

METRICS = {
    "topography": {"layers": {"conv3": {"contrasts": {"face": {"n_patches": 0}, "body": {"n_patches": 2}}},
                              "conv4": {"contrasts": {"face": {"n_patches": 0}, "body": {"n_patches": 0}}}}},
    "align": {"rsa": {"hIT": {"scores": {"fc": {"score": 0.05, "ci": [-0.02, 0.11]},
                                         "conv4": {"score": 0.04, "ci": [0.01, 0.3]},
                                         "conv1": {"score": 0.01, "ci": [-0.01, 0.03]}},
                              "best_layer": "fc",
                              "differences": {"conv4 - fc": {"diff": -0.01, "ci": [-0.05, 0.02]},
                                              "conv1 - fc": {"diff": -0.04, "ci": [-0.06, -0.01]}}}},
              "headline": [{"name": "best_hIT", "value": 0.05, "label": "hIT RSA (best layer)",
                            "key": "align.rsa.hIT.scores.fc.score", "unit": "Spearman r"}]},
    "attribute": {"checks": {"methods": {
        "saliency": {"randomisation": {"spearman_fully_randomised": 0.82}},
        "deeplift": {"completeness": {"relative_error_median": 0.97},
                     "randomisation": {"spearman_fully_randomised": 0.1}},
        "integrated_gradients": {"completeness": {"relative_error_median": 0.01}}}}},
}


def test_failed_checks_name_what_failed():
    found = {(c.stage, c.key): c.message for c in failed_checks(METRICS)}
    assert set(found) == {
        ("attribute", "attribute.checks.methods.saliency.randomisation.spearman_fully_randomised"),
        ("attribute", "attribute.checks.methods.deeplift.completeness.relative_error_median"),
        ("topography", "topography.layers.*.contrasts.face.n_patches")}
    assert "0.82" in found[("attribute", "attribute.checks.methods.saliency.randomisation.spearman_fully_randomised")]
    assert failed_checks({}) == []


def test_card_interval_is_found_beside_the_value():
    card = Card("hIT RSA", 0.05, "align.rsa.hIT.scores.fc.score")
    assert card_interval(card, METRICS) == (-0.02, 0.11) and includes_zero((-0.02, 0.11))
    assert card_interval(Card("x", 1, "align.rsa.hIT.scores.conv4.score"), METRICS) == (0.01, 0.3)
    assert card_interval(Card("acc", 0.1, "train.test_accuracy"), METRICS) is None
    assert card_interval(Card("s", 0.9, "a.b", details={"ci": [0.7, 1.0]}), {}) == (0.7, 1.0)
    assert not includes_zero((0.1, 0.3)) and not includes_zero(None)


def test_a_best_layer_tied_with_the_runner_up_says_so():
    import copy

    from workbench.report.checks import best_layer_caveat

    card = Card("hIT RSA (best layer)", 0.05, "align.rsa.hIT.scores.fc.score")
    assert best_layer_caveat(card, METRICS).startswith("best layer fc is not significantly better than the runner-up "
                                                       "conv4")
    clear = copy.deepcopy(METRICS)
    clear["align"]["rsa"]["hIT"]["differences"]["conv4 - fc"]["ci"] = [-0.05, -0.01]
    assert best_layer_caveat(card, clear) == "" and best_layer_caveat(Card("a", 1, "train.x"), METRICS) == ""


def test_report_flags_cards_checks_and_a_failed_stage(tmp_path):
    run = RunDir(tmp_path / "run")
    (run.path / "metrics.json").write_text(json.dumps(METRICS))
    run.write_failure("intervene", ValueError("no sites"), ["intervene", "report"])
    html = build_run_report(run.path).read_text()
    assert "stage intervene failed" in html and "ValueError: no sites" in html and "intervene, report" in html
    assert "3 checks failed" in html and html.index("3 checks failed") < html.index('id="summary"')
    assert html.count('class="stage-warning"') == 3  # each check again in its own section
    assert "CI [-0.02, 0.11]" in html and "CI includes 0" in html and "runner-up conv4" in html
    assert 'class="card flagged"' in html
    assert html.index('id="provenance"') > html.index('id="references"')  # provenance at the end
    run.clear_failure()
    assert "failed. This report is partial" not in build_run_report(run.path).read_text()


def test_a_failed_stage_leaves_a_partial_report_with_a_banner(tiny_config, tmp_path):
    import pytest

    from workbench.pipeline import run_pipeline
    from workbench.stages import STAGES, stage

    @stage("honesty_probe", after="align", title="Probe", citation="A test stage that fails.")
    def honesty_probe(ctx):
        raise RuntimeError("probe broke")

    run = RunDir(tmp_path / "run")
    try:
        with pytest.raises(RuntimeError, match="probe broke"):
            run_pipeline(tiny_config, run, stages=["honesty_probe", "report"], log=lambda _msg: None)
    finally:
        STAGES.remove("honesty_probe")  # other tests see the built-in stages only
    assert run.failure() == {"stage": "honesty_probe", "error": "RuntimeError: probe broke",
                             "missing": ["honesty_probe", "report"]}
    html = (run.path / "report.html").read_text()
    assert "stage honesty_probe failed" in html and "RuntimeError: probe broke" in html
    run_pipeline(tiny_config, run, stages=["report"], log=lambda _msg: None)  # a later call that succeeds
    assert run.failure() is None and "This report is partial" not in (run.path / "report.html").read_text()


def _sweep(tmp_path, accuracies):
    """A sweep folder of runs named by their overrides, each with one headline (test accuracy)."""
    import yaml

    for (weight, seed), accuracy in accuracies.items():
        run = tmp_path / "sweep" / f"w={weight},seed={seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"study": "s", "seed": seed, "w": weight}))
        (run / "metrics.json").write_text(json.dumps({"train": {"test_accuracy": accuracy, "headline": [
            {"name": "acc", "value": accuracy, "label": "Test accuracy", "key": "train.test_accuracy"}]}}))
    return tmp_path / "sweep"


def test_sweep_report_compares_run_with_run_against_the_seed_spread(tmp_path):
    from workbench.report.sweep import build_sweep_report, seed_spread, sweep_table

    sweep = _sweep(tmp_path, {(0, 0): 0.50, (0, 1): 0.52, (2, 0): 0.501, (2, 1): 0.519})
    table = sweep_table(sweep)
    # pooled over the two settings: sqrt((0.0002 + 0.000162) / 2)
    assert seed_spread(table, "train.test_accuracy") == __import__("pytest").approx(0.013454, abs=1e-5)
    html = build_sweep_report(sweep, run_reports=False).read_text()
    section = html[html.index('id="runvsrun"'):html.index('id="runs"')]
    assert "w: 0 → 2" in section and "seed s.d. 0.01345" in section and "within 2 s.d. of seeds" in section
    assert "4 runs" in html


def test_layer_profile_draws_an_estimate_outside_its_bootstrap_interval():
    """A percentile bootstrap CI need not contain the full-data score (few resamples): the figure must still draw."""
    from workbench.alignment.plots import LayerProfile, ProfileSeries, layer_profile

    series = ProfileSeries("hIT", [0.10, 0.20], intervals=[(0.12, 0.15), (0.1, 0.3)])
    fig = layer_profile(["conv1", "conv2"], [LayerProfile("RSA", "r", [series])])
    assert fig.axes
