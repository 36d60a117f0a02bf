"""The synthesize stage's config section (``synthesize:`` in the study, ``configs/synthesize/default.yaml``).

The single home of the section's defaults and checks; imports nothing heavy (no torch): the pipeline imports every
stage's schema to validate a config before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.attribution.config import UnitSpec
from workbench.config import ConfigError, bounded, default_list, default_of


@dataclass
class SynthesisPatchesConfig:
    """One patch per category of the topography stage (its largest patch on the sheet; else a disk around the
    unit with the highest selectivity), or one at the sheet's centre when the run has no topography stage."""

    layers: list[str] | None = None          # null = model.topography.layers (needs cortical sheets)
    categories: list[str] = default_list("face", "body")
    radius_fraction: float = bounded(0.15, min=0.0)   # disk radius / sheet side when no patch was detected


@dataclass
class NeuralControlConfig:
    """Neural control of recorded V4 sites: two ridge readouts of ``layer`` fitted on disjoint halves of the
    data set's images; readout A drives the synthesis, readout B (held out) scores it."""

    dataset: str = "cowley_v4_210325"        # a stimulus set and a response set of the same name
    benchmark: str | None = None             # or an encoding benchmark (v4_ridge_<session>): its data set
    layer: str | None = None                 # null = the align stage's best ridge layer for dataset, else conv4
    n_neuroids: int = bounded(3, min=1)      # the most predictable neuroids (held-out r of the split readouts)
    contrast: bool = True                    # also drive the most predictable neuroid against all the others
    second_run: str | None = None            # a finished run whose model also scores the images (its own readout B)
    second_layer: str | None = None          # that model's layer for its readout; null = the same name as layer

    def __post_init__(self) -> None:
        if self.benchmark is not None:
            from workbench.benchmarks import benchmark_dataset

            self.dataset = benchmark_dataset(self.benchmark, "neural_sites.benchmark")


@dataclass
class SynthesizeConfig:
    stimulus_set: str = "kriegeskorte92"     # natural images of unit and patch targets: their budget and rivals
    budget_quantile: float = bounded(0.5, min=0.0, max=1.0)  # L2 budget = this quantile of the natural images' norms
    units: list[UnitSpec] = default_list(UnitSpec("conv4", channel=0), UnitSpec("conv4", channel=1))
    patches: SynthesisPatchesConfig | None = default_of(SynthesisPatchesConfig)   # null: no patch targets
    neural_sites: NeuralControlConfig | None = default_of(NeuralControlConfig)     # null: no neural sites
    param: Literal["pixel", "fourier"] = "fourier"
    steps: int = bounded(256, min=1)
    lr: float = bounded(0.05, min=0.0)
    n_seeds: int = bounded(3, min=1)         # images per target, seeds seed, seed + 1, ...
    diversity: float = bounded(0.0, min=0.0)  # weight of the diversity term between the seeds' images
    frequency_penalty: float = bounded(0.0, min=0.0)
    jitter: float = bounded(2.0, min=0.0)    # pixels
    rotate: float = bounded(5.0, min=0.0)    # degrees
    scale: list[float] = default_list(0.95, 1.05)
    top_natural: int = bounded(3, min=1)     # natural images shown next to the synthesised ones
    seed: int | None = None                  # null = the run's seed

    def __post_init__(self) -> None:
        if self.budget_quantile <= 0:
            raise ConfigError("budget_quantile must be > 0: a budget of 0 allows only the mean image")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be [low, high] with 0 < low <= high, got {self.scale}")
        if not self.units and self.patches is None and self.neural_sites is None:
            raise ConfigError("nothing to synthesise: give units, patches or neural_sites")
