"""Recipe: an attribution method from outside the package (tests/plugins/recipe_method.py), named by `plugins:`,
configured by `attribute.method_options`, run by the tiny pipeline's attribute stage and cited in its references."""

import copy
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from workbench.config import ConfigError


@pytest.fixture
def plugin_path(monkeypatch):
    """tests/plugins on sys.path (as PYTHONPATH would put it); the plugin's registration is undone afterwards."""
    from workbench.attribution import METHODS

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    yield
    METHODS.remove("occlusion")
    sys.modules.pop("recipe_method", None)


def _config(tiny_config, **attribute):
    cfg = copy.deepcopy(tiny_config)
    cfg.update(plugins=["recipe_method"], device="cpu", stages=["attribute"])
    # one stimulus set, no V4 readouts in this run: the neural-site target is off
    cfg["attribute"].update(methods=["saliency", "occlusion"], stimulus_sets=["kriegeskorte92"],
                            method_options={"occlusion": {"window": 8, "stride": 8}}, **attribute)
    cfg["attribute"]["targets"] = {**cfg["attribute"]["targets"], "neural_sites": None}
    return cfg


def test_a_method_from_a_plugin_runs_in_the_attribute_stage(plugin_path, tiny_config, data_root, tmp_path):
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    run = RunDir(tmp_path / "run")
    metrics = run_pipeline(_config(tiny_config), run, log=lambda _msg: None)
    section = metrics["attribute"]
    assert section["methods"] == ["saliency", "occlusion"]
    for label, entries in section["stimulus_sets"]["kriegeskorte92"]["targets"].items():
        assert len(entries["occlusion"]["outputs"]) == 2, label
    checks = section["checks"]["methods"]["occlusion"]
    assert len(checks["randomisation"]["spearman_mean"]) == len(checks["randomisation"]["layers"]) >= 2
    assert np.isfinite(checks["faithfulness"]["deletion_gain"])
    assert "occlusion" in section["checks"]["agreement"]["methods"]
    assert any(ref.startswith("Zeiler, M.D., & Fergus, R. (2014)") for ref in section["references"])
    assert (run.figures / "attribute_overlays_92.png").is_file()


def test_the_plugin_method_is_captums_occlusion_with_its_own_options(plugin_path):
    from captum.attr import Occlusion as CaptumOcclusion

    import recipe_method  # noqa: F401  (registers "occlusion")
    from workbench.attribution import attribute

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 16 * 16, 5)).eval()
    x = torch.randn(3, 3, 16, 16)
    ours = attribute(model, x, 2, "occlusion", window=4, stride=2, progress=False)
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=0.0,
                                              target=2)
    np.testing.assert_allclose(ours.attributions, theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert ours.options["window"] == 4 and ours.citation.startswith("Zeiler")


def test_the_plugin_methods_options_are_checked_with_the_config(plugin_path, tiny_config):
    from workbench.pipeline import resolve_config

    cfg = _config(tiny_config)
    cfg["attribute"]["method_options"] = {"occlusion": {"windw": 8}}
    with pytest.raises(ConfigError, match=r"'windw' in attribute.method_options.occlusion \(did you mean 'window'\?\)"):
        resolve_config(cfg)
    cfg["attribute"]["method_options"] = {"occlusion": {"stride": 0}}
    with pytest.raises(ConfigError, match=r"attribute.method_options.occlusion.stride must be >= 1"):
        resolve_config(cfg)
    cfg["attribute"].update(methods=["saliency", "oclusion"], method_options={})
    with pytest.raises(ConfigError, match=r"'oclusion'.*did you mean 'occlusion'"):
        resolve_config(cfg)
