"""Models with named layers, their cortical sheets, and checkpoints that load with ``weights_only=True``.

    build_model(model_cfg) -> nn.Module          # cfg["model"]: name, num_classes, width, weights, topography, ...
    layer_names(model) -> list[str]              # valid extraction / topography layer names
    layer_unit_shapes(model, image_size) -> {layer: (C, H, W) or (n,)}
    build_sheets(model, model_cfg) -> {layer: CorticalSheet}
    save_checkpoint(path, model, model_cfg, sheets) / load_checkpoint(path) -> model (with .cortical_sheets)
    validate_model_config(cfg["model"])          # names, builder options, and the schemas of workbench.models.config

A user adds a model without editing the package::

    from workbench.models import MODELS
    @MODELS.register("my_net", citation="...")
    def my_net(num_classes=10): ...          # returns an nn.Module; set .workbench_layers to name its layers
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.models.networks import RESNET_LAYERS, SMALL_CNN_LAYERS, SmallCNN, resnet18_cifar, resnet18_imagenet
from workbench.models.sheet import CorticalSheet, channel_tile_shape
from workbench.models.sources import SOURCES, ModelSource, default_layers, get_source
from workbench.registry import Registry, nearest

__all__ = [
    "MODELS", "SOURCES", "build_model", "model_preprocess", "valid_layer_names", "layer_names", "layer_unit_shapes", "build_sheets", "sheet_config",
    "save_checkpoint", "load_checkpoint", "CorticalSheet", "channel_tile_shape", "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "workbench.model/1"
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_RESNET_CITATION = ("He, K., Zhang, X., Ren, S., & Sun, J. (2016). Deep residual learning for image recognition. "
                    "CVPR, 770-778.")


@MODELS.register("small_cnn", citation="workbench small CNN (4 conv blocks + linear read-out), trained on CIFAR-10: "
                 "Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Tech. report, "
                 "Univ. of Toronto.", description="4 conv-BN-ReLU blocks, 32 px input")
def _small_cnn(num_classes: int = 10, width: int = 32, dropout: float = 0.0, weights: str | None = None) -> nn.Module:
    if weights:
        raise ValueError("small_cnn has no pretrained weights; set model.weights: null (train it with the train stage)")
    model = SmallCNN(num_classes=num_classes, width=int(width), dropout=float(dropout))
    model.workbench_layers = list(SMALL_CNN_LAYERS)
    return model


@MODELS.register("resnet18_32", citation=_RESNET_CITATION, description="ResNet-18 with a 3x3/1 stem for 32 px")
def _resnet18_32(num_classes: int = 10, weights: str | None = None) -> nn.Module:
    model = resnet18_cifar(num_classes=num_classes, weights=weights)
    model.workbench_layers = list(RESNET_LAYERS)
    return model


@MODELS.register("resnet18", citation=_RESNET_CITATION, description="torchvision ResNet-18, 224 px stem")
def _resnet18(num_classes: int = 1000, weights: str | None = None) -> nn.Module:
    model = resnet18_imagenet(num_classes=num_classes, weights=weights)
    model.workbench_layers = list(RESNET_LAYERS)
    return model


# Keys of cfg["model"] that are not architecture arguments (read by the training and topography code).
_SHARED_KEYS = {"name", "source", "num_classes", "preprocess", "topography", "optimizer", "weights"}


def _plain(obj: Any) -> Any:
    """A JSON-able deep copy (OmegaConf containers, tuples, numpy scalars -> dict/list/float)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    from workbench.utils import to_json

    return json.loads(to_json(obj))


@SOURCES.register("workbench", description="the workbench's model registry (workbench.models.MODELS)")
class WorkbenchSource(ModelSource):
    """The registry of this package and of the plugins; the builder's signature names its options."""

    def options(self, model_cfg):
        return set(inspect.signature(MODELS.get(model_cfg["name"])).parameters)

    def build(self, model_cfg, options):
        params = inspect.signature(MODELS.get(model_cfg["name"])).parameters
        for key in ("num_classes", "weights"):
            if key in params and key in model_cfg:
                options = {**options, key: model_cfg[key]}
        return MODELS.get(model_cfg["name"])(**options)


def _architecture_options(model_cfg: dict, source: ModelSource) -> dict[str, Any]:
    """The keys of ``model_cfg`` passed to the builder; an unknown key is a ConfigError naming the valid ones."""
    accepted = source.options(model_cfg)
    options = {k: v for k, v in model_cfg.items() if k not in _SHARED_KEYS}
    if accepted is not None:
        for key in options:
            if key not in accepted:
                valid = sorted((accepted | _SHARED_KEYS) - {"self"})
                raise ConfigError(f"model {model_cfg['name']!r} takes no option {key!r}{nearest(key, valid)}; its "
                                  f"options are {valid}")
    return options


def _check_name(model_cfg: dict, error: type[Exception] = ConfigError) -> None:
    """A name, and (source workbench) a registered one; ``error`` is KeyError outside config validation."""
    if "name" not in model_cfg:
        raise error(f"model config needs a 'name'; registered models are: {', '.join(MODELS.names())} (or "
                          f"set model.source: torchvision / timm / import)")
    if (model_cfg.get("source") or "workbench") == "workbench" and model_cfg["name"] not in MODELS:
        try:
            MODELS.get(model_cfg["name"])
        except KeyError as err:
            raise error(f"model.name: {err.args[0]} (models of other libraries: model.source: torchvision, "
                        f"timm or import)") from None


def build_model(model_cfg: dict) -> nn.Module:
    """Build the model ``model_cfg`` names (``source``: workbench registry, torchvision, timm, import); attaches
    ``.cortical_sheets`` for its topography layers.

    Initial weights come from torch's global RNG: seed it (``workbench.utils.seed_everything``) first.
    """
    if not isinstance(model_cfg, dict) and not hasattr(model_cfg, "keys"):
        raise TypeError(f"model_cfg must be the cfg['model'] dict, got {type(model_cfg).__name__}")
    model_cfg = _plain(model_cfg)
    _check_name(model_cfg, KeyError)
    num_classes = model_cfg.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ConfigError(f"model.num_classes must be a positive integer, got {num_classes!r}")
    source = get_source(model_cfg)
    model = source.build(model_cfg, _architecture_options(model_cfg, source))
    model.workbench_name = model_cfg["name"]
    if getattr(model, "workbench_layers", None) is None:
        model.workbench_layers = default_layers(model)
    model.cortical_sheets = build_sheets(model, model_cfg)
    return model


def model_preprocess(model_cfg: dict) -> dict[str, Any]:
    """``model.preprocess`` filled in: the keys given, the rest from what the source knows of the weights
    (torchvision / timm transforms), else from the CIFAR-10 defaults of ``PreprocessConfig`` with a warning (a 224 px model fed 32 px
    images yields 1x1 maps in its last layers)."""
    import warnings

    from workbench.config import to_dict
    from workbench.models.config import PreprocessConfig

    given = {k: v for k, v in dict(model_cfg.get("preprocess") or {}).items() if v is not None}
    if {"image_size", "mean", "std"} <= set(given):
        return given
    known = get_source(model_cfg).preprocess(model_cfg)
    if known is not None:
        return {**known, **given}  # e.g. image_size: 64 alone keeps the weights' normalisation
    if (model_cfg.get("source") or "workbench") != "workbench":
        warnings.warn(f"model {model_cfg.get('name')!r} has no preprocess and its source cannot tell the input size "
                      f"and normalisation of its weights: using 32 px and CIFAR-10 statistics; set model.preprocess "
                      f"(image_size, mean, std)", stacklevel=2)
    return {**to_dict(PreprocessConfig()), **given}


def validate_model_config(model_cfg: Any) -> dict[str, Any]:
    """``cfg["model"]`` checked before any work: a known source and name, only options its builder takes (plus the
    shared keys), and the sub-sections against their schemas (``workbench.models.config``): model.preprocess (filled
    from the weights' transforms when null), model.optimizer, model.topography (with each loss's options checked by
    the loss's own signature). Errors name the key and the nearest valid one. Returns it as a plain dict."""
    from workbench.config import parse
    from workbench.models.config import OptimizerConfig, PreprocessConfig, parse_model_topography
    from workbench.training.losses import LOSSES

    if not hasattr(model_cfg, "keys"):
        raise ConfigError(f"model should be a mapping (configs/model/*.yaml), got {type(model_cfg).__name__}")
    model_cfg = _plain(model_cfg)
    _check_name(model_cfg)
    _architecture_options(model_cfg, get_source(model_cfg))
    num_classes = model_cfg.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ConfigError(f"model.num_classes must be a positive integer, got {num_classes!r}")
    if (model_cfg.get("source") or "workbench") != "workbench" or any(
            v is None for v in dict(model_cfg.get("preprocess") or {}).values()):
        model_cfg["preprocess"] = model_preprocess(model_cfg)
    parse(PreprocessConfig, model_cfg.get("preprocess"), "model.preprocess")
    parse(OptimizerConfig, model_cfg.get("optimizer"), "model.optimizer")
    parse_model_topography(model_cfg.get("topography"), LOSSES)
    return model_cfg


def layer_names(model: nn.Module) -> list[str]:
    """The model's default layers (forward order): what extraction takes when ``extract.layers`` is null, and what
    the analyses pick from. A workbench model names them (``.workbench_layers``); any other model gets
    ``sources.default_layers``. Every ``named_modules`` path is valid (``valid_layer_names``)."""
    names = getattr(model, "workbench_layers", None)
    return list(default_layers(model) if names is None else names)


def valid_layer_names(model: nn.Module) -> list[str]:
    """Every layer a config may name: the ``named_modules`` paths (the model itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def check_layers(model: nn.Module, layers: list[str]) -> None:
    valid = set(valid_layer_names(model))
    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        model_name = getattr(model, "workbench_name", type(model).__name__)
        raise KeyError(f"unknown layer(s) {unknown} for model {model_name}{nearest(unknown[0], sorted(valid))}; valid "
                       f"layers are its named_modules paths (the default ones: {layer_names(model)}; `workbench "
                       f"layers model=...` lists them all with their output shapes)")


def infer_image_size(model_cfg: dict) -> int:
    pre = model_cfg.get("preprocess") or {}
    if "image_size" in pre:
        return int(pre["image_size"])
    if (model_cfg.get("source") or "workbench") == "workbench":
        return 224 if model_cfg.get("name") == "resnet18" else 32
    return int(model_preprocess(model_cfg)["image_size"])


@torch.no_grad()
def layer_unit_shapes(model: nn.Module, image_size: int = 32, layers: list[str] | None = None,
                      in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each named layer, from one forward pass of a zero image in eval mode."""
    layers = layer_names(model) if layers is None else list(layers)
    check_layers(model, layers)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in layers:
        def hook(_m, _inp, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) and out else out  # attention: (output, weights)
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape[1:]))
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()  # eval: batch-norm running statistics must not move
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def sheet_config(model_cfg: dict, layer: str) -> dict[str, Any]:
    """The sheet options for one layer: topography.sheet, overridden by topography.sheet_per_layer[layer]
    (``workbench.models.config.SheetConfig``, whose defaults fill the rest)."""
    from workbench.config import to_dict
    from workbench.models.config import parse_sheet

    return to_dict(parse_sheet(model_cfg.get("topography"), layer))


def topography_layers(model_cfg: dict) -> list[str]:
    topo = model_cfg.get("topography") or {}
    layers = topo.get("layers") or []
    if isinstance(layers, str):
        layers = [layers]
    return list(layers)


def build_sheets(model: nn.Module, model_cfg: dict, layers: list[str] | None = None) -> dict[str, CorticalSheet]:
    """A CorticalSheet for each topography layer (``model_cfg['topography']['layers']`` unless ``layers``)."""
    layers = topography_layers(model_cfg) if layers is None else list(layers)
    if not layers:
        return {}
    check_layers(model, layers)
    shapes = layer_unit_shapes(model, infer_image_size(model_cfg), layers)
    return {layer: CorticalSheet(shapes[layer], layer=layer, **sheet_config(model_cfg, layer)) for layer in layers}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_cfg: dict,
                    sheets: dict[str, CorticalSheet] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write weights + model config + sheets atomically; only tensors and plain containers (weights_only-safe)."""
    from workbench.utils import atomic_torch_save

    sheets = getattr(model, "cortical_sheets", {}) if sheets is None else sheets
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_cfg": _plain(model_cfg),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "sheets": {name: sheet.to_dict() for name, sheet in sheets.items()},
        "extra": _plain(extra or {}),
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from the stored config, restore its weights and its cortical sheets (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run the train stage first (or pass the right path)")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a workbench model checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
                         "Lightning .ckpt files are for resuming training, load checkpoints/model.pt instead")
    model_cfg = dict(payload["model_cfg"])
    # Never download weights to rebuild a checkpoint: the stored state_dict holds them all.
    model_cfg["weights"] = None
    model_cfg_no_topo = {k: v for k, v in model_cfg.items() if k != "topography"}
    model = build_model(model_cfg_no_topo)
    model.load_state_dict(payload["state_dict"])
    model.cortical_sheets = {name: CorticalSheet.from_dict(d) for name, d in payload["sheets"].items()}
    model.workbench_cfg = payload["model_cfg"]
    model.eval()
    return model


from workbench.models.mlp import MLP, MLP_LAYERS  # noqa: E402  (registered below, after the CNNs)


@MODELS.register("mlp", citation="workbench fully connected control (3 dense blocks + linear read-out), the "
                 "no-convolution baseline of the inductive-bias study", description="dense network, ~0.1 M params")
def _mlp(num_classes: int = 10, image_size: int = 32, hidden: list[int] | tuple[int, ...] = (28, 64, 128),
         weights: str | None = None) -> nn.Module:
    if weights:
        raise ValueError("mlp has no pretrained weights; set model.weights: null")
    model = MLP(num_classes=num_classes, image_size=int(image_size), hidden=tuple(int(h) for h in hidden))
    model.workbench_layers = list(MLP_LAYERS)
    return model
