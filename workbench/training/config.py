"""Schema of the topography stage's section (the top-level ``topography`` key, configs/topography/).

The train stage has no section of its own: it reads ``data``, ``model`` (``workbench.models.config``), ``trainer``
and ``logger``. No torch here: the pipeline imports every schema to validate a config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from workbench.config import ConfigError, bounded, default_of

__all__ = ["TopographyConfig", "DEFAULT_CONTRASTS"]

# contrast (= its target metadata column) -> reference column, or None for every other stimulus
DEFAULT_CONTRASTS: dict[str, str | None] = {"face": None, "body": None, "animate": "inanim"}


@dataclass
class TopographyConfig:
    """Smoothness, category-selectivity maps and patches on the cortical sheets of the run's model."""

    stimulus_set: str = "kriegeskorte92"
    layers: list[str] | str | None = None      # null = the model's cortical-sheet layers (else its conv layers)
    # {target column: reference column or null (= every other stimulus)}: boolean columns of the set's metadata
    contrasts: dict[str, str | None] = default_of(lambda: dict(DEFAULT_CONTRASTS))
    n_bins: int = bounded(10, min=1)                   # distance bins of the smoothness curve
    max_distance_mm: float | None = None               # null = half the sheet
    max_units: int = bounded(4000, min=3)              # random units entering the smoothness curve
    max_pairs: int = bounded(200000, min=1)            # random unit pairs entering the smoothness curve
    selectivity: Literal["t", "dprime"] = "t"          # Welch t or d' of target vs reference
    patch_threshold: float = 4.0                       # on the smoothed map, in units of the selectivity statistic
    patch_smoothing_mm: float = bounded(0.5, min=0.0)
    patch_min_units: int = bounded(20, min=1)
    # Moran's I of each selectivity map (unit pairs closer than this), against maps of shuffled positions: tells "no
    # organisation" from "organised, but no patch passes the threshold"
    morans_radius_mm: float = bounded(0.5, above=0.0)
    morans_shuffles: int = bounded(100, min=1)
    # orientation maps from sine gratings (TDANN; Kaschube et al. 2010): tuning, preference map, pinwheels and their
    # density per column spacing squared, on these layers (null = the first analysed layer; [] = none)
    orientation_layers: list[str] | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.layers, str):
            self.layers = [self.layers]
        if self.layers is not None and not self.layers:
            raise ConfigError("layers is an empty list; name at least one layer, or null for the model's "
                              "cortical-sheet layers")
        if self.max_distance_mm is not None and not (math.isfinite(self.max_distance_mm)
                                                     and self.max_distance_mm > 0):
            raise ConfigError(f"max_distance_mm must be > 0 (or null for half the sheet), got {self.max_distance_mm}")
        if not self.contrasts:
            raise ConfigError("contrasts is empty; name at least one {target column: reference column or null}")

    def stimulus_sets_needed(self) -> list[str]:
        """The selectivity maps read the extract stage's activations of ``stimulus_set`` (extract.stimulus_sets:
        null extracts it)."""
        return [self.stimulus_set]
