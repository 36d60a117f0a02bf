"""Training: topographic losses, the Lightning module, and the train / topography stages (``stage.py``; their
figures in ``plots.py``; the topography stage's config schema in ``config.py``).

The names below are imported on first use: validating a config imports ``workbench.training.config`` without
pulling in torch and Lightning."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LOSSES": "losses", "SpatialCorrelationLoss": "losses", "WeightSmoothnessLoss": "losses",
    "TopographyObjective": "losses", "parse_topography": "losses", "pearson_rows": "losses",
    "sample_neighbourhoods": "losses", "spatial_correlation_loss": "losses", "weight_sheet": "losses",
    "TopographicModule": "module",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"workbench.training.{_EXPORTS[name]}"), name)
