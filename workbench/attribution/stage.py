"""The attribute stage: maps for classes, units, cortical patches and V4 predictions, and how far to trust them.

Reads ``cfg["attribute"]`` (configs/attribute/default.yaml documents every key), the run's model
(``model_for_run``), the stimulus sets with the model's preprocessing, and the alignment readouts in
``cache/readouts/cowley_v4_<session>/<layer>.npz`` when present (else the neural-site target is skipped and the
metrics say why). Writes figures ``attribute_overlays_92``, ``attribute_overlays_v4``, ``attribute_checks``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.attribution.checks import (
    REFERENCES, completeness, deletion_insertion, method_agreement, model_randomisation,
)
from workbench.attribution.methods import METHODS, Attribution, _method_class
from workbench.attribution.targets import ClassTarget, NeuralSiteTarget, PatchTarget, Target, UnitTarget

DEFAULTS: dict[str, Any] = {
    "methods": ["saliency", "integrated_gradients", "gradient_shap", "deeplift", "shap_gradient", "shap_deep"],
    "stimulus_sets": ["kriegeskorte92", "cowley_v4_201025"],
    "n_images": 8,
    "internal_batch_size": 64,
    "targets": {"class": "predicted", "units": [], "patches": {"layers": None, "radius_fraction": 0.15},
                "neural_sites": {"session": "201025", "layers": None, "max_layers": 1, "neuroids": [0, 1]}},
    "ig": {"n_steps": 64, "integration": "gausslegendre", "noise_tunnel": None},
    "smoothgrad": {"nt_samples": 16, "stdevs": 0.15},
    "shap": {"n_samples": 64, "n_background": 16, "seed": 0},
    "checks": {"completeness": True, "randomisation": True, "granularity": "children", "faithfulness": True,
               "faithfulness_steps": 20, "n_random_orders": 3, "fill": 0.0, "agreement": True, "n_images": 4},
    "overlay_images": 4,
}


def _merge(defaults: dict, given: dict | None, where: str = "attribute") -> dict:
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise KeyError(f"unknown key(s) {sorted(unknown)} in cfg[{where!r}]; valid keys: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _merge(defaults[k], v, f"{where}.{k}") if isinstance(defaults[k], dict) and isinstance(v, dict) \
            and k not in ("noise_tunnel",) and defaults[k] else v
    return out


def method_options(name: str, cfg: dict) -> dict[str, Any]:
    """Constructor options of method ``name`` from the stage config."""
    opts: dict[str, Any] = {"internal_batch_size": int(cfg["internal_batch_size"])}
    if name == "integrated_gradients":
        opts.update(n_steps=int(cfg["ig"]["n_steps"]), integration=cfg["ig"]["integration"], noise_tunnel=cfg["ig"]["noise_tunnel"])
    elif name == "smoothgrad":
        opts.update(nt_samples=int(cfg["smoothgrad"]["nt_samples"]), stdevs=float(cfg["smoothgrad"]["stdevs"]))
    elif name in ("gradient_shap", "shap_gradient"):
        opts.update(n_samples=int(cfg["shap"]["n_samples"]), seed=cfg["shap"]["seed"])
    return opts


def _readout_dir(run, session: str) -> Path:
    return Path(run.path) / "cache" / "readouts" / f"cowley_v4_{session}"


def build_targets(model: torch.nn.Module, cfg: dict, run, model_cfg: dict) -> tuple[list[Target], dict[str, str]]:
    """Unit, patch and neural-site targets from the config (the class target is handled per image)."""
    t = cfg["targets"]
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for spec in t.get("units") or []:
        spec = dict(spec)
        if isinstance(spec.get("unit"), list):
            spec["unit"] = tuple(spec["unit"])
        targets.append(UnitTarget(**spec))
    patches = t.get("patches")
    if patches:
        layers = patches.get("layers") or list((model_cfg.get("topography") or {}).get("layers") or [])
        sheets = getattr(model, "cortical_sheets", None) or {}
        for layer in layers:
            if layer not in sheets:
                skipped[f"patch:{layer}"] = f"the model has no cortical sheet for {layer!r}"
                continue
            pos = np.asarray(sheets[layer].positions, dtype=np.float64)
            lo, hi = pos.min(0), pos.max(0)
            radius = float(patches.get("radius_fraction", 0.15)) * float((hi - lo).max())
            targets.append(PatchTarget(layer=layer, centre=tuple(((lo + hi) / 2).tolist()), radius=radius))
        if not layers:
            skipped["patch"] = "no topography layers in cfg['model']['topography']['layers'] and none configured"
    sites = t.get("neural_sites")
    if sites:
        session = str(sites.get("session", "201025"))
        folder = _readout_dir(run, session)
        files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
        if sites.get("layers"):
            files = [folder / f"{layer}.npz" for layer in sites["layers"]]
            missing = [f.name for f in files if not f.is_file()]
            files = [f for f in files if f.is_file()]
            if missing:
                skipped[f"neural_site:{session}"] = f"readouts missing in {folder}: {missing}"
        else:
            order = {name: i for i, name in enumerate(n for n, _ in model.named_modules())}
            files = sorted(files, key=lambda f: order.get(f.stem, len(order)))[: int(sites.get("max_layers", 1))]
        if not files and f"neural_site:{session}" not in skipped:
            skipped[f"neural_site:{session}"] = (f"no fitted readouts in {folder} (run the align stage with a V4 "
                                                 "regression first); the neural-site target was skipped")
        neuroids = sites.get("neuroids", [0])
        for f in files:
            n_neuroids = np.load(f)["coef"].shape[0]
            chosen = list(range(min(int(neuroids), n_neuroids))) if isinstance(neuroids, int) else list(neuroids)
            for i in chosen:
                targets.append(NeuralSiteTarget.from_npz(f, neuroid=i, layer=f.stem))
    return targets, skipped


def _attribute_class(method: str, model, x: torch.Tensor, classes: np.ndarray, baselines, opts: dict) -> Attribution:
    """Per-image class targets (e.g. the predicted class): one call per distinct class, reassembled in order."""
    cls = _method_class(method)
    parts: dict[int, Attribution] = {}
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        parts[int(c)] = cls(model, ClassTarget(int(c)), **opts).attribute(x[idx], baselines, progress=False)
    first = next(iter(parts.values()))
    attributions = np.empty((len(x), *x.shape[1:]), dtype=np.float32)
    outputs = np.empty(len(x))
    base_out = np.empty(len(x)) if first.baseline_outputs is not None else None
    delta = np.empty(len(x)) if first.delta is not None else None
    for c, a in parts.items():
        idx = np.flatnonzero(classes == c)
        attributions[idx], outputs[idx] = a.attributions, a.outputs
        if base_out is not None:
            base_out[idx] = a.baseline_outputs
        if delta is not None:
            delta[idx] = a.delta
    return Attribution(attributions, first.method, {"kind": "class", "layer": None, "label": "class per image",
                                                    "index": classes.tolist()},
                       first.options, outputs, base_out, delta, first.citation, first.device,
                       float(sum(a.seconds for a in parts.values())), first.model_report)


def attribute_stage(run, cfg: dict) -> dict:
    from workbench.data import load_stimuli
    from workbench.features import Preprocess
    from workbench.pipeline import model_for_run
    from workbench.utils import get_device

    acfg = _merge(DEFAULTS, cfg.get("attribute"))
    methods = [m for m in acfg["methods"]]
    for m in methods:
        _method_class(m)  # unknown names fail before any work
    device = get_device(cfg.get("device"))
    seed = int(cfg.get("seed", 0))
    model = model_for_run(run, cfg).eval()
    preprocess = Preprocess.from_config(cfg["model"].get("preprocess"))
    targets, skipped = build_targets(model, acfg, run, cfg["model"])
    section: dict[str, Any] = {"device": str(device), "methods": methods, "skipped": skipped, "stimulus_sets": {},
                               "references": sorted({METHODS[_method_class(m).name].citation for m in methods}
                                                    | set(REFERENCES.values()))}
    rng = np.random.default_rng(seed)
    checks_input = None
    for set_name in acfg["stimulus_sets"]:
        stimuli = load_stimuli(set_name)
        n = min(int(acfg["n_images"]), len(stimuli))
        x = preprocess(stimuli.images[:n])
        # SHAP background: other images of the same set, so the reference is the stimulus distribution.
        rest = np.arange(n, len(stimuli))
        n_bg = min(int(acfg["shap"]["n_background"]), len(rest))
        background = preprocess(stimuli.images[np.sort(rng.choice(rest, n_bg, replace=False))]) if n_bg else x
        with torch.no_grad():
            from workbench.attribution.safety import safe_copy

            logits = safe_copy(model)[0](x)
        predicted = logits.argmax(1).numpy()
        # A neuroid's readout belongs to its recording session's images only.
        site_set = f"cowley_v4_{(acfg['targets'].get('neural_sites') or {}).get('session', '201025')}"
        set_targets = [t for t in targets if not (isinstance(t, NeuralSiteTarget) and site_set != set_name)]
        rows: list[tuple[str, dict[str, Attribution]]] = []
        results: dict[str, Any] = {"n_images": n, "stimulus_ids": [str(s) for s in stimuli.stimulus_ids[:n]],
                                   "predicted_class": predicted.tolist(), "targets": {}}
        class_spec = acfg["targets"].get("class")
        if class_spec not in (None, "predicted") and not isinstance(class_spec, int):
            raise ValueError(f"attribute.targets.class must be 'predicted', a class index or null, got {class_spec!r}")
        image_classes = predicted if class_spec == "predicted" else np.full(n, class_spec if class_spec else 0)
        results["class_target"] = image_classes.tolist() if class_spec is not None else None
        for target in ([None] if class_spec is not None else []) + set_targets:
            label = ("predicted class" if class_spec == "predicted" else f"class {class_spec}") if target is None \
                else target.label
            per_method: dict[str, Attribution] = {}
            for m in methods:
                opts = {**method_options(_method_class(m).name, acfg), "device": str(device)}
                base = background if _method_class(m).baseline_distribution else None
                try:
                    if target is None:
                        a = _attribute_class(m, model, x, image_classes, base, opts)
                    else:
                        a = _method_class(m)(model, target, **opts).attribute(x, base, progress=False)
                except ValueError as e:  # e.g. DeepLift on a model with a reused ReLU: say so, keep going
                    results["targets"].setdefault(label, {})[m] = {"error": str(e)}
                    continue
                per_method[m] = a
                entry = {"seconds": round(a.seconds, 3), "outputs": a.outputs.tolist()}
                if a.delta is not None:
                    entry["completeness"] = completeness(a)
                results["targets"].setdefault(label, {})[m] = entry
            results["targets"].setdefault(label, {})["target"] = (
                {"kind": "class", "label": label} if target is None else target.describe())
            rows.append((label, per_method))
            if target is None and checks_input is None:
                checks_input = (set_name, x, image_classes, background, per_method, label)
        section["stimulus_sets"][set_name] = results
        v4_set = f"cowley_v4_{(acfg['targets'].get('neural_sites') or {}).get('session', '201025')}"
        _save_overlays(run, set_name, v4_set, stimuli, x, preprocess, rows, int(acfg["overlay_images"]))
    if checks_input is not None:
        section["checks"] = run_checks(model, acfg, checks_input, device, seed)
        import matplotlib.pyplot as plt

        fig = _checks_figure(section["checks"])
        run.save_figure(fig, "attribute_checks")
        plt.close(fig)
    section["summary"] = _summary(section)
    return section


def run_checks(model, acfg: dict, checks_input, device, seed: int) -> dict[str, Any]:
    """Completeness, randomisation, deletion/insertion and agreement on the class target of the first set."""
    set_name, x, predicted, background, per_method, label = checks_input
    c = acfg["checks"]
    k = min(int(c["n_images"]), len(x))
    x, predicted = x[:k], predicted[:k]
    out: dict[str, Any] = {"stimulus_set": set_name, "target": label, "n_images": k, "methods": {}}
    for m, full in per_method.items():
        name = _method_class(m).name
        opts = {**method_options(name, acfg), "device": str(device)}
        base = background if _method_class(m).baseline_distribution else None
        entry: dict[str, Any] = {}
        if c["completeness"] and full.delta is not None:
            entry["completeness"] = completeness(full)
        if c["randomisation"]:
            # Randomisation needs one fixed target per call: use each image's predicted class, grouped.
            layers = None
            per_class = []
            for cls_ in np.unique(predicted):
                idx = np.flatnonzero(predicted == cls_)
                res = model_randomisation(model, x[idx], int(cls_), name, baselines=base,
                                          granularity=c["granularity"], seed=seed, progress=False,
                                          method_options=opts)
                layers = res.layers
                per_class.append((idx, res.spearman))
            spearman = np.full((len(layers), k), np.nan)
            for idx, rho in per_class:
                spearman[:, idx] = rho
            entry["randomisation"] = {"layers": layers, "spearman_mean": np.nanmean(spearman, 1).tolist(),
                                      "spearman_per_image": spearman.tolist(),
                                      "spearman_fully_randomised": float(np.nanmean(spearman[-1]))}
        if c["faithfulness"]:
            curves = []
            for cls_ in np.unique(predicted):
                idx = np.flatnonzero(predicted == cls_)
                curves.append((idx, deletion_insertion(model, x[idx], full.attributions[idx], int(cls_),
                                                       n_steps=int(c["faithfulness_steps"]), fill=c["fill"],
                                                       n_random=int(c["n_random_orders"]), seed=seed,
                                                       device=str(device))))
            entry["faithfulness"] = _pool_faithfulness(curves, k)
        out["methods"][m] = entry
    if c["agreement"] and len(per_method) > 1:
        out["agreement"] = method_agreement({m: a.attributions[:k] for m, a in per_method.items()})
    return out


def _pool_faithfulness(curves, k: int) -> dict[str, Any]:
    from workbench.attribution.checks import FaithfulnessResult

    first = curves[0][1]
    arrays = {}
    for field_ in ("deletion", "insertion", "deletion_random", "insertion_random"):
        full = np.empty((k, len(first.fractions)))
        for idx, res in curves:
            full[idx] = getattr(res, field_)
        arrays[field_] = full
    pooled = FaithfulnessResult(first.fractions, **arrays, extra=first.extra)
    summary = pooled.summary()
    summary["fractions"] = first.fractions.tolist()
    summary["deletion_curve_mean"] = arrays["deletion"].mean(0).tolist()
    summary["insertion_curve_mean"] = arrays["insertion"].mean(0).tolist()
    return summary


def _summary(section: dict) -> dict[str, Any]:
    """One number per method and check, for the report table."""
    out: dict[str, Any] = {}
    for m, entry in (section.get("checks", {}).get("methods") or {}).items():
        row = {}
        if "completeness" in entry:
            row["completeness_rel_error_max"] = entry["completeness"]["relative_error_max"]
        if "randomisation" in entry:
            row["randomisation_spearman_final"] = entry["randomisation"]["spearman_fully_randomised"]
            row["randomisation_spearman_top_layer"] = entry["randomisation"]["spearman_mean"][0]
        if "faithfulness" in entry:
            row["deletion_gain"] = entry["faithfulness"]["deletion_gain"]
            row["insertion_gain"] = entry["faithfulness"]["insertion_gain"]
        out[m] = row
    return out


def figure_name(set_name: str, v4_set: str) -> str:
    """attribute_overlays_92 / _v4 for the two sets of the default study, attribute_overlays_<set> otherwise."""
    if set_name == "kriegeskorte92":
        return "attribute_overlays_92"
    if set_name == v4_set:
        return "attribute_overlays_v4"
    return f"attribute_overlays_{set_name}"


def _save_overlays(run, set_name, v4_set, stimuli, x, preprocess, rows, n_show: int) -> None:
    import matplotlib.pyplot as plt

    from workbench.attribution.plots import overlay_grid

    images = preprocess.invert(x).permute(0, 2, 3, 1).numpy()
    n_show = min(n_show, len(x))
    grid = [(i, f"{str(stimuli.stimulus_ids[i])[:14]}\n{label[:28]}", {m: a.attributions[i] for m, a in maps.items()})
            for label, maps in rows if maps for i in range(n_show)]
    if not grid:
        return
    fig = overlay_grid(images, grid, title=f"{set_name}: |attribution| per method and target")
    name = figure_name(set_name, v4_set)
    run.save_figure(fig, name)
    plt.close(fig)


def _checks_figure(checks: dict):
    from workbench.attribution.plots import checks_figure

    return checks_figure(checks)
