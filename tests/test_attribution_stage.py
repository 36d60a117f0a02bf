"""The attribute stage on the tiny config: real stimuli, the lead's small CNN, a saved V4 readout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path):
    model_cfg = yaml.safe_load(open(ROOT / "configs/model/small_cnn.yaml"))
    model_cfg["width"] = 8
    attribute_cfg = yaml.safe_load(open(ROOT / "configs/attribute/tiny.yaml"))
    return {"seed": 0, "device": "cpu", "model": model_cfg, "attribute": attribute_cfg}


def test_default_and_tiny_configs_hold_only_known_keys():
    from workbench.attribution.stage import DEFAULTS, _merge

    for name in ("default", "tiny"):
        merged = _merge(DEFAULTS, yaml.safe_load(open(ROOT / f"configs/attribute/{name}.yaml")))
        assert merged["methods"]
    with pytest.raises(KeyError, match="unknown key"):
        _merge(DEFAULTS, {"n_imgs": 3})


@pytest.mark.slow
def test_attribute_stage_tiny(data_root, tmp_path):
    from workbench.attribution.stage import attribute_stage
    from workbench.models import build_model
    from workbench.run import RunDir

    cfg = _cfg(tmp_path)
    run = RunDir(tmp_path / "run")
    # the align stage's readout for conv3, saved where the contract says
    model = build_model(cfg["model"])
    with torch.no_grad():
        n_units = model.conv3(model.conv2(model.conv1(torch.zeros(1, 3, 32, 32)))).numel()
    folder = run.cache / "readouts" / "cowley_v4_210325"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "conv3.npz", coef=rng.normal(size=(2, n_units)) / np.sqrt(n_units), intercept=np.zeros(2))

    section = attribute_stage(run, cfg)
    json.dumps(section)  # JSON-able for metrics.json
    for fig in ("attribute_overlays_92", "attribute_overlays_v4", "attribute_checks"):
        assert (run.figures / f"{fig}.png").is_file()
    v4 = section["stimulus_sets"]["cowley_v4_210325"]["targets"]
    assert "neuroid #0 via conv3" in v4
    assert "neuroid #0 via conv3" not in section["stimulus_sets"]["kriegeskorte92"]["targets"]
    assert any(k.startswith("conv3 patch") for k in v4) and "conv3 channel 0" in v4
    checks = section["checks"]["methods"]
    assert set(checks) == set(cfg["attribute"]["methods"])
    assert checks["integrated_gradients"]["completeness"]["relative_error_max"] < 0.05
    assert checks["deeplift"]["completeness"]["relative_error_max"] < 1e-3
    rnd = checks["saliency"]["randomisation"]
    assert rnd["layers"][0] == "fc" and len(rnd["spearman_mean"]) == len(rnd["layers"])
    assert np.asarray(section["checks"]["agreement"]["spearman_mean"]).shape == (6, 6)
    assert set(section["summary"]) == set(cfg["attribute"]["methods"])


def test_attribute_stage_says_why_neural_site_is_skipped(data_root, tmp_path):
    from workbench.attribution.stage import attribute_stage
    from workbench.run import RunDir

    cfg = _cfg(tmp_path)
    cfg["attribute"].update(methods=["saliency"], stimulus_sets=["cowley_v4_210325"], n_images=1,
                            checks={"randomisation": False, "faithfulness": False})
    cfg["attribute"]["targets"] = {"units": [], "patches": None}
    section = attribute_stage(RunDir(tmp_path / "run"), cfg)
    assert "no fitted readouts" in section["skipped"]["neural_site:201025"]
    assert list(section["stimulus_sets"]["cowley_v4_210325"]["targets"]) == ["predicted class"]
