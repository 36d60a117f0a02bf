"""The align stage on the tiny config: the lead's small CNN (untrained), real stimuli and recordings."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_configs_hold_only_known_keys():
    from workbench.alignment.stage import merge_config

    for name in ("default", "tiny"):
        merged = merge_config(yaml.safe_load(open(ROOT / f"configs/align/{name}.yaml")))
        assert merged["rsa"]["targets"] and merged["regression"]["sessions"]
    with pytest.raises(KeyError, match="unknown key"):
        merge_config({"rsa": {"n_boot": 3}})


@pytest.mark.slow
def test_align_stage_tiny(data_root, tmp_path):
    from workbench.alignment.stage import align_stage
    from workbench.features.stage import extract_stage
    from workbench.run import RunDir

    model_cfg = yaml.safe_load(open(ROOT / "configs/model/small_cnn.yaml"))
    model_cfg["width"] = 8
    cfg = {"seed": 0, "device": "cpu", "model": model_cfg,
           "extract": yaml.safe_load(open(ROOT / "configs/extract/tiny.yaml")),
           "align": yaml.safe_load(open(ROOT / "configs/align/tiny.yaml"))}
    run = RunDir(tmp_path / "run")
    extract_stage(run, cfg)
    section = align_stage(run, cfg)
    json.dumps(section)
    layers = section["layers"]
    hit = section["rsa"]["hIT"]
    lo, hi = hit["noise_ceiling"]["lower"], hit["noise_ceiling"]["upper"]
    assert 0 < lo < hi < 1  # spearman ceiling of the 4 hIT subjects (0.372, 0.666)
    assert abs(lo - 0.3723) < 1e-3 and abs(hi - 0.6657) < 1e-3
    for layer in layers:
        s = hit["scores"][layer]
        assert s["ci"][0] <= s["score"] <= s["ci"][1] or np.isclose(s["ci"][0], s["score"])
    assert section["rsa"]["mIT"]["noise_ceiling"] is None
    reg = section["regression"]["210325"]
    assert 0 < reg["ceiling_median"] < 1
    for layer in layers:
        e = reg["layers"][layer]
        assert -1 <= e["median_r"] <= 1 and "r2_over_c_median" in e and "r_over_c_sq_median" in e
        readout = np.load(run.cache / "readouts" / "cowley_v4_210325" / f"{layer}.npz")
        assert readout["coef"].shape[0] == reg["n_neuroids"] == readout["intercept"].shape[0]
        assert readout["cv_r"].shape == (reg["n_neuroids"],)
    # the readout maps features as extracted to the responses the encoder predicts
    from workbench.features import load_run_activations
    acts = load_run_activations(run, "cowley_v4_210325")
    last = layers[-1]
    readout = np.load(run.cache / "readouts" / "cowley_v4_210325" / f"{last}.npz")
    pred = acts[last] @ readout["coef"].T + readout["intercept"]
    from workbench.alignment import RidgeEncoder
    from workbench.data import load_responses
    Y = load_responses("cowley2023_v4", session="210325").values
    enc = RidgeEncoder(cfg["align"]["regression"]["alphas"], standardize=True).fit(acts[last], Y)
    np.testing.assert_allclose(pred, enc.predict(acts[last]), rtol=1e-3, atol=1e-3)
    for fig in ("align_layer_profile", "align_rdm_panels", "align_v4_predictions"):
        assert (run.figures / f"{fig}.png").exists()
    assert section["summary"]["best_hIT_score"] == hit["scores"][hit["best_layer"]]["score"]
