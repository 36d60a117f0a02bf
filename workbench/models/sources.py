"""Where a model comes from (``model.source``): the workbench's registry, torchvision, timm, or the user's own code.

    model: {source: workbench,   name: small_cnn, width: 16}            # MODELS (the default)
    model: {source: torchvision, name: alexnet, weights: null}          # torchvision.models.get_model
    model: {source: timm,        name: resnet18, weights: null}         # timm.create_model (pip install timm)
    model: {source: import,      name: "my_pkg.models:build_net", depth: 4}   # called with the other keys

Each source is a class registered in ``SOURCES`` (a plugin adds one the same way). A source builds the module,
names the options it accepts, knows the preprocessing its weights expect (so ``preprocess: null`` takes the
weights' own size and normalisation), and picks default layers. Every ``named_modules`` path is a valid layer
(``workbench layers model=...`` lists them with their output shapes).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from torch import nn

from workbench.config import ConfigError
from workbench.registry import Registry, nearest

SOURCES: Registry[type["ModelSource"]] = Registry("model source")

# ImageNet statistics: the preprocessing of every torchvision / most timm classification weights.
IMAGENET_PREPROCESS = {"image_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class ModelSource:
    """How to build ``model_cfg`` (a plain dict: name, weights, num_classes, options...)."""

    def options(self, model_cfg: dict[str, Any]) -> set[str] | None:
        """Architecture keys the builder accepts (None: any keyword)."""
        return None

    def build(self, model_cfg: dict[str, Any], options: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def preprocess(self, model_cfg: dict[str, Any]) -> dict[str, Any] | None:
        """image_size / mean / std the model's weights expect, or None when the source cannot tell."""
        return None


def get_source(model_cfg: dict[str, Any]) -> ModelSource:
    name = model_cfg.get("source") or "workbench"
    if name not in SOURCES:
        raise ConfigError(f"model.source: unknown model source {name!r}{nearest(name, SOURCES.names())}; sources "
                          f"are {', '.join(SOURCES.names())} (a plugin registers its own with @SOURCES.register)")
    return SOURCES.get(name)()


@SOURCES.register("torchvision", citation="TorchVision maintainers and contributors (2016). TorchVision: "
                  "PyTorch's computer vision library. https://github.com/pytorch/vision",
                  description="any torchvision.models classification model by name")
class TorchvisionSource(ModelSource):
    def _check_name(self, name: str) -> None:
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)
        if name not in known:
            raise ConfigError(f"model.name: torchvision has no classification model {name!r}{nearest(name, known)}"
                              f"; torchvision.models.list_models() lists them")

    def build(self, model_cfg, options):
        import torchvision.models as tvm

        name, weights = model_cfg["name"], model_cfg.get("weights")
        self._check_name(name)
        if weights and model_cfg.get("num_classes") not in (None, 1000):
            raise ConfigError("model.num_classes differs from the weights' 1000 classes: load the weights with "
                              "num_classes: 1000 (or null), or train from random init (weights: null)")
        if model_cfg.get("num_classes") is not None and not weights:
            options = {**options, "num_classes": int(model_cfg["num_classes"])}
        return tvm.get_model(name, weights=weights or None, **options)

    def preprocess(self, model_cfg):
        import torchvision.models as tvm

        self._check_name(model_cfg["name"])
        enum = tvm.get_model_weights(model_cfg["name"])
        weights = enum[model_cfg["weights"]] if model_cfg.get("weights") not in (None, "DEFAULT") else enum.DEFAULT
        transform = weights.transforms()  # only reads the enum's metadata: nothing is downloaded
        return {"image_size": int(transform.crop_size[0]), "mean": [float(m) for m in transform.mean],
                "std": [float(s) for s in transform.std]}


@SOURCES.register("timm", citation="Wightman, R. (2019). PyTorch Image Models. "
                  "https://github.com/huggingface/pytorch-image-models",
                  description="any timm model by name (optional dependency: pip install timm)")
class TimmSource(ModelSource):
    @staticmethod
    def _timm():
        try:
            import timm
        except ImportError:
            raise ConfigError("model.source: timm needs the timm package: pip install timm (or pip install -e "
                              "'.[timm]')") from None
        return timm

    def build(self, model_cfg, options):
        timm = self._timm()
        name = model_cfg["name"]
        if name not in timm.list_models():
            raise ConfigError(f"model.name: timm has no model {name!r}{nearest(name, timm.list_models())}")
        if model_cfg.get("num_classes") is not None:
            options = {**options, "num_classes": int(model_cfg["num_classes"])}
        return timm.create_model(name, pretrained=bool(model_cfg.get("weights")), **options)

    def preprocess(self, model_cfg):
        timm = self._timm()
        try:
            pretrained = timm.models.get_pretrained_cfg(model_cfg["name"])
        except Exception:  # a name without a pretrained config: the caller falls back with a warning
            return None
        if pretrained is None:
            return None
        return {"image_size": int(pretrained.input_size[-1]), "mean": [float(m) for m in pretrained.mean],
                "std": [float(s) for s in pretrained.std]}


@SOURCES.register("import", description="the user's own builder: model.name = 'package.module:function'")
class ImportSource(ModelSource):
    @staticmethod
    def builder(model_cfg: dict[str, Any]) -> Callable[..., nn.Module]:
        spec = str(model_cfg["name"])
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"model.name: source import needs 'package.module:function', got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(f"model.name: cannot import {module_name!r} ({err}); install the package or put its "
                              f"folder on PYTHONPATH") from err
        if not callable(getattr(module, attr, None)):
            raise ConfigError(f"model.name: {module_name} has no callable {attr!r}"
                              f"{nearest(attr, [n for n in dir(module) if not n.startswith('_')])}")
        return getattr(module, attr)

    def options(self, model_cfg):
        params = inspect.signature(self.builder(model_cfg)).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}

    def build(self, model_cfg, options):
        builder = self.builder(model_cfg)
        takes = self.options(model_cfg)
        for key in ("num_classes", "weights"):
            if model_cfg.get(key) is not None and (takes is None or key in takes):
                options = {**options, key: model_cfg[key]}
        model = builder(**options)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{model_cfg['name']} returned {type(model).__name__}, not a torch.nn.Module")
        return model


_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_layers(model: nn.Module) -> list[str]:
    """Layers extracted when ``extract.layers`` is null, for a model that names none itself: the stage outputs a
    neuroscientist would compare with cortex. A sequence of plain layers (AlexNet/VGG ``features``/``classifier``)
    gives its pooling and non-linearity outputs (a non-linearity right before a pool gives way to the pool) and its
    last layer; a container holding a list of blocks (a ViT's ``encoder.layers``) gives each block; any other
    top-level child that holds parameters-bearing sub-modules gives its own output; the model's last child always."""
    if isinstance(model, nn.Sequential) and model and all(not list(c.children()) for c in model):
        return _plain_sequence_layers("", model)
    children = list(model.named_children())
    # one top-level sequence of blocks is the network's trunk (MobileNet / ConvNeXt / EfficientNet `features`);
    # several are its stages (ResNet's layer1-4), each kept whole
    trunks = [name for name, child in children if isinstance(child, nn.Sequential) and _blocks(child)]
    layers: list[str] = []
    for i, (name, child) in enumerate(children):
        if isinstance(child, nn.Sequential) and child and all(not list(c.children()) for c in child):
            layers += _plain_sequence_layers(name, child)
        elif trunks == [name]:
            layers += [f"{name}.{b}" for b, _ in child.named_children()]
        elif not isinstance(child, nn.Sequential) and _block_list(child) is not None:
            path, blocks = _block_list(child)
            layers += [f"{name}.{path}.{b}" for b, _ in blocks.named_children()]
        elif list(child.children()) or i == len(children) - 1:
            layers.append(name)
    return list(dict.fromkeys(layers)) or [name for name, _ in children]


def _plain_sequence_layers(name: str, sequence: nn.Sequential) -> list[str]:
    prefix = f"{name}." if name else ""
    items = list(sequence.named_children())
    out = []
    for j, (sub, module) in enumerate(items):
        followed_by_pool = j + 1 < len(items) and isinstance(items[j + 1][1], _POOLS)
        if isinstance(module, _POOLS) or (isinstance(module, _ACTIVATIONS) and not followed_by_pool):
            out.append(f"{prefix}{sub}")
    last = f"{prefix}{items[-1][0]}"
    return out + ([last] if last not in out else [])


def _block_list(module: nn.Module) -> tuple[str, nn.Module] | None:
    """(path, container) of a Sequential / ModuleList of several non-leaf blocks directly inside ``module``."""
    for path, child in module.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and _blocks(child):
            return path, child
    return None


def _blocks(container: nn.Module) -> bool:
    """Several sub-modules, each a block of its own (holding sub-modules)."""
    items = list(container.children())
    return len(items) > 1 and all(list(c.children()) for c in items)
