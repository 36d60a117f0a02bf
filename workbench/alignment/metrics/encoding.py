"""Encoding: cross-validated linear maps from a layer's units to recorded neuroids (ridge, PLS), scored by the
per-neuroid Pearson r on held-out images and, for data sets with trials, against the split-half ceiling.

Both metrics also fit the map on all images and save it as the data set's readout
(``RunDir.save_readout(dataset, layer, ...)``): the attribute stage's neural-site targets read it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from workbench.alignment.config import PLSConfig, RidgeConfig
from workbench.alignment.metrics.base import METRICS, MetricResult, RecordingsMetric, best_layer, recording

BRAINSCORE = ("Schrimpf, M., Kubilius, J., Hong, H., et al. (2018). Brain-Score: which artificial neural network "
              "for object recognition is most brain-like? bioRxiv 407007.")
SPEARMAN_BROWN = "Spearman, C. (1910); Brown, W. (1910). British Journal of Psychology 3."
CEILED_SCORE_DEFINITIONS = {
    "r2_over_c": "r^2 / c (explained fraction of the explainable variance; Brain-Score 2026 convention)",
    "r_over_c_sq": "(r / c)^2 (square of the classic ceiled correlation r / c)",
    "c": "per-neuroid split-half reliability, Spearman-Brown corrected (options: ceiling_options)"}


class EncodingMetric(RecordingsMetric):
    """Shared by ridge and PLS; a subclass names its ``method`` (workbench.alignment.cross_validate_encoding)."""

    method: ClassVar[str]

    def encoder(self, device):
        """The estimator fitted on all images for the saved readout."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Keyword arguments of cross_validate_encoding beyond features, responses, folds and seed."""
        raise NotImplementedError

    def header(self) -> dict[str, Any]:
        return {"method": self.method, "n_folds": self.settings.n_folds, "ceiling_options": self.ceiling_options()}

    def ceiling_options(self) -> dict[str, Any]:
        """Keyword arguments of split_half_ceiling beyond trials and seed (workbench.alignment.ceiling)."""
        return {"n_splits": self.settings.ceiling_splits, "halves": self.settings.ceiling_halves,
                "corrected_to": self.settings.ceiling_corrected_to,
                "spearman_brown_order": self.settings.ceiling_spearman_brown_order}

    def score(self, ctx, layers: list[str]) -> MetricResult:
        section: dict[str, Any] = {**self.header(), "ceiled_score_definitions": CEILED_SCORE_DEFINITIONS}
        figure_data = {}
        for dataset in self.settings.datasets:
            section[dataset], figure_data[dataset] = self._score_dataset(ctx, dataset, layers)
        return MetricResult(section, figure_data)

    def _score_dataset(self, ctx, dataset: str, layers: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        from workbench.alignment.ceiling import split_half_ceiling

        acts = ctx.run.load_activations(dataset)
        ids = [str(s) for s in acts.stimulus_ids]
        responses = recording(dataset, ids)
        trials = recording(dataset, ids, trials=True)
        ceiling = None if trials is None else split_half_ceiling(trials, seed=ctx.seed, **self.ceiling_options())
        Y = responses.values
        neuroid_ids = np.asarray([str(s) for s in responses.coords["neuroid_id"].values])
        sec: dict[str, Any] = {"n_stimuli": int(Y.shape[0]), "n_neuroids": int(Y.shape[1]), "layers": {}}
        if ceiling is not None:
            sec["ceiling_median"] = float(np.median(ceiling))
        fits = {}
        for layer in ctx.progress(layers, f"{self.name} {dataset}"):
            sec["layers"][layer], fits[layer] = self._score_layer(ctx, dataset, layer, acts[layer], Y, ceiling,
                                                                  neuroid_ids)
        sec["best_layer"] = best_layer({layer: fits[layer].score for layer in layers})
        return sec, {"Y": Y, "fit": fits[sec["best_layer"]], "fits": fits, "ceiling": ceiling, "neuroid_ids": neuroid_ids,
                     "region": _region(responses), "unit": responses.attrs.get("units", "")}

    def _score_layer(self, ctx, dataset: str, layer: str, X: np.ndarray, Y: np.ndarray, ceiling, neuroid_ids):
        from workbench.alignment.ceiling import ceiled_scores
        from workbench.alignment.regression import cross_validate_encoding

        res = cross_validate_encoding(X, Y, self.method, self.settings.n_folds, ctx.seed, device=ctx.device,
                                      **self.options())
        encoder = self.encoder(ctx.device).fit(X, Y)
        alpha = getattr(encoder, "alpha_", np.nan)
        if self.settings.readouts:
            ctx.run.save_readout(dataset, layer,
                                 coef=np.asarray(encoder.coef_, dtype=np.float32).reshape(Y.shape[1], -1),
                                 intercept=np.asarray(encoder.intercept_, dtype=np.float32).reshape(-1),
                                 neuroid_ids=neuroid_ids, alpha=np.float64(alpha), cv_r=res.r.astype(np.float32))
        entry = {"median_r": res.score, "r_per_neuroid": [float(v) for v in res.r],
                 "alphas_per_fold": res.alphas, "alpha_full_fit": float(alpha)}
        if ceiling is not None:
            entry.update({k: v for k, v in ceiled_scores(res.r, ceiling).items() if k.endswith("median")})
        return entry, res

    def split_scores(self, result: MetricResult, layers: list[str], fraction: float, seed: int):
        """Median over neuroids of the Pearson r between the out-of-fold predictions and the responses, on the
        select / held-out stimuli (the predictions are those of the cross-validation: each stimulus predicted by a
        map fitted without it)."""
        from workbench.alignment.metrics.base import SplitScores, split_stimuli
        from workbench.alignment.regression import pearson_per_column

        out = {}
        for dataset in self.settings.datasets:
            data = result.figure_data[dataset]
            select, test = split_stimuli(len(data["Y"]), fraction, seed)
            scores = [{layer: float(np.nanmedian(pearson_per_column(data["fits"][layer].predictions[idx],
                                                                    data["Y"][idx]))) for layer in layers}
                      for idx in (select, test)]
            out[dataset] = SplitScores(scores[0], scores[1], len(select), len(test))
        return out

    def summary(self, result: MetricResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dataset in self.settings.datasets:
            sec = result.section[dataset]
            entry = sec["layers"][sec["best_layer"]]
            out[f"best_{self.name}_{dataset}_layer"] = sec["best_layer"]
            out[f"best_{self.name}_{dataset}_median_r"] = entry["median_r"]
            if "r2_over_c_median" in entry:
                out[f"best_{self.name}_{dataset}_r2_over_c"] = entry["r2_over_c_median"]
        return out

    def headline(self, ctx, result: MetricResult) -> list[dict[str, Any]]:
        out = []
        several = len(self.settings.datasets) > 1
        for dataset in self.settings.datasets:
            sec = result.section[dataset]
            layer = sec["best_layer"]
            entry = sec["layers"][layer]
            region = result.figure_data[dataset]["region"]
            label = f"{region} predictivity ({{}}, post-hoc best layer{f', {dataset}' if several else ''})"
            key = f"{self.name}.{dataset}.layers.{layer}"
            if "r2_over_c_median" in entry:
                out.append(ctx.headline(f"{self.name}_{dataset}_ceiled", entry["r2_over_c_median"],
                                        label.format("ceiled"), f"{key}.r2_over_c_median", unit="r²/c", layer=layer,
                                        dataset=dataset, raw_median_r=entry["median_r"],
                                        ceiling_median=sec["ceiling_median"],
                                        ceiling_convention="r²/c per neuroid, c = split-half reliability "
                                                           "(Spearman-Brown), median over neuroids"))
            out.append(ctx.headline(f"{self.name}_{dataset}_median_r", entry["median_r"], label.format("median r"),
                                    f"{key}.median_r", unit="Pearson r (held-out)", layer=layer, dataset=dataset,
                                    method=self.method))
        return out

    def layer_profile(self, result: MetricResult, layers: list[str]):
        from workbench.alignment.plots import LayerProfile, ProfileSeries

        series = []
        for dataset in self.settings.datasets:
            ceiling = result.figure_data[dataset]["ceiling"]
            series.append(ProfileSeries(
                f"{dataset}: median cv r", [result.section[dataset]["layers"][layer]["median_r"] for layer in layers],
                ceiling=None if ceiling is None else float(np.median(np.sqrt(np.clip(ceiling, 0, None)))),
                ceiling_label=f"{dataset}: median sqrt(split-half ceiling)"))
        return LayerProfile(f"Encoding layer profile ({self.method})", "Pearson r (held-out)", series)

    def figures(self, result: MetricResult, layers: list[str]) -> dict[str, Any]:
        """align_<name>_predictions: held-out predictions of the best layer for the first data set's best neuroids;
        align_<name>_ceiled_by_layer: per layer, the spread of the per-neuroid r²/c (data sets with a ceiling)."""
        from workbench.alignment.plots import best_neuroid_predictions, ceiled_by_layer

        dataset = self.settings.datasets[0]
        data = result.figure_data[dataset]
        fit = data["fit"]
        title = f"{dataset}, layer {result.section[dataset]['best_layer']}: best neuroids"
        out = {f"align_{self.name}_predictions": best_neuroid_predictions(fit.predictions, data["Y"], fit.r,
                                                                          data["neuroid_ids"], title,
                                                                          unit=data["unit"])}
        ceiled = self.ceiled_per_layer(result, layers)
        if ceiled:
            out[f"align_{self.name}_ceiled_by_layer"] = ceiled_by_layer(
                layers, ceiled, f"r²/c per neuroid ({self.method})", region=data["region"])
        return out

    def ceiled_per_layer(self, result: MetricResult, layers: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """{data set: {layer: per-neuroid r²/c}} for the data sets with a split-half ceiling (the same r²/c whose
        median the section stores as ``r2_over_c_median``)."""
        from workbench.alignment.ceiling import ceiled_scores

        out = {}
        for dataset in self.settings.datasets:
            data = result.figure_data[dataset]
            if data["ceiling"] is not None:
                out[dataset] = {layer: ceiled_scores(data["fits"][layer].r, data["ceiling"])["r2_over_c"]
                                for layer in layers}
        return out


def _region(responses) -> str:
    """The recorded region (the responses' ``region`` coordinate when it names one region), for labels."""
    if "region" in responses.coords:
        regions = {str(r) for r in np.atleast_1d(responses.coords["region"].values)}
        if len(regions) == 1:
            return regions.pop()
    return "neural"


@METRICS.register("ridge", citation=(BRAINSCORE, SPEARMAN_BROWN),
                  description="cross-validated ridge encoding (GCV-chosen penalty), split-half ceiling")
class RidgeMetric(EncodingMetric):
    config = RidgeConfig
    method = "ridge"

    def options(self) -> dict[str, Any]:
        from workbench.alignment.regression import DEFAULT_ALPHAS

        return {"alphas": self.settings.alphas or DEFAULT_ALPHAS, "standardize": self.settings.standardize}

    def encoder(self, device):
        from workbench.alignment.regression import RidgeEncoder

        return RidgeEncoder(self.options()["alphas"], standardize=self.settings.standardize, device=device)

    def header(self) -> dict[str, Any]:
        return {**super().header(), "standardize": self.settings.standardize}


@METRICS.register("pls", citation=(BRAINSCORE, SPEARMAN_BROWN),
                  description="cross-validated partial least squares encoding (Brain-Score's default), "
                              "split-half ceiling")
class PLSMetric(EncodingMetric):
    config = PLSConfig
    method = "pls"

    def options(self) -> dict[str, Any]:
        return {"n_components": self.settings.n_components}

    def encoder(self, device):
        from workbench.alignment.regression import PLSEncoder

        return PLSEncoder(self.settings.n_components)

    def header(self) -> dict[str, Any]:
        return {**super().header(), "n_components": self.settings.n_components}
