"""Recipe: a new stage, from outside the package (CONTRIBUTING.md, "Adding a stage and a study").

Effective dimensionality (participation ratio of the activation covariance spectrum) of every extracted layer: a
model property that tracks its alignment with visual cortex (Elmoznino & Bonner 2022).
"""

from dataclasses import dataclass

import numpy as np

from workbench.config import bounded
from workbench.stages import stage

CITATION = ("Elmoznino, E., & Bonner, M. F. (2022). High-performing neural network models of visual cortex benefit "
            "from high latent dimensionality. bioRxiv 2022.07.13.499969.")


@dataclass
class DimensionalityConfig:
    stimulus_set: str = "kriegeskorte92"     # a set the extract stage wrote
    layers: list[str] | None = None          # null = every extracted layer
    min_stimuli: int = bounded(10, min=2)


def participation_ratio(activations: np.ndarray) -> float:
    """(sum of eigenvalues)^2 / sum of squared eigenvalues of the stimulus-by-stimulus centred Gram spectrum."""
    centred = activations - activations.mean(0, keepdims=True)
    eig = np.clip(np.linalg.eigvalsh(centred @ centred.T), 0, None)
    return float(eig.sum() ** 2 / np.sum(eig ** 2)) if eig.sum() > 0 else float("nan")


@stage("dimensionality", config=DimensionalityConfig, after="extract", title="Effective dimensionality",
       lede="Participation ratio of each layer's activation spectrum (Elmoznino & Bonner 2022).", citation=CITATION)
def dimensionality_stage(ctx) -> dict:
    acts = ctx.run.load_activations(ctx.config.stimulus_set)
    if len(acts.stimulus_ids) < ctx.config.min_stimuli:
        raise ValueError(f"{ctx.config.stimulus_set} has {len(acts.stimulus_ids)} stimuli; the participation ratio "
                         f"needs at least dimensionality.min_stimuli={ctx.config.min_stimuli}")
    layers = ctx.config.layers or list(acts)
    ratios = {layer: participation_ratio(acts[layer].astype(np.float64)) for layer in layers}
    top = max(ratios, key=lambda k: ratios[k])
    return {"stimulus_set": ctx.config.stimulus_set, "participation_ratio": ratios,
            "headline": [ctx.headline("max_participation_ratio", ratios[top], "Effective dimensionality (max)",
                                      f"participation_ratio.{top}", unit="participation ratio", layer=top)]}
