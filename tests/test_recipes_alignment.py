"""Recipes: an alignment metric and a neural data set, each one file registered from outside the package
(tests/plugins/recipe_metric.py, tests/plugins/recipe_neural.py), run through the tiny pipeline by config alone."""

import numpy as np
import pytest

from conftest import ROOT, compose_config

PLUGINS = ROOT / "tests" / "plugins"


@pytest.fixture
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def test_procrustes_angle_matches_scipy(plugins_on_path):
    """The plugin's similarity (cosine of the angle) is the scale of scipy's orthogonal Procrustes solution."""
    from scipy.linalg import orthogonal_procrustes

    from recipe_metric import _shape, procrustes_angle

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    _, scale = orthogonal_procrustes(_shape(x, None), _shape(y, None))
    assert np.cos(procrustes_angle(x, y)) == pytest.approx(scale)
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert procrustes_angle(x, 3 * x @ rotation + 1) == pytest.approx(0, abs=1e-6)  # shape, not position or scale


@pytest.mark.slow
def test_a_metric_and_a_data_set_from_outside_the_package(plugins_on_path, data_root, tmp_path):
    from workbench.pipeline import get_metric, run_pipeline
    from workbench.run import RunDir

    cfg = compose_config(["preset=tiny", f"run_dir={tmp_path}", "sweep_dir=unused",
                          "plugins=[recipe_metric,recipe_neural]",
                          "extract.stimulus_sets=[simulated_v1]",
                          "align.metrics=[ridge,procrustes]",
                          "align.settings.ridge.datasets=[simulated_v1]",
                          "+align.settings.procrustes.datasets=[simulated_v1]"])
    run = RunDir(tmp_path)
    metrics = run_pipeline(cfg, run, stages=["extract", "align"], log=lambda _msg: None)
    align = metrics["align"]

    angles = align["procrustes"]["simulated_v1"]["angle"]
    assert set(angles) == set(align["layers"]) and all(0 <= a <= np.pi / 2 for a in angles.values())
    ridge = align["ridge"]["simulated_v1"]
    assert ridge["n_stimuli"] == 96 and ridge["n_neuroids"] == 30
    assert 0.5 < ridge["ceiling_median"] <= 1  # the simulated cells' trials give the split-half ceiling
    assert run.readout_layers("simulated_v1") == sorted(align["layers"])
    for headline in align["headline"]:
        assert get_metric(metrics, headline["key"]) == headline["value"]
    assert {h["name"] for h in align["headline"]} == {"ridge_simulated_v1_ceiled", "ridge_simulated_v1_median_r",
                                                      "ridge_simulated_v1_committed", "procrustes_simulated_v1"}
    references = " ".join(align["references"])
    assert "Williams, A.H." in references and "Adelson, E.H." in references and "Brain-Score" in references
    assert (run.figures / "align_layer_profile.png").exists()
