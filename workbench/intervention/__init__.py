"""Intervention: unit ablation, connection deletion, lesion selections, lesion effects and interventional alignment.

    ablate_units(model, layer, units, mode="zero"|"mean", reference=None)   # context manager (forward hook)
    ablate_connections(model, layer, mask | in_channels=..., out_channels=...)  # context manager (weights)
    top_k_selective / disk_around_peak / random_units / random_disk / size_sweep -> Selection
    SELECTIONS, SITES              # registries of lesion selections (with their controls) and of lesion sites
    interventional_alignment(...)  # Rajalingham & DiCarlo (2019) site analysis
    lesion_specificity(...)        # selective lesion vs size-matched random controls

The stage (``workbench.intervention.stage.intervene_stage``) runs these on a run's model. Names are imported on
first use, so that ``workbench.intervention.config`` (read when any config is validated) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ablation": ("AblationHandle", "ablate_connections", "ablate_units", "connection_mask", "get_layer",
                 "layer_mean_activation", "resolve_units", "weight_module"),
    "effects": ("category_response_change", "class_deficits", "layer_outputs", "per_class_accuracy", "percentile_ci",
                "predict_labels", "relative_response_change", "stratified_bootstrap_indices"),
    "scoring": ("interventional_alignment", "lesion_specificity", "profile_correlations", "site_profiles"),
    "selection": ("Selection", "category_dprime", "disk", "disk_around_peak", "random_disk", "random_units",
                  "resolve_size", "selectivity_peak", "sheet_positions", "size_sweep", "smooth_on_sheet",
                  "top_k_selective", "stratified_halves", "farthest_point_centers", "LesionLayer",
                  "SelectiveLesion", "ControlLesion", "LesionSites", "SELECTIONS", "SITES"),
    "plan": ("LesionKey", "LesionPlan", "plan_lesions"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'workbench.intervention' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"workbench.intervention.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
