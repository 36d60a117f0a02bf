"""RSA: layer RDMs against the brain RDMs of the same images, with noise ceilings and bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.alignment.config import RSAConfig
from workbench.alignment.metrics.base import METRICS, AlignmentMetric, MetricResult, best_layer, require

SCHEME_WORDS = {"both": "stimuli and subjects"}  # bootstrap schemes, as a card says them
UNITS = {"spearman": "Spearman r", "pearson": "Pearson r", "kendall_tau_a": "Kendall tau-a",
         "cosine": "cosine similarity", "whitened_cosine": "whitened cosine", "whitened_pearson": "whitened Pearson r"}


@METRICS.register("rsa", citation=(
    "Schütt, H.H., Kipnis, A.D., Diedrichsen, J., Kriegeskorte, N. (2023). Statistical inference on representational "
    "geometries. eLife 12:e82566.",
    "Nili, H., Wingfield, C., Walther, A., Su, L., Marslen-Wilson, W., Kriegeskorte, N. (2014). A toolbox for "
    "representational similarity analysis. PLoS Comput Biol 10(4):e1003553."),
    description="RDM comparison of each layer with brain RDMs (rsatoolbox definitions), leave-one-subject-out noise "
                "ceiling, bootstrap over stimuli and/or subjects")
class RSAMetric(AlignmentMetric):
    config = RSAConfig

    def stimulus_sets(self) -> list[str]:
        return [self.settings.stimulus_set]

    def check(self) -> None:
        from workbench.data import RDM_SETS, STIMULUS_SETS

        require(STIMULUS_SETS, self.settings.stimulus_set, f"align.settings.{self.name}.stimulus_set")
        require(RDM_SETS, self.settings.rdm_set, f"align.settings.{self.name}.rdm_set")

    def cite_data(self, ctx) -> None:
        from workbench.data import RDM_SETS, STIMULUS_SETS

        ctx.cite(STIMULUS_SETS, self.settings.stimulus_set)
        ctx.cite(RDM_SETS, self.settings.rdm_set)

    def score(self, ctx, layers: list[str]) -> MetricResult:
        import xarray as xr

        from workbench.alignment.rsa import compute_rdm

        s = self.settings
        acts = ctx.run.load_activations(s.stimulus_set)
        ids = [str(i) for i in acts.stimulus_ids]
        rdms = np.stack([compute_rdm(acts[layer], s.metric, device=ctx.device, name=f"layer {layer!r}")
                         for layer in layers])
        model_rdms = xr.DataArray(rdms, dims=("layer", "stimulus", "stimulus_b"),
                                  coords={"layer": layers, "stimulus": ids, "stimulus_b": ids})
        section: dict[str, Any] = {"metric": s.metric, "stimulus_set": s.stimulus_set, "rdm_set": s.rdm_set}
        data_rdms = {}
        for target in s.targets:
            section[target], data_rdms[target] = self._score_target(ctx, model_rdms, target, layers)
        return MetricResult(section, {"model_rdms": model_rdms, "data_rdms": data_rdms})

    def _score_target(self, ctx, model_rdms, target: str, layers: list[str]) -> tuple[dict[str, Any], Any]:
        from workbench.alignment.inference import bootstrap_rsa
        from workbench.alignment.rsa import subject_stack
        from workbench.data import load_rdms

        s = self.settings
        data = subject_stack(load_rdms(s.rdm_set, region=target))
        ids = [str(i) for i in model_rdms.coords["stimulus"].values]
        missing = sorted(set(ids) - {str(i) for i in data.coords["stimulus"].values})
        if missing:
            raise ValueError(f"RDM set {s.rdm_set!r} ({target}) has no RDM entries for stimuli {missing[:3]} of "
                             f"stimulus set {s.stimulus_set!r}; pair an RDM set with the images it was recorded on")
        data = data.sel(stimulus=ids, stimulus_b=ids)  # the layer RDMs' stimulus order
        n_subjects = data.sizes["subject"]
        res = bootstrap_rsa(model_rdms, data, method=s.method, n_bootstrap=s.n_bootstrap,
                            scheme=s.scheme if n_subjects > 1 else "stimuli", seed=ctx.seed, model_names=layers,
                            device=ctx.device)
        section = res.to_dict(s.ci_level)
        best = best_layer({layer: float(v) for layer, v in zip(layers, res.scores)})
        # keep metrics.json readable: differences of neighbouring layers and of every layer with the best one
        keep = {f"{a} - {b}" for a, b in zip(layers[:-1], layers[1:])} | \
               {f"{a} - {b}" for a in layers for b in layers if best in (a, b)}
        section["differences"] = {k: v for k, v in section["differences"].items() if k in keep}
        section["n_subjects"] = n_subjects
        section["best_layer"] = best
        if n_subjects < 2:
            section["noise_ceiling"] = None  # one subject: no leave-one-subject-out lower bound
        return section, data

    def split_scores(self, result: MetricResult, layers: list[str], fraction: float, seed: int):
        """Mean over subjects of the RDM comparison (the metric's method) on the select / held-out stimuli."""
        from workbench.alignment.metrics.base import SplitScores, split_stimuli
        from workbench.alignment.rsa import compare_rdms

        model_rdms = np.asarray(result.figure_data["model_rdms"].values)
        select, test = split_stimuli(model_rdms.shape[-1], fraction, seed)
        out = {}
        for target, data in result.figure_data["data_rdms"].items():
            data = np.asarray(data.values)
            scores = [{layer: float(np.mean(compare_rdms(model_rdms[i][np.ix_(idx, idx)][None],
                                                         data[:, idx][:, :, idx], self.settings.method)))
                       for i, layer in enumerate(layers)} for idx in (select, test)]
            out[target] = SplitScores(scores[0], scores[1], len(select), len(test))
        return out

    def _ceiling(self, target_section: dict[str, Any]) -> list[float] | None:
        nc = target_section["noise_ceiling"]
        return None if nc is None else [nc["lower"], nc["upper"]]

    def summary(self, result: MetricResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target in self.settings.targets:
            sec = result.section[target]
            out[f"best_{target}_layer"] = sec["best_layer"]
            out[f"best_{target}_score"] = sec["scores"][sec["best_layer"]]["score"]
            if sec["noise_ceiling"] is not None:
                out[f"{target}_noise_ceiling"] = self._ceiling(sec)
        return out

    def headline(self, ctx, result: MetricResult) -> list[dict[str, Any]]:
        out = []
        for target in self.settings.targets:
            sec = result.section[target]
            layer = sec["best_layer"]
            # the card names its data and how its interval and ceiling were made, so no number reads out of context
            details: dict[str, Any] = {"layer": layer, "data": f"{self.settings.rdm_set} {target}, "
                                       f"{sec['n_subjects']} subject(s)",
                                       "ci_method": f"{100 * sec['ci_level']:.0f}% bootstrap over "
                                       f"{SCHEME_WORDS.get(sec['scheme'], sec['scheme'])}"}
            if sec["noise_ceiling"] is not None:
                details["noise_ceiling"] = self._ceiling(sec)
                details["ceiling_convention"] = "leave-one-subject-out lower, all-subject upper bound"
            out.append(ctx.headline(f"best_{target}", sec["scores"][layer]["score"],
                                    f"{target} RSA (best layer, post hoc)", f"{self.name}.{target}.scores.{layer}.score", unit=UNITS[sec["method"]],
                                    **details))
        return out

    def layer_profile(self, result: MetricResult, layers: list[str]):
        from workbench.alignment.plots import LayerProfile, ProfileSeries

        series = []
        for target in self.settings.targets:
            sec = result.section[target]
            ceiling = self._ceiling(sec)
            series.append(ProfileSeries(
                f"{target} ({sec['scheme']} bootstrap, {100 * sec['ci_level']:.0f}% CI)",
                [sec["scores"][layer]["score"] for layer in layers],
                [sec["scores"][layer]["ci"] for layer in layers],
                tuple(ceiling) if ceiling else None, f"{target} noise ceiling"))
        return LayerProfile("RSA layer profile", f"RDM correlation ({self.settings.method})", series)

    def figures(self, result: MetricResult, layers: list[str]) -> dict[str, Any]:
        """align_rdm_panels: first, best and last layer RDMs beside the first target's (mean over subjects);
        align_<name>_<target>_differences: per target, the bootstrap layer differences as a heatmap."""
        return {**self._rdm_panels(result, layers), **self._difference_heatmaps(result, layers)}

    def _difference_heatmaps(self, result: MetricResult, layers: list[str]) -> dict[str, Any]:
        from workbench.alignment.plots import layer_differences

        out = {}
        for target in self.settings.targets:
            sec = result.section[target]
            title = (f"{target}: RSA layer differences (bootstrap over "
                     f"{SCHEME_WORDS.get(sec['scheme'], sec['scheme'])})")
            out[f"align_{self.name}_{target}_differences"] = layer_differences(
                layers, sec["differences"], title, UNITS[sec["method"]], sec["ci_level"])
        return out

    def _rdm_panels(self, result: MetricResult, layers: list[str]) -> dict[str, Any]:
        from workbench.alignment.plots import rdm_panels

        target = self.settings.targets[0]
        best = layers.index(result.section[target]["best_layer"])
        show = sorted({0, best, len(layers) - 1})
        model_rdms = result.figure_data["model_rdms"].values
        data = result.figure_data["data_rdms"][target]
        mats = [model_rdms[i] for i in show] + [data.mean("subject").values]
        titles = [f"{layers[i]}{' (best)' if i == best else ''}" for i in show] + [f"{target} (mean of subjects)"]
        # the built-in metric keeps its stable name; each benchmark / second RSA metric draws its own
        name = "align_rdm_panels" if self.name == "rsa" else f"align_{self.name}_rdm_panels"
        return {name: rdm_panels(mats, titles, "RDMs (percentile of dissimilarity)",
                                 self._categories(result.figure_data["model_rdms"]))}

    def _categories(self, model_rdms) -> list[str] | None:
        """The stimulus set's ``category`` per RDM row (category boundaries on the panels), if it has one."""
        from workbench.data import load_stimuli

        metadata = load_stimuli(self.settings.stimulus_set).metadata.set_index("stimulus_id")
        if "category" not in metadata:
            return None
        return [str(metadata.at[str(i), "category"]) for i in model_rdms.coords["stimulus"].values]
