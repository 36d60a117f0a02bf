"""Recipes: a model (tests/plugins/recipe_model.py) and a stimulus set (tests/plugins/recipe_stimuli.py) from
outside the package, named by `plugins:`, trained, extracted and analysed on cortical sheets by the tiny pipeline,
and cited in the references of the stages that used them."""

import copy
import sys

import numpy as np
import pytest

from conftest import ROOT
from workbench.config import ConfigError

PLUGINS = ["recipe_model", "recipe_stimuli"]


@pytest.fixture
def plugin_path(monkeypatch):
    """tests/plugins on sys.path (as PYTHONPATH would put it); the plugins' registrations are undone afterwards."""
    from workbench.data import STIMULUS_SETS
    from workbench.models import MODELS

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    yield
    MODELS.remove("recipe_net")
    STIMULUS_SETS.remove("recipe_shapes")
    for name in PLUGINS:
        sys.modules.pop(name, None)


def _config(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.update(plugins=PLUGINS, device="cpu", stages=["train", "extract", "topography"])
    cfg["model"] = {"name": "recipe_net", "width": 8,
                    "topography": {"layers": ["conv2"], "weight": 0.5,
                                   "spatial_correlation": {"neighbourhood_size": 64, "pool_size": 64}}}
    cfg["extract"] = {"stimulus_sets": ["kriegeskorte92", "recipe_shapes"]}
    cfg["topography"] = {"stimulus_set": "recipe_shapes", "contrasts": {"round": None, "angular": None}}
    return cfg


def test_a_model_and_a_stimulus_set_from_plugins_run_through_the_pipeline(plugin_path, tiny_config, data_root,
                                                                           tmp_path):
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    run = RunDir(tmp_path / "run")
    metrics = run_pipeline(_config(tiny_config), run, log=lambda _msg: None)
    import recipe_model
    import recipe_stimuli

    train = metrics["train"]
    assert 0.0 <= train["test_accuracy"] <= 1.0 and train["n_parameters"] == 3 * 8 * 9 + 8 + 8 * 16 * 9 + 16 + 16 * 10 + 10
    assert train["sheets"]["conv2"]["unit_shape"] == [16, 8, 8]
    assert recipe_model.CITATION in train["references"]
    model = run.load_model()
    assert type(model).__name__ == "RecipeNet" and set(model.cortical_sheets) == {"conv2"}

    sets = metrics["extract"]["stimulus_sets"]
    assert sets["recipe_shapes"]["n_stimuli"] == 12
    acts = run.load_activations("recipe_shapes")
    assert list(acts) == ["conv1", "conv2", "pool", "fc"]
    expected = {"conv1": (8, 16, 16), "conv2": (16, 8, 8), "pool": (16,), "fc": (10,)}
    for layer, shape in expected.items():
        assert acts.unit_shapes[layer] == shape and acts[layer].shape == (12, int(np.prod(shape)))
        assert np.isfinite(acts[layer]).all()
    assert list(acts.stimulus_ids) == list(recipe_stimuli.recipe_shapes().stimulus_ids)
    assert run.load_activations("kriegeskorte92")["fc"].shape == (92, 10)
    assert recipe_stimuli.CITATION in metrics["extract"]["references"]

    topo = metrics["topography"]
    layer = topo["layers"]["conv2"]
    assert topo["stimulus_set"] == "recipe_shapes" and np.isfinite(layer["smoothness_index"])
    assert layer["contrasts"]["round"]["n_target"] == 4 and layer["contrasts"]["angular"]["n_target"] == 8
    assert topo["references"] == [recipe_stimuli.CITATION]


def test_without_the_plugin_the_names_are_unknown(tiny_config):
    """A study that names the model but forgets `plugins:` is stopped before any work, with the fix in the message."""
    from workbench.pipeline import resolve_config

    cfg = _config(tiny_config)
    cfg["plugins"] = []
    with pytest.raises(ConfigError, match="unknown model 'recipe_net'.*plugins"):
        resolve_config(cfg)
