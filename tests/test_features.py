import numpy as np
import pytest
import torch
from torch import nn

from workbench.features import Activations, Preprocess, extract_activations
from workbench.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model({"name": "small_cnn", "num_classes": 10, "width": 8})


def test_extraction_shapes_and_grid(k92):
    model = _model()
    acts = extract_activations(model, k92, ["conv1", "conv4", "fc"], preprocess={"image_size": 32}, batch_size=40,
                               progress=False)
    assert list(acts) == ["conv1", "conv4", "fc"]
    for layer in acts:
        assert acts[layer].shape[0] == 92 and acts[layer].dtype == np.float32
        assert acts[layer].shape[1] == int(np.prod(acts.unit_shapes[layer]))
    assert acts.unit_shapes["fc"] == (10,)
    assert len(acts.unit_shapes["conv1"]) == 3
    # the same numbers as a plain forward pass with the same preprocessing
    x = Preprocess(32)(k92.images[:5])
    with torch.no_grad():
        logits = model.eval()(x)
    assert np.allclose(acts["fc"][:5], logits.numpy(), atol=1e-5)


def test_cache_hit_on_rerun(k92, tmp_path, monkeypatch):
    model = _model()
    first = extract_activations(model, k92, ["conv2"], cache_dir=tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(type(model), "forward", lambda self, x: calls.append(1) or 1 / 0)
    again = extract_activations(model, k92, ["conv2"], cache_dir=tmp_path, progress=False)
    assert not calls and np.array_equal(first["conv2"], again["conv2"])
    # a change of preprocessing is a different key: it must run the model
    with pytest.raises(ZeroDivisionError):
        extract_activations(model, k92, ["conv2"], preprocess={"image_size": 24}, cache_dir=tmp_path, progress=False)


def test_cache_key_follows_weights(k92, tmp_path):
    model = _model()
    a = extract_activations(model, k92.subset(slice(0, 8)), ["conv1"], cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        model.conv1[0].weight.mul_(2)
    b = extract_activations(model, k92.subset(slice(0, 8)), ["conv1"], cache_dir=tmp_path, progress=False)
    assert not np.array_equal(a["conv1"], b["conv1"])


def test_unknown_layer_lists_valid_names(k92):
    with pytest.raises(KeyError, match=r"valid layer names: \['conv1'"):
        extract_activations(_model(), k92, ["conv9"], progress=False)


def test_random_projection_bounds_width_and_keeps_geometry(k92):
    model = _model()
    full = extract_activations(model, k92, ["conv2"], progress=False)["conv2"]
    proj = extract_activations(model, k92, ["conv2"], projection_dim=512, progress=False)
    assert proj["conv2"].shape == (92, 512) and proj.projection["conv2"]["dim"] == 512
    # Johnson-Lindenstrauss: pairwise distances survive the projection
    from scipy.spatial.distance import pdist

    r = np.corrcoef(pdist(full), pdist(proj["conv2"]))[0, 1]
    assert r > 0.95


def test_activations_roundtrip(tmp_path):
    acts = Activations({"a": np.ones((3, 4), np.float32)}, ["x", "y", "z"], {"a": (1, 2, 2)})
    acts.save(tmp_path / "acts.npz")
    back = Activations.load(tmp_path / "acts.npz")
    assert back.unit_shapes == {"a": (1, 2, 2)} and list(back.stimulus_ids) == ["x", "y", "z"]
    with pytest.raises(KeyError, match="extracted layers"):
        back["b"]


def test_bad_images():
    with pytest.raises(ValueError, match=r"\(n, H, W, 3\)"):
        Preprocess(32)(np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(KeyError, match="unknown preprocess keys"):
        Preprocess.from_config({"img_size": 32})


def test_extract_stage_writes_each_set_and_cites_it(tmp_path, data_root):
    """The stage on an untrained model (no checkpoint): activations through RunDir, the set's registry citation."""
    from workbench.config import ConfigError
    from workbench.data import STIMULUS_SETS
    from workbench.pipeline import run_stage
    from workbench.run import RunDir

    cfg = {"seed": 0, "device": "cpu", "model": {"name": "small_cnn", "width": 4},
           "extract": {"stimulus_sets": ["kriegeskorte92"], "layers": ["conv3", "fc"], "projection_dim": 100}}
    run = RunDir(tmp_path / "run")
    section = run_stage("extract", cfg, run)
    acts = run.load_activations("kriegeskorte92")
    assert list(acts) == ["conv3", "fc"] and acts["conv3"].shape == (92, 100) and acts["fc"].shape == (92, 10)
    assert section["stimulus_sets"]["kriegeskorte92"]["layers"]["conv3"]["projection"]["n_units"] == 16 * 8 * 8
    assert section["references"] == list(STIMULUS_SETS.citations("kriegeskorte92"))
    assert not list(run.activations_work_dir.glob("*.npz"))  # the per-layer pieces are folded into the set's file

    cfg["extract"] = {"stimulus_sets": ["kriegeskorte_92"]}
    with pytest.raises(ConfigError, match="extract.stimulus_sets\\[0\\].*did you mean 'kriegeskorte92'"):
        run_stage("extract", cfg, RunDir(tmp_path / "run2"))
    cfg["extract"] = {"batch_sise": 8}
    with pytest.raises(ConfigError, match="unknown key 'batch_sise' in extract \\(did you mean 'batch_size'"):
        run_stage("extract", cfg, RunDir(tmp_path / "run2"))
