"""The intervene stage end to end on a small untrained CNN with the tiny config (real 92 images and CIFAR-10), and its
config schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.config import ConfigError, defaults, parse, to_dict
from workbench.intervention.config import InterveneConfig
from workbench.run import RunDir

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**intervene) -> dict:
    model = yaml.safe_load((ROOT / "configs/model/small_cnn.yaml").read_text())
    model["width"] = 8
    tiny = yaml.safe_load((ROOT / "configs/intervene/tiny.yaml").read_text())
    assert tiny.pop("defaults") == ["default"]
    tiny.update(intervene)
    return {
        "study": "test_intervene", "seed": 0, "device": "cpu", "stages": ["intervene"],
        "data": {"_target_": "workbench.data.CIFAR10DataModule", "root": None, "batch_size": 64, "subset": 200,
                 "test_subset": 200, "num_workers": 0, "augment": False, "seed": 0},
        "model": model, "intervene": tiny,
    }


def _run(tmp_path, cfg) -> dict:
    from workbench.pipeline import run_stage
    from workbench.utils import to_json

    return json.loads(to_json(run_stage("intervene", cfg, RunDir(tmp_path / "run"), log=lambda _m: None)))


def test_tiny_yaml_only_overrides_what_differs_from_the_defaults():
    tiny = yaml.safe_load((ROOT / "configs/intervene/tiny.yaml").read_text())
    tiny.pop("defaults")
    base = defaults(InterveneConfig)
    assert set(tiny) < set(base)
    assert all(tiny[k] != base[k] for k in tiny), [k for k in tiny if tiny[k] == base[k]]
    parsed = to_dict(parse(InterveneConfig, tiny, "intervene"))
    assert isinstance(parsed["lesion_sizes"][0], float) and parsed["main_size"] in parsed["lesion_sizes"]


@pytest.mark.parametrize("given, words", [
    ({"lesion_radius": 3}, ["'lesion_radius'", "valid keys"]),
    ({"main_size": 0.3}, ["main_size 0.3", "lesion_sizes"]),
    ({"mode": "noise"}, ["intervene.mode", "'zero', 'mean'"]),
    ({"effects": ["cifar", "rsaa"]}, ["intervene.effects[1]", "did you mean 'rsa'"]),
    ({"lesion_sizes": [0.2, 0.1], "main_size": 0.1}, ["grow strictly"]),
    ({"lesion_sizes": [0.05, 1.5]}, ["lesion_sizes[1]", "(0, 1]"]),
    ({"site_size": 0}, ["site_size", "at least one unit"]),
    ({"selections": ["disk_peek"]}, ["unknown lesion selection 'disk_peek'", "did you mean 'disk_peak'"]),
    ({"selections": ["random"]}, ["'random' is not a selective lesion", "top_k"]),
    ({"site_kind": "disc"}, ["site_kind", "did you mean 'disk'"]),
    ({"contrasts": {}}, ["contrasts needs at least one category"]),
    ({"v4_session": "210325"}, ["intervene.v4_session was renamed", "intervene.v4_dataset"]),
])
def test_bad_options_name_the_key_and_the_fix(given, words):
    with pytest.raises(ConfigError) as err:
        parse(InterveneConfig, given, "intervene")
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_bad_columns_and_classes_are_config_errors(tmp_path, data_root):
    with pytest.raises(ConfigError, match=r"no column 'faces'.*did you mean 'face'"):
        _run(tmp_path / "a", _cfg(contrasts={"faces": None}, effects=["responses92"]))
    with pytest.raises(ConfigError, match=r"cifar_targets.animate: unknown classes \['cats'\].*did you mean 'cat'"):
        _run(tmp_path / "b", _cfg(cifar_targets={"animate": ["cats"]}, effects=["cifar"]))


@pytest.mark.slow
def test_intervene_stage_tiny(tmp_path, data_root):
    from workbench.pipeline import get_metric

    section = _run(tmp_path, _cfg())
    run = RunDir(tmp_path / "run")
    assert section["layer"] == "conv4" and section["response_layer"] == "avgpool"
    assert section["sheet"] == "model" and section["selections"] == {"disk_peak": "random_disk", "top_k": "random"}
    for stem in ("intervene_lesion_curves", "intervene_lesion_map", "intervene_alignment_change"):
        assert (run.figures / f"{stem}.png").stat().st_size > 1000
    spec = section["specificity"]["animate"]["disk_peak"]
    for measure in ("cifar", "responses92"):
        e = spec[measure]
        lo, hi = e["specificity_index_ci"]
        assert lo <= hi and e["n_controls"] == 2
    ia = section["interventional_alignment"]
    assert ia["n_sites"] == 4 and ia["site_kind"] == "disk" and ia["comparison"] == "qualitative"
    assert len(ia["per_site_r"]) == 4
    for region in ("hIT", "mIT"):
        assert -1 <= section["rsa_change"][region]["clean"] <= 1
    v4 = section["v4_change"]
    assert v4["layer"] == "avgpool" and v4["dataset"] == "cowley_v4_210325" and -1 <= v4["clean"] <= 1
    assert np.isfinite(v4["animate/disk_peak"]["delta"]) and len(v4["random"]["delta_range"]) == 2
    sweep = section["sweep"]["face"]["response_change_target"]
    assert len(sweep["disk_peak"]) == 2 and np.asarray(sweep["random"]).shape == (2, 2)
    # bigger lesions of the same kind change the responses more
    assert sweep["top_k"][1] > sweep["top_k"][0]
    assert all(c["comparison"] for c in section["comparisons"].values())
    # every headline number is the value at its key; the specificity cards are the disk lesion's (the first selection)
    assert section["headline"]
    for card in section["headline"]:
        assert get_metric({"intervene": section}, card["key"]) == card["value"], card
    assert any(".disk_peak." in card["key"] for card in section["headline"])
    refs = " ".join(section["references"])
    for author in ("Blauch", "Rajalingham", "Kriegeskorte", "Cowley", "Afraz"):
        assert author in refs, author
    cache = run.load_arrays(run.lesions_path)
    assert "units/random_disk/None/1/1" in cache and "selectivity/face" in cache


@pytest.mark.slow
def test_intervene_stage_without_sheet_uses_selectivity_ranked_sites(tmp_path, data_root):
    cfg = _cfg(layer="conv3", default_sheet=False, effects=["cifar", "responses92"], n_bootstrap=20,
               n_permutations=20, contrasts={"face": None})
    cfg["model"]["topography"]["layers"] = ["conv4"]
    section = _run(tmp_path, cfg)
    assert section["sheet"] == "none"
    assert set(section["specificity"]["face"]) == {"top_k"} and section["selections"] == {"top_k": "random"}
    assert section["interventional_alignment"]["site_kind"] == "top_k"
    assert section["interventional_alignment"]["n_sites"] == 10
    assert "rsa_change" not in section and "v4_change" not in section
    assert not any("Cowley" in ref for ref in section["references"])


def test_data_set_names_are_checked_before_any_work(tmp_path, data_root):
    with pytest.raises(ConfigError, match=r"intervene.v4_dataset: unknown stimulus set 'cowley_v4_21325'.*did you "
                                          r"mean 'cowley_v4_210325'"):
        _run(tmp_path / "a", _cfg(v4_dataset="cowley_v4_21325"))
    with pytest.raises(ConfigError, match=r"intervene.rsa_rdm_set: unknown RDM dataset 'kriegeskorte2009'"):
        _run(tmp_path / "b", _cfg(rsa_rdm_set="kriegeskorte2009"))
