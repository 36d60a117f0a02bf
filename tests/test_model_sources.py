"""Models from anywhere (``model.source``): torchvision and timm by name, the user's own builder by import path;
their layers (every ``named_modules`` path, sensible defaults), their preprocessing (from the weights' transforms)
and the errors for a wrong name, layer or source. Everything runs on random init (``weights: null``)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.config import ConfigError
from workbench.models import build_model, check_layers, layer_names, validate_model_config

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def test_torchvision_models_build_with_default_layers_and_their_preprocessing():
    cfg = validate_model_config({"source": "torchvision", "name": "alexnet", "weights": None})
    # the weights' transforms, read from torchvision's weight enum (nothing downloaded)
    assert cfg["preprocess"] == {"image_size": 224, "mean": pytest.approx([0.485, 0.456, 0.406]),
                                 "std": pytest.approx([0.229, 0.224, 0.225])}
    alexnet = build_model(cfg)
    assert layer_names(alexnet) == ["features.2", "features.5", "features.7", "features.9", "features.12",
                                    "classifier.2", "classifier.5", "classifier.6"]
    resnet = build_model({"source": "torchvision", "name": "resnet18"})
    assert layer_names(resnet) == ["layer1", "layer2", "layer3", "layer4", "fc"]
    vit = build_model({"source": "torchvision", "name": "vit_b_16"})
    assert layer_names(vit)[0] == "encoder.layers.encoder_layer_0" and len(layer_names(vit)) == 13


def test_a_given_preprocess_key_overrides_the_weights_and_keeps_the_rest():
    cfg = validate_model_config({"source": "torchvision", "name": "resnet18",
                                 "preprocess": {"image_size": 64, "mean": None, "std": None}})
    assert cfg["preprocess"]["image_size"] == 64 and cfg["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_num_classes_resizes_a_random_init_head_and_weights_are_seeded():
    torch.manual_seed(0)
    a = build_model({"source": "torchvision", "name": "resnet18", "num_classes": 10})
    torch.manual_seed(0)
    b = build_model({"source": "torchvision", "name": "resnet18", "num_classes": 10})
    assert a.fc.out_features == 10
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_every_named_module_is_a_valid_layer_and_an_unknown_one_names_the_nearest():
    model = build_model({"source": "torchvision", "name": "resnet18"})
    check_layers(model, ["layer4.1.conv2", "avgpool"])  # not among the defaults, still valid
    with pytest.raises(KeyError, match=r"layer4\.1\.conv2.*named_modules"):
        check_layers(model, ["layer4.1.conv3"])


@pytest.mark.parametrize("cfg, words", [
    ({"source": "torchvision", "name": "alexnett"}, "did you mean 'alexnet'"),
    ({"source": "torchvison", "name": "alexnet"}, "did you mean 'torchvision'"),
    ({"source": "import", "name": "no_such_pkg.models:net"}, "cannot import 'no_such_pkg.models'"),
    ({"source": "import", "name": "byo_plugin"}, "package.module:function"),
    ({"source": "import", "name": "byo_plugin:build_nett"}, "did you mean 'build_net'"),
    ({"source": "import", "name": "byo_plugin:build_net", "depth": 3}, "takes no option 'depth'"),
    ({"name": "alexnet"}, "model.source: torchvision"),
])
def test_a_wrong_model_says_what_is_wrong(plugins_on_path, cfg, words):
    with pytest.raises(ConfigError, match=words):
        validate_model_config(cfg)


def test_the_import_source_calls_the_users_builder_with_the_config_keys(plugins_on_path):
    with pytest.warns(UserWarning, match="set model.preprocess"):
        cfg = validate_model_config({"source": "import", "name": "byo_plugin:build_net", "width": 6})
    model = build_model(cfg)
    assert model[0].out_channels == 6
    # a plain Sequential: pooling and non-linearity outputs (a ReLU before a pool gives way to it), then the last
    assert layer_names(model) == ["2", "5", "7"]


def test_a_timm_model_by_name():
    timm = pytest.importorskip("timm", reason="timm is an optional dependency (pip install -e '.[timm]')")
    cfg = validate_model_config({"source": "timm", "name": "resnet18", "weights": None})
    assert cfg["preprocess"]["image_size"] == 224
    model = build_model(cfg)
    assert isinstance(model, timm.models.ResNet) and "layer4" in layer_names(model)


def test_the_layers_command_lists_every_layer_with_its_shape():
    out = subprocess.run([sys.executable, "-m", "workbench", "layers", "model=torchvision", "model.name=alexnet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("torchvision:alexnet at 224 px")
    assert any(line.startswith("* features.2 ") and line.endswith("64x27x27") for line in lines)
    assert any(line.startswith("  features.0 ") and line.endswith("64x55x55") for line in lines)
    bad = subprocess.run([sys.executable, "-m", "workbench", "layers", "model=torchvision", "model.name=alexnett"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "did you mean 'alexnet'" in bad.stderr
