"""The intervene stage end to end on a small untrained CNN with the tiny config (real 92 images and CIFAR-10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.run import RunDir

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**intervene) -> dict:
    model = yaml.safe_load((ROOT / "configs/model/small_cnn.yaml").read_text())
    model["width"] = 8
    tiny = yaml.safe_load((ROOT / "configs/intervene/tiny.yaml").read_text())
    tiny.update(intervene)
    return {
        "study": "test_intervene", "seed": 0, "device": "cpu", "stages": ["intervene"],
        "data": {"_target_": "workbench.data.CIFAR10DataModule", "root": None, "batch_size": 64, "subset": 200,
                 "test_subset": 200, "num_workers": 0, "augment": False, "seed": 0},
        "model": model, "intervene": tiny,
    }


def test_default_and_tiny_configs_have_the_same_keys():
    from workbench.intervention.stage import INTERVENE_DEFAULTS

    for name in ("default", "tiny"):
        keys = set(yaml.safe_load((ROOT / f"configs/intervene/{name}.yaml").read_text()))
        assert keys == set(INTERVENE_DEFAULTS), name


@pytest.mark.slow
def test_intervene_stage_tiny(tmp_path, data_root):
    from workbench.intervention.stage import intervene_stage
    from workbench.utils import to_json

    run = RunDir(tmp_path / "run")
    section = intervene_stage(run, _cfg())
    json.loads(to_json(section))  # JSON-able
    assert section["layer"] == "conv4" and section["response_layer"] == "avgpool"
    assert section["sheet"] == "model"
    for stem in ("intervene_lesion_curves", "intervene_lesion_map"):
        assert (run.figures / f"{stem}.png").stat().st_size > 1000
    spec = section["specificity"]["animate"]["disk_peak"]
    for measure in ("cifar", "responses92"):
        e = spec[measure]
        lo, hi = e["specificity_index_ci"]
        assert lo <= hi and e["n_controls"] == 2
    ia = section["interventional_alignment"]
    assert ia["n_sites"] == 4 and ia["site_kind"] == "disk" and ia["comparison"] == "qualitative"
    assert len(ia["per_site_r"]) == 4 and np.isfinite(ia["score"]) or ia["score"] != ia["score"]
    for region in ("hIT", "mIT"):
        assert -1 <= section["rsa_change"][region]["clean"] <= 1
    v4 = section["v4_change"]
    assert v4["layer"] == "avgpool" and -1 <= v4["clean"] <= 1
    assert np.isfinite(v4["animate/disk_peak"]["delta"]) and len(v4["random"]["delta_range"]) == 2
    sweep = section["sweep"]["face"]["response_change_target"]
    assert len(sweep["disk_peak"]) == 2 and np.asarray(sweep["random"]).shape == (2, 2)
    # bigger lesions of the same kind change the responses more
    assert sweep["top_k"][1] > sweep["top_k"][0]
    assert section["headline"]
    assert all(c["comparison"] for c in section["comparisons"].values())


@pytest.mark.slow
def test_intervene_stage_without_sheet_uses_selectivity_ranked_sites(tmp_path, data_root):
    from workbench.intervention.stage import intervene_stage

    cfg = _cfg(layer="conv3", default_sheet=False, effects=["cifar", "responses92"], n_bootstrap=20,
               n_permutations=20, contrasts={"face": None})
    cfg["model"]["topography"]["layers"] = ["conv4"]
    section = intervene_stage(RunDir(tmp_path / "run"), cfg)
    assert section["sheet"] == "none"
    assert set(section["specificity"]["face"]) == {"top_k"}
    assert section["interventional_alignment"]["site_kind"] == "top_k"
    assert section["interventional_alignment"]["n_sites"] == 10
    assert "rsa_change" not in section


def test_intervene_stage_rejects_bad_options(tmp_path):
    from workbench.intervention.stage import intervene_stage

    with pytest.raises(KeyError, match="unknown intervene option"):
        intervene_stage(RunDir(tmp_path / "a"), _cfg(lesion_radius=3))
    with pytest.raises(ValueError, match="main_size"):
        intervene_stage(RunDir(tmp_path / "b"), _cfg(main_size=0.3))
    with pytest.raises(ValueError, match="mode"):
        intervene_stage(RunDir(tmp_path / "c"), _cfg(mode="noise"))
