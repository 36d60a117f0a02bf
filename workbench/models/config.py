"""Schemas of the model config (``cfg["model"]``, configs/model/*.yaml): preprocessing, optimizer, topography.

The architecture options (``width``, ``hidden``, ...) are the keyword arguments of the registered builder and are
checked against its signature (``workbench.models.validate_model_config``). The sub-sections are dataclasses here,
the one home of their defaults:

    model.preprocess             PreprocessConfig   (read by workbench.features.Preprocess)
    model.optimizer              OptimizerConfig    (read by workbench.training.TopographicModule)
    model.topography             TopographyModelConfig: layers, weight, loss, sheet, sheet_per_layer, preoptimise
                                 (PreoptimiseConfig), and the
                                 options of each loss under the loss's registered name
                                 (model.topography.spatial_correlation: {...}); each loss maps its own options
                                 (``loss_options_schema``)

The topography *analysis* (smoothness, selectivity maps) is a stage of its own: the top-level ``topography``
section (``workbench.training.config.TopographyConfig``).

No torch here: the pipeline imports every schema to validate a config.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from workbench.config import ConfigError, bounded, default_list, default_of, parse, to_dict
from workbench.registry import nearest

__all__ = ["PreprocessConfig", "OptimizerConfig", "SheetConfig", "PreoptimiseConfig", "TopographyModelConfig", "loss_options_schema",
           "parse_model_topography", "parse_sheet"]


@dataclass
class PreprocessConfig:
    """Resize to ``image_size`` px and normalise with ``mean``/``std`` (R, G, B) (CIFAR-10 statistics by default)."""

    image_size: int = bounded(32, min=1)
    mean: list[float] = default_list(0.4913, 0.4821, 0.4465)
    std: list[float] = default_list(0.2452, 0.2428, 0.2606)

    def __post_init__(self):
        for key in ("mean", "std"):
            if len(getattr(self, key)) != 3:
                raise ConfigError(f"{key} needs 3 values (R, G, B), got {getattr(self, key)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = bounded(0.9, min=0.0)         # sgd only
    weight_decay: float = bounded(5.0e-4, min=0.0)
    nesterov: bool = False                          # sgd only
    scheduler: Literal["cosine", "none"] = "cosine"  # cosine: annealed to 0 over all training steps

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a number > 0, got {self.lr}")


@dataclass
class SheetConfig:
    """The cortical sheet of a topography layer (``workbench.models.CorticalSheet``)."""

    size_mm: float = 10.0               # side of the square sheet; distances enter the loss as 1/(d+1) in mm
    grid: list[int] | None = None       # [rows, cols] of unit slots; null = sized to the layer
    jitter: float = 0.1                 # fraction of the slot spacing, in [0, 0.5)
    seed: int = 0
    shuffle_channels: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.size_mm) and self.size_mm > 0):
            raise ConfigError(f"size_mm must be a positive number of millimetres, got {self.size_mm}")
        if not 0.0 <= self.jitter < 0.5:
            raise ConfigError(f"jitter must be in [0, 0.5) of the slot spacing, got {self.jitter}")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ConfigError(f"grid must be [rows, cols] of unit slots (or null), got {self.grid}")


@dataclass
class PreoptimiseConfig:
    """TDANN's position pre-optimisation before training (``workbench.models.preoptimise``): channels are swapped
    between tile slots so that correlated ones sit near each other, on the responses of ``from_run``'s trained model
    (TDANN: the same network trained without the spatial loss), or of the network at initialisation when null."""

    enabled: bool = False
    from_run: str | None = None          # a run folder with a trained model (checkpoints/model.pt); null = init
    stimuli: str = "data"                # data: the training data's validation images; else a registered stimulus set
    n_stimuli: int = bounded(256, min=3)
    iterations: int = bounded(2000, min=0)              # neighbourhoods visited
    neighbourhood_size: int | None = None               # channels per neighbourhood; null = half the tile, >= 9
    swaps_per_neighbourhood: int = bounded(8, min=1)
    seed: int = 0

    def __post_init__(self):
        if self.neighbourhood_size is not None and self.neighbourhood_size < 3:
            raise ConfigError(f"neighbourhood_size must be >= 3 channels (or null), got {self.neighbourhood_size}")


@dataclass
class TopographyModelConfig:
    """``model.topography`` without the per-loss options (those are keyed by loss name, see
    ``parse_model_topography``)."""

    layers: list[str] | str = default_list()        # layers laid out on a cortical sheet (trained topographically)
    weight: float | dict[str, float] = 0.0         # one weight for every layer, or {layer: weight}; 0 = plain
    loss: str | dict[str, str] = "spatial_correlation"  # a registered loss, or {layer: loss}
    sheet: SheetConfig = default_of(SheetConfig)
    # {layer: {sheet option: value}}: overrides of `sheet` (also for layers that only the analysis lays out)
    sheet_per_layer: dict[str, dict[str, Any]] = default_of(dict)
    preoptimise: PreoptimiseConfig = default_of(PreoptimiseConfig)

    def __post_init__(self):
        if isinstance(self.layers, str):
            self.layers = [self.layers]
        for key in ("weight", "loss"):
            value = getattr(self, key)
            if isinstance(value, dict):
                unknown = [layer for layer in value if layer not in self.layers]
                if unknown:
                    raise ConfigError(f"{key} names layer(s) {unknown} that are not in model.topography.layers "
                                      f"{self.layers}")
                missing = [layer for layer in self.layers if layer not in value]
                if missing:
                    raise ConfigError(f"{key} has no entry for layer(s) {missing}; give one for each of "
                                      f"{self.layers}")
        weights = self.weight.values() if isinstance(self.weight, dict) else [self.weight]
        for w in weights:
            if not (math.isfinite(w) and w >= 0):
                raise ConfigError(f"weight must be a finite number >= 0 (0 = plain training), "
                                  f"got {w}")

    def loss_of(self, layer: str) -> str:
        return self.loss[layer] if isinstance(self.loss, dict) else self.loss

    def weight_of(self, layer: str) -> float:
        return float(self.weight[layer] if isinstance(self.weight, dict) else self.weight)


def parse_sheet(topography: Mapping[str, Any] | None, layer: str) -> SheetConfig:
    """The sheet of ``layer``: model.topography.sheet, overridden by model.topography.sheet_per_layer[layer]."""
    topography = topography or {}
    merged = {**dict(topography.get("sheet") or {}), **dict((topography.get("sheet_per_layer") or {}).get(layer)
                                                            or {})}
    return parse(SheetConfig, merged, f"model.topography.sheet (layer {layer})")


# Keyword arguments of a loss constructor that are not options: what the training code passes itself.
_LOSS_INJECTED = ("self", "sheet", "model")


def loss_options_schema(loss: Callable[..., Any]) -> type:
    """The options of a registered topographic loss as a config schema: its constructor's keyword arguments after
    ``sheet`` and ``model`` (their annotations and defaults). So a loss maps its own options: a plugin loss gets
    checked keys, types and did-you-mean errors from its signature alone."""
    target = loss.__init__ if inspect.isclass(loss) else loss
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: check the keys, not the types
        hints = {}
    fields = []
    for name, param in inspect.signature(target).parameters.items():
        if name in _LOSS_INJECTED or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = None if param.default is inspect.Parameter.empty else param.default
        fields.append((name, hints.get(name, Any), dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{getattr(loss, '__name__', 'Loss')}Options", fields)


def parse_model_topography(topography: Mapping[str, Any] | None, loss_registry: Any
                           ) -> tuple[TopographyModelConfig, dict[str, dict[str, Any]]]:
    """``model.topography`` checked: its own keys by the schema, every other key must be a loss registered in
    ``loss_registry`` (its options, checked by ``loss_options_schema``). Returns the parsed section and
    {loss name: the options given for it} (only the keys given: a loss's defaults stay in its constructor)."""
    topography = dict(topography or {})
    if "analysis" in topography:
        raise ConfigError("model.topography.analysis has moved: the topography analysis options are the top-level "
                          "`topography` section now (configs/topography/default.yaml); move them there")
    own = {f.name for f in dataclasses.fields(TopographyModelConfig)}
    loss_names = set(loss_registry.names())
    options: dict[str, dict[str, Any]] = {}
    for key, value in topography.items():
        if key in own:
            continue
        if key not in loss_names:
            valid = sorted(own | loss_names)
            raise ConfigError(f"unknown key {key!r} in model.topography{nearest(key, valid)}; valid keys: "
                              f"{', '.join(valid)} (the last ones are the registered losses, each with its options)")
        schema = loss_options_schema(loss_registry.get(key))
        parsed = parse(schema, value, f"model.topography.{key}")
        options[key] = {k: v for k, v in to_dict(parsed).items() if k in dict(value or {})}
    section = parse(TopographyModelConfig, {k: v for k, v in topography.items() if k in own}, "model.topography")
    for layer in section.layers:
        name = section.loss_of(layer)
        if name not in loss_registry:
            raise ConfigError(f"model.topography.loss: unknown topographic loss {name!r}{nearest(name, loss_names)}"
                              f" for layer {layer!r}; registered losses: {', '.join(sorted(loss_names))}")
    for layer in dict.fromkeys([*section.layers, *section.sheet_per_layer]):
        parse_sheet(topography, layer)
    return section, options
