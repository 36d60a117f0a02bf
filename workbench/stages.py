"""The stage registry: what a study's ``stages: [...]`` may name, in which order they run, and their config schemas.

A stage is ``function(ctx: StageContext) -> dict`` (the stage's metrics section) plus a config schema (a dataclass,
see ``workbench.config``) for its section of the config. Built-in stages are registered here by import path, so that
a study without attribution never imports captum or shap. A plugin registers its own stage from its module:

    from workbench.stages import stage

    @stage("my_analysis", config=MyConfig, after="align", title="My analysis", citation="Me et al. (2026). ...")
    def my_analysis(ctx):
        ...
        return {"value": 1.0, "headline": [ctx.headline("value", 1.0, "My value", key="value")]}

and a study lists it: ``stages: [train, extract, align, my_analysis, report]`` with ``plugins: [my_module]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from workbench.registry import Registry


@dataclass
class StageSpec:
    name: str
    function: str | Callable[..., dict]            # the stage itself, or "module:function" (imported on first use)
    config: str | type | None = None               # its config schema, or "module:Class"; None: no section
    config_key: str | None = None                  # top-level config key of its section (default: the stage name)
    order: float = 0.0                             # position in the pipeline (built-ins are 10, 20, ...)
    title: str = ""                                # heading of its report section
    lede: str = ""                                 # one sentence under that heading

    def resolve_function(self) -> Callable[..., dict]:
        return _load(self.function)

    def resolve_config(self) -> type | None:
        return _load(self.config) if self.config is not None else None

    @property
    def key(self) -> str:
        return self.config_key or self.name


def _load(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


STAGES: Registry[StageSpec] = Registry("stage")


def _builtin(name: str, order: float, title: str, lede: str, config_key: str | None = None) -> None:
    package = {"train": "training", "topography": "training", "extract": "features", "align": "alignment",
               "attribute": "attribution", "intervene": "intervention", "synthesize": "synthesis",
               "report": "report"}[name]
    # train has no section of its own: it reads data, model, trainer and logger (Hydra `_target_` specs)
    schema = {"train": None, "topography": "TopographyConfig", "extract": "ExtractConfig",
              "align": "AlignConfig", "attribute": "AttributeConfig", "intervene": "InterveneConfig",
              "synthesize": "SynthesizeConfig", "report": "ReportConfig"}[name]
    module = f"workbench.{package}.stage"
    # schemas live in small config modules: validating a config imports no torch-heavy library (captum, shap)
    config = f"workbench.{package}.config:{schema}" if schema else None
    STAGES.add(name, StageSpec(name, f"{module}:{name}_stage", config, config_key, order, title, lede))


_builtin("train", 10, "Training",
         "Task training of the network, with the spatial (topographic) loss where configured: learning curves and "
         "final accuracy.")
_builtin("extract", 20, "Feature extraction",
         "Layer activations to the neural stimulus sets, cached for the stages below.")
_builtin("topography", 30, "Topography",
         "Units laid out on a cortical sheet: maps of their selectivity, and how similar the tuning of two units is "
         "as a function of their distance on the sheet (smoothness).")
_builtin("align", 40, "Brain alignment",
         "Representational similarity with human and monkey inferior temporal cortex (RSA, against the noise "
         "ceiling of the data) and encoding-model predictivity of macaque V4 responses.")
_builtin("attribute", 50, "Attribution",
         "Which input pixels drive class, unit and neural-site targets, with sanity checks of the maps.")
_builtin("intervene", 60, "Intervention",
         "Lesions of units and connections: their effect on the task and on brain alignment, summarised by the "
         "interventional-alignment score.")
_builtin("synthesize", 70, "Synthesis and neural control",
         "Images that drive units, category patches and the fitted models of the most predictable V4 neurons, under "
         "the norm budget of natural images, next to the natural images that drive them most.")
_builtin("report", 1000, "Report", "")


def stage(name: str, *, config: type | None = None, after: str | None = None, order: float | None = None,
          title: str = "", lede: str = "", config_key: str | None = None,
          citation: str | tuple[str, ...] = "") -> Callable[[Callable], Callable]:
    """Register ``function(ctx) -> dict`` as stage ``name``; it runs right after stage ``after`` (default: before
    the report), or at ``order``. ``citation``: what the stage computes, cited in every run that runs it."""
    def decorator(function: Callable) -> Callable:
        position = order
        if position is None:
            position = (STAGES.get(after).order + 0.5) if after else 999.0
        STAGES.add(name, StageSpec(name, function, config, config_key, float(position), title or name.title(), lede),
                   citation=citation)
        return function

    return decorator


def stage_order() -> list[str]:
    """Registered stage names in pipeline order."""
    return sorted(STAGES.names(), key=lambda n: (STAGES.get(n).order, n))
