"""Features: layer activations of a model for a stimulus set (batched, cached, optionally projected)."""

from workbench.features.extract import (Activations, extract_activations, load_run_activations, random_projection,
                                        resolve_layers, run_activations_path, weights_hash)
from workbench.features.preprocess import Preprocess

__all__ = ["Activations", "Preprocess", "extract_activations", "load_run_activations", "random_projection",
           "resolve_layers", "run_activations_path", "weights_hash"]
