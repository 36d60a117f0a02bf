"""The attribute stage on the tiny config: real stimuli, the lead's small CNN, a saved V4 readout; its config schema
and the method registry."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workbench.config import ConfigError, defaults, parse, to_dict

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tiny_config):
    model_cfg = yaml.safe_load(open(ROOT / "configs/model/small_cnn.yaml"))
    model_cfg["width"] = 8
    return {"seed": 0, "device": "cpu", "model": model_cfg, "attribute": copy.deepcopy(tiny_config["attribute"])}


def _parse(given):
    from workbench.attribution.config import AttributeConfig

    return parse(AttributeConfig, given, "attribute")


def test_default_yaml_is_the_schema_and_tiny_overrides_it(tiny_config):
    from workbench.attribution.config import AttributeConfig

    assert to_dict(_parse(yaml.safe_load(open(ROOT / "configs/attribute/default.yaml")))) == defaults(AttributeConfig)
    tiny = _parse(tiny_config["attribute"])
    assert tiny.n_images == 2 and tiny.ig.n_steps == 8 and tiny.ig.integration == "gausslegendre"
    assert tiny.targets.neural_sites.dataset == "cowley_v4_210325" and tiny.targets.neural_sites.max_layers == 1
    # what the default study ran before the schema: one channel of conv3 as a unit target
    assert [(u.layer, u.unit, u.channel) for u in tiny.targets.units] == [("conv3", None, 0)]


@pytest.mark.parametrize("given, words", [
    ({"n_imgs": 3}, ["'n_imgs'", "did you mean 'n_images'"]),
    ({"methods": ["saliency", "integrated_gradient"]}, ["'integrated_gradient'", "did you mean 'integrated_gradients'"]),
    ({"targets": {"neural_sites": {"session": "201025"}}},
     ["neural_sites.session was renamed", "neural_sites.dataset"]),
    ({"targets": {"units": [{"layer": "conv3"}]}}, ["exactly one of unit", "channel"]),
    ({"targets": {"class_target": "predictd"}}, ["attribute.targets.class_target", "did you mean 'predicted'"]),
    ({"ig": {"integration": "riemann"}}, ["attribute.ig.integration", "gausslegendre"]),
    ({"checks": {"granularity": "leaf"}}, ["attribute.checks.granularity", "did you mean 'leaves'"]),
    ({"stimulus_sets": ["kriegeskorte92"]}, ["neural_sites.dataset", "'cowley_v4_201025'", "stimulus_sets"]),
    ({"method_options": {"integrated_gradients": {"n_steps": 3}}}, ["method_options.integrated_gradients",
                                                                    "attribute.ig"]),
    ({"method_options": {"saliencyy": {}}}, ["'saliencyy'", "did you mean 'saliency'"]),
])
def test_config_errors_name_the_key_and_the_fix(given, words):
    with pytest.raises(ConfigError) as err:
        _parse(given)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_each_method_maps_its_own_options_and_aliases_resolve():
    from workbench.attribution import METHODS, IntegratedGradients

    cfg = _parse({"methods": ["ig", "smoothgrad"], "internal_batch_size": 16,
                  "ig": {"n_steps": 5, "noise_tunnel": {"nt_samples": 2}}, "smoothgrad": {"nt_samples": 3},
                  "shap": {"n_samples": 7, "seed": None}})
    assert METHODS.get("ig") is IntegratedGradients and "ig" in METHODS and "ig" not in METHODS.names()
    assert METHODS.get("ig").options_from_config(cfg) == {
        "internal_batch_size": 16, "n_steps": 5, "integration": "gausslegendre",
        "noise_tunnel": {"nt_type": "smoothgrad", "nt_samples": 2, "stdevs": 0.1}}
    assert METHODS.get("smoothgrad").options_from_config(cfg) == {"internal_batch_size": 16, "nt_samples": 3,
                                                                 "stdevs": 0.15}
    for name in ("gradient_shap", "shap_gradient"):
        assert METHODS.get(name).options_from_config(cfg) == {"internal_batch_size": 16, "n_samples": 7, "seed": None}
    for name in ("saliency", "deeplift", "shap_deep"):
        assert METHODS.get(name).options_from_config(cfg) == {"internal_batch_size": 16}
    for name in METHODS.names():  # every option a method maps is one its constructor takes
        assert set(METHODS.get(name).options_from_config(cfg)) <= METHODS.get(name).accepted_options()
        assert METHODS.citations(name) and METHODS.get(name).name == name


def test_the_registry_takes_only_method_classes():
    from workbench.attribution import METHODS

    with pytest.raises(TypeError, match="AttributionMethod"):
        METHODS.register("not_a_method", citation="x")(lambda model: None)
    assert "not_a_method" not in METHODS
    with pytest.raises(KeyError, match="did you mean 'deeplift'"):
        METHODS.get("deeplfit")


def _save_readout(run, cfg):
    """The align stage's readout for conv3, saved through the run directory's writer."""
    from workbench.models import build_model

    model = build_model(cfg["model"])
    with torch.no_grad():
        n_units = model.conv3(model.conv2(model.conv1(torch.zeros(1, 3, 32, 32)))).numel()
    rng = np.random.default_rng(0)
    run.save_readout("cowley_v4_210325", "conv3", coef=rng.normal(size=(2, n_units)) / np.sqrt(n_units),
                     intercept=np.zeros(2))


@pytest.mark.slow
def test_attribute_stage_tiny(data_root, tiny_config, tmp_path):
    from workbench.pipeline import get_metric, run_stage
    from workbench.run import RunDir

    cfg = _cfg(tiny_config)
    run = RunDir(tmp_path / "run")
    _save_readout(run, cfg)
    section = run_stage("attribute", cfg, run, log=lambda _msg: None)
    json.dumps(section)  # JSON-able for metrics.json
    for fig in ("attribute_overlays_92", "attribute_overlays_v4", "attribute_checks"):
        assert (run.figures / f"{fig}.png").is_file()
    v4 = section["stimulus_sets"]["cowley_v4_210325"]["targets"]
    assert "neuroid #0 via conv3" in v4
    assert v4["neuroid #0 via conv3"]["target"]["source"] == str(run.readout_path("cowley_v4_210325", "conv3"))
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
    # the headline points at exact values of the section: integrated gradients, the first method with completeness
    names = [h["name"] for h in section["headline"]]
    assert names == ["completeness_error", "randomisation_spearman", "deletion_gain"]
    for h in section["headline"]:
        assert "integrated_gradients" in h["key"] and get_metric({"attribute": section}, h["key"]) == h["value"]
    # references: every method used, the checks that ran, the stimulus sets
    refs = " ".join(section["references"])
    for author in ("Simonyan", "Sundararajan", "Lundberg", "Shrikumar", "Erion", "Adebayo", "Petsiuk", "Hedström",
                   "Kriegeskorte", "Cowley"):
        assert author in refs, author


def test_attribute_stage_says_why_neural_site_is_skipped(data_root, tiny_config, tmp_path):
    from workbench.pipeline import run_stage
    from workbench.run import RunDir

    cfg = _cfg(tiny_config)
    cfg["attribute"].update(methods=["saliency"], stimulus_sets=["cowley_v4_210325"], n_images=1,
                            checks={"randomisation": False, "faithfulness": False})
    cfg["attribute"]["targets"] = {"units": [], "patches": None, "neural_sites": {"dataset": "cowley_v4_210325"}}
    section = run_stage("attribute", cfg, RunDir(tmp_path / "run"), log=lambda _msg: None)
    assert "no fitted readouts" in section["skipped"]["neural_site:cowley_v4_210325"]
    assert list(section["stimulus_sets"]["cowley_v4_210325"]["targets"]) == ["predicted class"]
    # no check that cites a paper ran: only the method and the stimulus set are cited
    assert not any("Adebayo" in r or "Petsiuk" in r or "Sundararajan" in r for r in section["references"])
    assert section["headline"] == []
