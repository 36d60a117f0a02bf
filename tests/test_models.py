"""Models, cortical sheets and checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.models import (MODELS, CorticalSheet, build_model, build_sheets, layer_names, layer_unit_shapes,
                              load_checkpoint, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]

TINY = {"name": "small_cnn", "num_classes": 10, "width": 4,
        "topography": {"layers": ["conv3", "conv4"], "weight": 0.5, "sheet": {"jitter": 0.2, "seed": 3}}}


def test_registry_has_models_with_citations():
    for name in ("small_cnn", "resnet18_32", "resnet18"):
        assert name in MODELS and MODELS.citation(name)


@pytest.mark.parametrize("name,size,shapes", [
    ("small_cnn", 32, {"conv1": (4, 32, 32), "conv3": (16, 8, 8), "conv4": (32, 4, 4), "fc": (10,)}),
    ("resnet18_32", 32, {"relu": (64, 32, 32), "layer4": (512, 4, 4), "fc": (10,)}),
    ("resnet18", 224, {"relu": (64, 112, 112), "layer4": (512, 7, 7), "fc": (10,)}),
])
def test_named_layers_and_shapes(name, size, shapes):
    model = build_model({"name": name, "num_classes": 10, **({"width": 4} if name == "small_cnn" else {})})
    got = layer_unit_shapes(model, size)
    assert list(got) == layer_names(model)
    for layer, shape in shapes.items():
        assert got[layer] == shape
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in model.modules())


def test_unit_shape_probe_leaves_batchnorm_untouched():
    model = build_model({"name": "small_cnn", "width": 4}).train()
    before = model.conv1[1].running_mean.clone()
    layer_unit_shapes(model, 32)
    assert torch.equal(before, model.conv1[1].running_mean) and model.training


def test_bad_model_config_errors():
    with pytest.raises(KeyError, match="unknown model 'vgg99'"):
        build_model({"name": "vgg99"})
    with pytest.raises(ValueError, match="takes no option 'widht'"):
        build_model({"name": "small_cnn", "widht": 8})
    with pytest.raises(ValueError, match="num_classes"):
        build_model({"name": "small_cnn", "num_classes": 0})
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model({"name": "small_cnn", "weights": "DEFAULT"})
    with pytest.raises(KeyError, match="unknown layer.*conv9.*valid layers are"):
        build_model({**TINY, "topography": {"layers": ["conv9"]}})


def test_sheet_layout_is_retinotopic_and_tiled():
    sheet = CorticalSheet((6, 4, 5), size_mm=8.0, jitter=0.0)
    assert sheet.tile_shape == (2, 3) and sheet.grid == (8, 15)
    pos = sheet.positions.reshape(6, 4, 5, 2)
    spacing = sheet.spacing_mm
    # every channel of feature-map cell (h, w) lies inside that cell's block of the sheet
    for h in range(4):
        for w in range(5):
            x, y = pos[:, h, w, 0], pos[:, h, w, 1]
            assert np.all((x > w * 3 * spacing) & (x < (w + 1) * 3 * spacing))
            assert np.all((y > h * 2 * spacing) & (y < (h + 1) * 2 * spacing))
    # a channel keeps its slot in every cell: positions differ by whole cells only
    offset = pos - pos[:, :1, :1, :]
    assert np.allclose(offset[..., 0] / (3 * spacing), np.round(offset[..., 0] / (3 * spacing)), atol=1e-5)
    assert len(np.unique(np.round(pos.reshape(-1, 2), 5), axis=0)) == 6 * 4 * 5


def test_sheet_jitter_is_seeded_and_bounded():
    a, b = CorticalSheet((8, 3, 3), jitter=0.3, seed=1), CorticalSheet((8, 3, 3), jitter=0.3, seed=1)
    c = CorticalSheet((8, 3, 3), jitter=0.3, seed=2)
    exact = CorticalSheet((8, 3, 3), jitter=0.0)
    assert np.array_equal(a.positions, b.positions) and not np.array_equal(a.positions, c.positions)
    assert np.abs(a.positions - exact.positions).max() <= 0.3 * a.spacing_mm + 1e-6


def test_sheet_too_small_and_bad_options():
    with pytest.raises(ValueError, match="sheet too small for layer 'conv3'.*grid: \\[16, 32\\]"):
        CorticalSheet((32, 4, 4), grid=(8, 8), layer="conv3")
    CorticalSheet((32, 4, 4), grid=(16, 32))  # exactly enough
    with pytest.raises(ValueError, match="size_mm"):
        CorticalSheet((4, 2, 2), size_mm=0)
    with pytest.raises(ValueError, match="jitter"):
        CorticalSheet((4, 2, 2), jitter=0.7)
    model = build_model({"name": "small_cnn", "width": 4})
    with pytest.raises(ValueError, match="sheet too small"):
        build_sheets(model, {**TINY, "topography": {"layers": ["conv4"], "sheet": {"grid": [4, 4]}}})


def test_checkpoint_roundtrip_keeps_weights_and_positions(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    assert set(model.cortical_sheets) == {"conv3", "conv4"}
    with torch.no_grad():
        model.fc.bias.add_(1.5)  # something a fresh build would not have
    path = save_checkpoint(tmp_path / "model.pt", model, TINY, model.cortical_sheets)
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["model_cfg"]["topography"]["layers"] == ["conv3", "conv4"]
    loaded = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    for layer, sheet in model.cortical_sheets.items():
        again = loaded.cortical_sheets[layer]
        assert np.array_equal(sheet.positions, again.positions)
        assert again.unit_shape == sheet.unit_shape and again.grid == sheet.grid
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary files left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the train stage"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a workbench model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_mlp_control_matches_the_default_cnn_in_size():
    import yaml

    from workbench.models import build_model, layer_names

    cfgs = {n: yaml.safe_load(open(ROOT / "configs" / "model" / f"{n}.yaml")) for n in ("mlp", "small_cnn")}
    models = {n: build_model(c) for n, c in cfgs.items()}
    sizes = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    assert abs(sizes["mlp"] - sizes["small_cnn"]) / sizes["small_cnn"] < 0.05
    assert layer_names(models["mlp"]) == ["dense1", "dense2", "dense3", "fc"]
    assert models["mlp"].cortical_sheets == {}
    with pytest.raises(ValueError, match="image_size"):
        models["mlp"](torch.zeros(2, 3, 64, 64))


def test_model_config_validation_names_the_key_and_the_fix():
    import yaml

    from workbench.config import ConfigError
    from workbench.models import validate_model_config

    for path in sorted((ROOT / "configs/model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert "analysis" not in (cfg.get("topography") or {}), path  # the top-level `topography` section has it
        checked = validate_model_config(cfg)
        if cfg.get("source", "workbench") != "workbench":  # preprocess: null keys filled from the weights
            assert all(checked["preprocess"][key] is not None for key in ("image_size", "mean", "std")), path
            checked["preprocess"] = cfg["preprocess"]
        assert checked == cfg, path
    base = yaml.safe_load((ROOT / "configs/model/small_cnn.yaml").read_text())
    cases = [
        ({"widht": 8}, "takes no option 'widht' \\(did you mean 'width'\\?\\)"),
        ({"num_classes": 0}, "model.num_classes must be a positive integer"),
        ({"preprocess": {"img_size": 32}}, "unknown key 'img_size' in model.preprocess \\(did you mean 'image_size'"),
        ({"preprocess": {"std": [1.0, 0.0, 1.0]}}, "model.preprocess: std must be positive"),
        ({"optimizer": {"schedular": "none"}}, "unknown key 'schedular' in model.optimizer \\(did you mean"),
        ({"optimizer": {"name": "adam"}}, "model.optimizer.name must be one of 'sgd', 'adamw'"),
        ({"topography": {"layers": ["conv3"], "analysis": {"n_bins": 5}}}, "top-level `topography` section"),
        ({"topography": {"layers": ["conv3"], "sheet": {"jiter": 0.1}}}, "did you mean 'jitter'"),
        ({"topography": {"layers": ["conv3"], "sheet": {"jitter": 0.5}}}, "jitter must be in \\[0, 0.5\\)"),
        ({"topography": {"layers": ["conv3"], "wieght": 1.0}}, "in model.topography \\(did you mean 'weight'"),
        ({"topography": {"layers": ["conv3"], "loss": "weight_smoothnes"}}, "did you mean 'weight_smoothness'"),
        ({"topography": {"layers": ["conv3"], "weight_smoothness": {"factor": "x"}}},
         "model.topography.weight_smoothness.factor should be a number"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_model_config({**base, **change})


def test_model_schema_defaults_agree_with_the_library():
    """The config schemas fill what YAML leaves out; they must say what the library does when called directly."""
    import inspect

    from workbench.config import defaults
    from workbench.features import Preprocess
    from workbench.models.config import PreprocessConfig, SheetConfig

    pre = defaults(PreprocessConfig)
    assert Preprocess.from_config(pre) == Preprocess()
    params = inspect.signature(CorticalSheet).parameters
    assert defaults(SheetConfig) == {k: params[k].default for k in defaults(SheetConfig)}
