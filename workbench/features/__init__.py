"""Features: layer activations of a model for a stimulus set (batched, cached, optionally projected).

The names below are imported on first use: validating a config imports ``workbench.features.config`` without
pulling in torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Activations": "extract", "extract_activations": "extract",
    "random_projection": "extract", "resolve_layers": "extract", "weights_hash": "extract",
    "Preprocess": "preprocess",
    "extract_sharded": "sharded",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"workbench.features.{_EXPORTS[name]}"), name)
