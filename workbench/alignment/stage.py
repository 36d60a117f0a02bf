"""The align stage: score every chosen layer against human/monkey IT RDMs (RSA) and V4 recordings (encoding).

Reads ``cfg["align"]`` (defaults in brackets):

    layers: null                     # null = every layer the extract stage wrote
    rsa:
      targets: [hIT, mIT]            # kriegeskorte2008 regions
      metric: correlation            # compute_rdm metric for the layer RDMs
      method: spearman               # compare_rdms method
      n_bootstrap: 1000
      scheme: both                   # stimuli | subjects | both (targets with one subject use stimuli)
      ci_level: 0.95
    regression:
      sessions: ["201025", "210325"]
      method: ridge                  # ridge | pls
      alphas: null                   # null = workbench.alignment.regression.DEFAULT_ALPHAS
      n_folds: 5
      standardize: true              # z-score units on the training data (folded into the saved readouts)
      n_components: 25               # PLS
      ceiling_splits: 100            # split-half splits for sessions with trial data

Writes readouts to ``cache/readouts/cowley_v4_<session>/<layer>.npz`` (coef (n_neuroids, n_units), intercept
(n_neuroids,), neuroid_ids, alpha, cv_r) mapping the layer's features as extracted to predicted responses.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workbench.alignment.ceiling import ceiled_scores, split_half_ceiling
from workbench.alignment.inference import NILI_CITATION, RSATOOLBOX_CITATION, bootstrap_rsa
from workbench.alignment.regression import (BRAINSCORE_CITATION, DEFAULT_ALPHAS, PLSEncoder, RidgeEncoder,
                                            cross_validate_encoding)
from workbench.alignment.rsa import compute_rdm, subject_stack

SPEARMAN_BROWN = "Spearman, C. (1910); Brown, W. (1910). British Journal of Psychology 3."


def _rsa_section(run, cfg_rsa: dict, layers: list[str], seed: int, device) -> tuple[dict, dict]:
    import xarray as xr

    from workbench.data import load_rdms
    from workbench.features import load_run_activations

    acts = load_run_activations(run, "kriegeskorte92")
    ids = [str(s) for s in acts.stimulus_ids]
    metric = cfg_rsa.get("metric", "correlation")
    rdms = np.stack([compute_rdm(acts[layer], metric, device=device) for layer in layers])
    model_rdms = xr.DataArray(rdms, dims=("layer", "stimulus", "stimulus_b"),
                              coords={"layer": layers, "stimulus": ids, "stimulus_b": ids})
    out: dict[str, Any] = {"metric": metric}
    plot: dict[str, Any] = {"model_rdms": model_rdms}
    for target in cfg_rsa.get("targets", ["hIT", "mIT"]):
        data = subject_stack(load_rdms("kriegeskorte2008", region=target))
        data = data.sel(stimulus=ids, stimulus_b=ids)  # the layer RDMs' stimulus order (KeyError if ids differ)
        n_subjects = data.sizes["subject"]
        scheme = cfg_rsa.get("scheme", "both") if n_subjects > 1 else "stimuli"
        res = bootstrap_rsa(model_rdms, data, method=cfg_rsa.get("method", "spearman"),
                            n_bootstrap=int(cfg_rsa.get("n_bootstrap", 1000)), scheme=scheme, seed=seed,
                            model_names=layers, device=device)
        section = res.to_dict(float(cfg_rsa.get("ci_level", 0.95)))
        # keep metrics.json readable: differences of neighbouring layers and of every layer with the best one
        best = layers[int(np.argmax(res.scores))]
        keep = {f"{a} - {b}" for a, b in zip(layers[:-1], layers[1:])} | \
               {f"{a} - {b}" for a in layers for b in layers if best in (a, b)}
        section["differences"] = {k: v for k, v in section["differences"].items() if k in keep}
        section["n_subjects"] = n_subjects
        section["best_layer"] = best
        if n_subjects < 2:
            section["noise_ceiling"] = None  # one subject: no leave-one-subject-out lower bound
        out[target] = section
        plot[target] = (res, data)
    return out, plot


def _responses_for(session: str, ids: list[str], trials: bool = False):
    from workbench.data import load_responses

    resp = load_responses("cowley2023_v4", session=session, trials=trials)
    resp_ids = [str(s) for s in resp.coords["stimulus_id"].values]
    if resp_ids != ids:
        pos = {s: i for i, s in enumerate(resp_ids)}
        missing = [s for s in ids if s not in pos]
        if missing:
            raise ValueError(f"activations for cowley_v4_{session} include stimuli without responses "
                             f"({missing[:3]}...); re-extract with the session's stimulus set")
        resp = resp.isel(presentation=[pos[s] for s in ids])
    return resp


def _regression_section(run, cfg_reg: dict, layers: list[str], seed: int, device) -> tuple[dict, dict]:
    from workbench.features import load_run_activations
    from workbench.utils import atomic_save_npz

    method = cfg_reg.get("method", "ridge")
    alphas = cfg_reg.get("alphas") or DEFAULT_ALPHAS
    n_folds = int(cfg_reg.get("n_folds", 5))
    standardize = bool(cfg_reg.get("standardize", True))
    out: dict[str, Any] = {"method": method, "n_folds": n_folds, "standardize": standardize,
                           "ceiled_score_definitions": {
                               "r2_over_c": "r^2 / c (explained fraction of the explainable variance; "
                                            "Brain-Score 2026 convention)",
                               "r_over_c_sq": "(r / c)^2 (square of the classic ceiled correlation r / c)",
                               "c": "per-neuroid split-half reliability, Spearman-Brown corrected"}}
    plot: dict[str, Any] = {}
    for session in [str(s) for s in cfg_reg.get("sessions", ["201025", "210325"])]:
        acts = load_run_activations(run, f"cowley_v4_{session}")
        ids = [str(s) for s in acts.stimulus_ids]
        resp = _responses_for(session, ids)
        Y = resp.values
        neuroid_ids = np.asarray([str(s) for s in resp.coords["neuroid_id"].values])
        ceiling = None
        try:
            trials = _responses_for(session, ids, trials=True)
            ceiling = split_half_ceiling(trials, int(cfg_reg.get("ceiling_splits", 100)), seed)
        except ValueError:
            pass  # no trial-level data for this session: no ceiling
        sec: dict[str, Any] = {"n_stimuli": int(Y.shape[0]), "n_neuroids": int(Y.shape[1]), "layers": {}}
        if ceiling is not None:
            sec["ceiling_median"] = float(np.median(ceiling))
        best = (None, -np.inf, None)
        for layer in layers:
            X = acts[layer]
            res = cross_validate_encoding(X, Y, method, n_folds, seed, alphas=alphas, standardize=standardize,
                                          n_components=int(cfg_reg.get("n_components", 25)), device=device)
            enc = (RidgeEncoder(alphas, standardize=standardize, device=device) if method == "ridge"
                   else PLSEncoder(int(cfg_reg.get("n_components", 25)))).fit(X, Y)
            alpha = getattr(enc, "alpha_", np.nan)
            atomic_save_npz(run.cache / "readouts" / f"cowley_v4_{session}" / f"{layer}.npz",
                            coef=np.asarray(enc.coef_, dtype=np.float32).reshape(Y.shape[1], -1),
                            intercept=np.asarray(enc.intercept_, dtype=np.float32).reshape(-1),
                            neuroid_ids=neuroid_ids, alpha=np.float64(alpha), cv_r=res.r.astype(np.float32))
            entry = {"median_r": res.score, "r_per_neuroid": [float(v) for v in res.r],
                     "alphas_per_fold": res.alphas, "alpha_full_fit": float(alpha)}
            if ceiling is not None:
                cs = ceiled_scores(res.r, ceiling)
                entry.update({k: v for k, v in cs.items() if k.endswith("median")})
            sec["layers"][layer] = entry
            if res.score > best[1]:
                best = (layer, res.score, res)
        sec["best_layer"] = best[0]
        out[session] = sec
        plot[session] = {"Y": Y, "best": best, "ceiling": ceiling, "neuroid_ids": neuroid_ids}
    return out, plot


# ---------------------------------------------------------------------------------------------------------------
def _figures(run, layers: list[str], rsa_plot: dict, rsa: dict, reg_plot: dict, reg: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    x = np.arange(len(layers))
    targets = [t for t in rsa if t != "metric"]
    n_panels = 1 + bool(reg_plot)
    fig, axes = plt.subplots(1, n_panels, figsize=(6 * n_panels, 4), squeeze=False)
    ax = axes[0, 0]
    for k, t in enumerate(targets):
        res, _ = rsa_plot[t]
        ci = res.ci(rsa[t]["ci_level"])
        ax.errorbar(x + 0.08 * k, res.scores, yerr=[res.scores - ci[:, 0], ci[:, 1] - res.scores], marker="o",
                    capsize=3, label=f"{t} ({res.scheme} bootstrap, {100 * rsa[t]['ci_level']:.0f}% CI)")
        if rsa[t]["noise_ceiling"] is not None:
            lo, hi = res.noise_ceiling
            ax.axhspan(lo, hi, color=f"C{k}", alpha=0.15, label=f"{t} noise ceiling")
    ax.set_xticks(x, layers, rotation=45, ha="right")
    ax.set_ylabel(f"RDM correlation ({rsa[targets[0]]['method'] if targets else ''})")
    ax.set_title("RSA layer profile")
    ax.legend(fontsize=7)
    if reg_plot:
        ax = axes[0, 1]
        for k, (session, p) in enumerate(reg_plot.items()):
            ax.plot(x, [reg[session]["layers"][l]["median_r"] for l in layers], marker="o", color=f"C{k}",
                    label=f"V4 {session}: median cv r")
            if p["ceiling"] is not None:
                ax.axhline(float(np.median(np.sqrt(np.clip(p["ceiling"], 0, None)))), color=f"C{k}", ls="--",
                           label=f"V4 {session}: median sqrt(split-half ceiling)")
        ax.set_xticks(x, layers, rotation=45, ha="right")
        ax.set_ylabel("Pearson r (held-out)")
        ax.set_title("Encoding layer profile")
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "align_layer_profile")
    plt.close(fig)

    if "hIT" in rsa_plot:
        res, data = rsa_plot["hIT"]
        best = int(np.argmax(res.scores))
        show = sorted({0, best, len(layers) - 1})
        fig, axes = plt.subplots(1, len(show) + 1, figsize=(3.2 * (len(show) + 1), 3.2))
        mats = [rsa_plot["model_rdms"].values[i] for i in show] + [data.mean("subject").values]
        titles = [f"{layers[i]}{' (best)' if i == best else ''}" for i in show] + ["hIT (mean of subjects)"]
        n = mats[0].shape[0]
        iu = np.triu_indices(n, 1)
        for ax, mat, title in zip(axes, mats, titles):
            ranked = np.zeros((n, n))
            ranked[iu] = rankdata(mat[iu]) / len(iu[0])  # percentile ranks: comparable colour scales
            ranked = ranked + ranked.T
            ax.imshow(ranked, cmap="viridis", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle("RDMs (percentile of dissimilarity)")
        fig.tight_layout()
        run.save_figure(fig, "align_rdm_panels")
        plt.close(fig)

    if reg_plot:
        session, p = next(iter(reg_plot.items()))
        layer, _, res = p["best"]
        top = np.argsort(-np.nan_to_num(res.r, nan=-2))[:4]
        fig, axes = plt.subplots(1, len(top), figsize=(3.2 * len(top), 3.2), squeeze=False)
        for ax, j in zip(axes[0], top):
            ax.scatter(res.predictions[:, j], p["Y"][:, j], s=4, alpha=0.5)
            lo = min(res.predictions[:, j].min(), p["Y"][:, j].min())
            hi = max(res.predictions[:, j].max(), p["Y"][:, j].max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{p['neuroid_ids'][j]}: r = {res.r[j]:.2f}", fontsize=9)
            ax.set_xlabel("predicted (held-out)")
            ax.set_ylabel("actual (spikes / 100 ms)")
        fig.suptitle(f"V4 {session}, layer {layer}: best neuroids")
        fig.tight_layout()
        run.save_figure(fig, "align_v4_predictions")
        plt.close(fig)


DEFAULTS: dict[str, Any] = {
    "layers": None,
    "rsa": {"targets": ["hIT", "mIT"], "metric": "correlation", "method": "spearman", "n_bootstrap": 1000,
            "scheme": "both", "ci_level": 0.95},
    "regression": {"sessions": ["201025", "210325"], "method": "ridge", "alphas": None, "n_folds": 5,
                   "standardize": True, "n_components": 25, "ceiling_splits": 100},
}


def merge_config(section: dict | None) -> dict:
    """cfg["align"] over DEFAULTS; an unknown key is an error (a typo would otherwise be silently ignored)."""
    section = dict(section or {})
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} in align config; valid keys: {sorted(DEFAULTS)}")
    out = {"layers": section.get("layers")}
    for key in ("rsa", "regression"):
        sub = dict(section.get(key) or {})
        bad = sorted(set(sub) - set(DEFAULTS[key]))
        if bad:
            raise KeyError(f"unknown key(s) {bad} in align.{key}; valid keys: {sorted(DEFAULTS[key])}")
        out[key] = {**DEFAULTS[key], **sub}
    return out


def align_stage(run, cfg: dict) -> dict:
    from workbench.features import load_run_activations

    start = time.perf_counter()
    al = merge_config(cfg.get("align"))
    seed = int(cfg.get("seed", 0))
    from workbench.utils import get_device

    device = get_device(cfg.get("device"))  # "auto" -> CUDA when present
    available = list(load_run_activations(run, "kriegeskorte92"))
    layers = list(al.get("layers") or available)
    missing = [l for l in layers if l not in available]
    if missing:
        raise KeyError(f"align.layers {missing} were not extracted; extracted layers: {available}")
    rsa_cfg = al.get("rsa") or {}
    reg_cfg = al.get("regression") or {}
    rsa, rsa_plot = _rsa_section(run, rsa_cfg, layers, seed, device) if rsa_cfg.get("targets", True) else ({}, {})
    reg, reg_plot = (_regression_section(run, reg_cfg, layers, seed, device) if reg_cfg.get("sessions", True)
                     else ({}, {}))
    _figures(run, layers, rsa_plot, rsa, reg_plot, reg)
    summary: dict[str, Any] = {}
    for t in [k for k in rsa if k != "metric"]:
        b = rsa[t]["best_layer"]
        summary[f"best_{t}_layer"] = b
        summary[f"best_{t}_score"] = rsa[t]["scores"][b]["score"]
        if rsa[t]["noise_ceiling"] is not None:
            summary[f"{t}_noise_ceiling"] = [rsa[t]["noise_ceiling"]["lower"], rsa[t]["noise_ceiling"]["upper"]]
    for s, sec in reg.items():
        if isinstance(sec, dict) and "best_layer" in sec:
            summary[f"best_v4_{s}_layer"] = sec["best_layer"]
            summary[f"best_v4_{s}_median_r"] = sec["layers"][sec["best_layer"]]["median_r"]
    return {"layers": layers, "rsa": rsa, "regression": reg, "summary": summary,
            "seconds": round(time.perf_counter() - start, 2),
            "references": [RSATOOLBOX_CITATION, NILI_CITATION, BRAINSCORE_CITATION, SPEARMAN_BROWN]}
