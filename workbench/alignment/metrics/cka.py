"""CKA between a layer's activations and the recorded responses to the same images.

Score: CKA (workbench.alignment.cka) of activations (images x units) and mean responses (images x neuroids), with
the kernel (linear | rbf) and HSIC estimator (unbiased | biased) named in the metric's settings (default: linear,
unbiased): how similar the two representational geometries are, without fitting a map.

Ceiling (data sets with trials; linear kernel, unbiased estimator): the CKA a noise-free model would reach against
the recorded mean responses Y. With independent, zero-mean trial noise, the unbiased HSIC of the kernels of two halves
of the trials (A, B: disjoint repeats of every image) is an unbiased estimate of the HSIC of the noise-free responses
S, because the estimator uses off-diagonal kernel entries only and E[A_i . B_j] = S_i . S_j, whatever the sizes of
the halves (so every repeat is used). A perfect model X = S scores
HSIC(S, Y) / sqrt(HSIC(S, S) HSIC(Y, Y)) ~ sqrt(HSIC(S, S) / HSIC(Y, Y)), so

    ceiling = sqrt(mean over splits of HSIC_u(A, B) / HSIC_u(Y, Y)),

and each layer's ``ceiled`` score is CKA / ceiling. The halves split the repeats of each image for all neuroids at
once (simultaneously recorded neuroids share trial noise; splitting them separately would correlate the halves).
The biased estimator's diagonal terms hold the trial noise and an RBF kernel is not linear in the responses, so
neither has this ceiling: their sections report ``ceiling: null``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.alignment.config import CKAConfig
from workbench.alignment.metrics.base import METRICS, MetricResult, RecordingsMetric, best_layer, recording

CEILING_DEFINITION = ("sqrt(HSIC_u(A, B) / HSIC_u(Y, Y)): expected linear CKA of noise-free responses with the "
                      "recorded mean responses Y, from the unbiased HSIC of split halves A, B of the trials (mean "
                      "over splits); ceiled = CKA / ceiling")
NO_CEILING = ("none: the split-half ceiling is defined for the linear kernel with the unbiased estimator only "
              "(workbench.alignment.metrics.cka)")


def split_half_hsic(trials: Any, n_splits: int = 100, seed: int = 0, device=None) -> float:
    """Mean over random splits of HSIC_u(A A^T, B B^T), A and B the mean responses of disjoint halves of the repeats
    of each image (the same halves for every neuroid), each centred per neuroid. trials: images x neuroids x repeats,
    NaN = not shown."""
    from workbench.alignment.cka import centred_features, hsic, linear_gram

    data = np.asarray(getattr(trials, "values", trials), dtype=np.float64)
    valid = ~np.isnan(data)
    if data.ndim != 3 or not (valid == valid[:, :1, :]).all():
        raise ValueError("the CKA split-half ceiling needs trials (images x neuroids x repeats) whose repeats are "
                         "shown to every neuroid (NaN for one neuroid means NaN for all of that image's neuroids)")
    shown = valid[:, 0, :]
    if (shown.sum(1) < 2).any():
        raise ValueError("the CKA split-half ceiling needs >= 2 repeats of every image")
    rng = np.random.default_rng(seed)
    filled = np.where(valid, data, 0.0)
    values = []
    for _ in range(n_splits):
        rank = np.argsort(np.argsort(np.where(shown, rng.random(shown.shape), np.inf), axis=1), axis=1)
        first = shown & (rank < shown.sum(1, keepdims=True) // 2)
        second = shown & ~first
        A, B = (centred_features((filled * m[:, None, :]).sum(2) / m.sum(1, keepdims=True), name, device)
                for m, name in ((first, "the first half"), (second, "the second half")))
        values.append(float(hsic(linear_gram(A), linear_gram(B), "unbiased")))
    return float(np.mean(values))


def cka_ceiling(trials: Any, responses: Any, n_splits: int = 100, seed: int = 0, device=None) -> dict[str, float]:
    """{"ceiling", "signal_hsic", "response_hsic"} for mean responses ``responses`` and their ``trials`` (linear
    kernel, unbiased estimator)."""
    from workbench.alignment.cka import centred_features, hsic, linear_gram

    Y = centred_features(responses, "responses", device)
    response_hsic = float(hsic(linear_gram(Y), linear_gram(Y), "unbiased"))
    signal_hsic = split_half_hsic(trials, n_splits, seed, device)
    return {"ceiling": float(np.sqrt(max(signal_hsic, 0.0) / response_hsic)), "signal_hsic": signal_hsic,
            "response_hsic": response_hsic}


@METRICS.register("cka", citation=(
    "Kornblith, S., Norouzi, M., Lee, H., Hinton, G. (2019). Similarity of neural network representations "
    "revisited. ICML.",
    "Song, L., Smola, A., Gretton, A., Bedo, J., Borgwardt, K. (2012). Feature selection via dependence maximization. "
    "JMLR 13, 1393-1434."),
    description="CKA of layer activations and recorded responses (linear or RBF kernel, unbiased or biased HSIC); "
                "split-half HSIC ceiling for linear unbiased CKA")
class CKAMetric(RecordingsMetric):
    config = CKAConfig

    def score(self, ctx, layers: list[str]) -> MetricResult:
        settings = self.settings
        section: dict[str, Any] = {"kernel": settings.kernel, "estimator": settings.estimator,
                                   "ceiling_definition": CEILING_DEFINITION if self.has_ceiling() else NO_CEILING}
        if settings.kernel == "rbf":
            section["rbf_bandwidth"] = settings.rbf_bandwidth
        for dataset in self.settings.datasets:
            section[dataset] = self._score_dataset(ctx, dataset, layers)
        return MetricResult(section)

    def has_ceiling(self) -> bool:
        return self.settings.kernel == "linear" and self.settings.estimator == "unbiased"

    def _score_dataset(self, ctx, dataset: str, layers: list[str]) -> dict[str, Any]:
        from workbench.alignment.cka import cka

        acts = ctx.run.load_activations(dataset)
        ids = [str(s) for s in acts.stimulus_ids]
        responses = recording(dataset, ids)
        settings = self.settings
        scores = {layer: cka(acts[layer], responses.values, settings.kernel, settings.estimator,
                             settings.rbf_bandwidth, device=ctx.device) for layer in layers}
        sec: dict[str, Any] = {"n_stimuli": int(responses.shape[0]), "n_neuroids": int(responses.shape[1]),
                               "scores": scores, "best_layer": best_layer(scores), "ceiling": None}
        trials = recording(dataset, ids, trials=True) if self.has_ceiling() else None
        if trials is not None:
            ceiling = cka_ceiling(trials, responses, self.settings.ceiling_splits, ctx.seed, ctx.device)
            sec["ceiling"] = ceiling["ceiling"]
            sec["ceiling_hsic"] = {k: v for k, v in ceiling.items() if k != "ceiling"}
            sec["ceiled"] = {layer: v / ceiling["ceiling"] if ceiling["ceiling"] > 0 else None
                             for layer, v in scores.items()}
        return sec

    def summary(self, result: MetricResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dataset in self.settings.datasets:
            sec = result.section[dataset]
            out[f"best_{self.name}_{dataset}_layer"] = sec["best_layer"]
            out[f"best_{self.name}_{dataset}_score"] = sec["scores"][sec["best_layer"]]
        return out

    def headline(self, ctx, result: MetricResult) -> list[dict[str, Any]]:
        out = []
        for dataset in self.settings.datasets:
            sec = result.section[dataset]
            layer = sec["best_layer"]
            # dataset: the report boxes the cards of each data set (V4 session) apart from the others'
            details = {"layer": layer, "dataset": dataset}
            if sec["ceiling"] is not None:
                details["ceiling"] = sec["ceiling"]
            out.append(ctx.headline(f"{self.name}_{dataset}", sec["scores"][layer], f"{dataset} CKA (best layer)",
                                    f"{self.name}.{dataset}.scores.{layer}", unit=self.unit(), **details))
        return out

    def layer_profile(self, result: MetricResult, layers: list[str]):
        from workbench.alignment.plots import LayerProfile, ProfileSeries

        series = [ProfileSeries(f"{dataset}: {self.settings.kernel} CKA",
                                [result.section[dataset]["scores"][l] for l in layers],
                                ceiling=result.section[dataset]["ceiling"], ceiling_label=f"{dataset}: ceiling")
                  for dataset in self.settings.datasets]
        return LayerProfile("CKA layer profile", self.unit(), series)

    def unit(self) -> str:
        return f"{self.settings.kernel} CKA ({self.settings.estimator})"
