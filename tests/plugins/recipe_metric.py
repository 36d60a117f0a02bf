"""Recipe: a new alignment metric, from outside the package (CONTRIBUTING.md, "Adding an alignment metric").

Angular Procrustes distance (Williams et al. 2021): the angle between two representations of the same images after
the best rotation of one onto the other. Both are centred and scaled to unit Frobenius norm; the cosine of the angle
is the nuclear norm of X^T Y (the sum of its singular values), so differing unit counts need no padding. It is a
metric (symmetric, triangle inequality) on representational shapes, unlike CKA or a regression score.

Use it with ``plugins: [recipe_metric]`` and ``align.metrics: [..., procrustes]``,
``align.settings.procrustes.datasets: [<data set>]``.
"""

from dataclasses import dataclass

import numpy as np

from workbench.alignment.metrics import METRICS, MetricResult, RecordingsMetric, recording
from workbench.config import bounded, default_list


@dataclass
class ProcrustesConfig:
    datasets: list[str] = default_list("cowley_v4_210325")   # stimulus set + response set of one name
    dims: int | None = bounded(None, min=1)   # keep the top `dims` principal components of each side; null = all


def _shape(x: np.ndarray, dims: int | None) -> np.ndarray:
    """Centred, optionally reduced to its top principal components, unit Frobenius norm."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    if dims is not None and dims < min(x.shape):
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        x = u[:, :dims] * s[:dims]
    return x / np.linalg.norm(x)


def procrustes_angle(x: np.ndarray, y: np.ndarray, dims: int | None = None) -> float:
    """Angular Procrustes distance in radians: 0 = the same shape up to rotation, pi/2 = orthogonal."""
    a, b = _shape(x, dims), _shape(y, dims)
    similarity = np.linalg.svd(a.T @ b, compute_uv=False).sum()  # nuclear norm: the best rotation's alignment
    return float(np.arccos(np.clip(similarity, -1.0, 1.0)))


@METRICS.register("procrustes", citation=(
    "Williams, A.H., Kunz, E., Kornblith, S., Linderman, S.W. (2021). Generalized shape metrics on neural "
    "representations. NeurIPS 34, 4738-4750."),
    description="angular Procrustes distance between layer activations and recorded responses")
class ProcrustesMetric(RecordingsMetric):
    config = ProcrustesConfig

    def score(self, ctx, layers):
        section = {}
        for dataset in self.settings.datasets:
            acts = ctx.run.load_activations(dataset)
            responses = recording(dataset, [str(s) for s in acts.stimulus_ids]).values
            angles = {layer: procrustes_angle(acts[layer], responses, self.settings.dims) for layer in layers}
            best = min(angles, key=angles.get)
            section[dataset] = {"angle": angles, "similarity": {k: float(np.cos(v)) for k, v in angles.items()},
                                "best_layer": best}
        return MetricResult(section)

    def headline(self, ctx, result):
        return [ctx.headline(f"procrustes_{dataset}", sec["angle"][sec["best_layer"]],
                             f"{dataset} Procrustes angle (best layer)",
                             f"{self.name}.{dataset}.angle.{sec['best_layer']}", unit="radians",
                             layer=sec["best_layer"])
                for dataset, sec in result.section.items()]

    def layer_profile(self, result, layers):
        from workbench.alignment.plots import LayerProfile, ProfileSeries

        return LayerProfile("Procrustes layer profile", "angular distance (radians; lower = more similar)",
                            [ProfileSeries(dataset, [sec["angle"][layer] for layer in layers])
                             for dataset, sec in result.section.items()])
