"""The intervene stage: lesion studies on the run's model and its interventional-alignment score.

For one layer (IT-like by default: the model's last topographic layer):

1. Category selectivity (d', target vs reference stimuli) of every unit from one half of the 92 images
   (Kriegeskorte et al. 2008), and class selectivity (one-vs-rest d') from one half of the CIFAR-10 test subset.
2. Lesions, each of a size swept over ``lesion_sizes``: per category the most selective units ("top_k") and the
   disk of the cortical sheet around the category's selectivity peak ("disk_peak"); as controls, ``n_random``
   size-matched random unit sets and random disks. Effects: per-class accuracy on the other half of the CIFAR-10
   test subset, and the relative response change of ``response_layer`` on the other half of the 92 images.
3. At ``main_size``: specificity of each category-selective lesion against its random controls (bootstrap CIs),
   per-category response changes, and the change of RSA alignment with hIT/mIT and of V4 predictivity.
4. Interventional alignment (Rajalingham & DiCarlo 2019): ``n_sites`` lesion sites tiling the sheet; correlation
   between each site's class-selectivity profile and the class-deficit profile its lesion causes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workbench.intervention.ablation import ablate_units
from workbench.intervention.effects import (category_response_change, class_deficits, layer_outputs,
                                            per_class_accuracy, predict_labels, relative_response_change)
from workbench.intervention.scoring import interventional_alignment, lesion_specificity
from workbench.intervention.selection import (Selection, category_dprime, disk, disk_around_peak, random_disk,
                                              random_units, resolve_size, top_k_selective)

__all__ = ["intervene_stage", "INTERVENE_DEFAULTS", "REFERENCES", "COMPARISONS"]

INTERVENE_DEFAULTS: dict[str, Any] = {
    "layer": None,
    "response_layer": None,
    "mode": "zero",
    "contrasts": {"face": None, "body": None, "animate": "inanim"},
    "cifar_targets": {"animate": ["bird", "cat", "deer", "dog", "frog", "horse"],
                      "inanim": ["airplane", "automobile", "ship", "truck"]},
    "lesion_sizes": [0.01, 0.02, 0.05, 0.1, 0.2],
    "main_size": 0.05,
    "smoothing_sigma": None,
    "default_sheet": True,
    "n_random": 5,
    "n_sites": 16,
    "site_size": 0.02,
    "site_kind": "auto",
    "n_cifar_test": 2000,
    "n_bootstrap": 1000,
    "n_permutations": 1000,
    "ci_level": 0.95,
    "effects": ["cifar", "responses92", "rsa", "v4"],
    "rsa_regions": ["hIT", "mIT"],
    "rsa_metric": "correlation",
    "rsa_method": "spearman",
    "v4_session": "210325",
    "v4_layer": None,
    "v4_n_images": None,
    "batch_size": 256,
    "seed": None,
}
EFFECTS = ("cifar", "responses92", "rsa", "v4")

REFERENCES = {
    "rajalingham2019": "Rajalingham, R., & DiCarlo, J. J. (2019). Reversible inactivation of different "
                       "millimeter-scale regions of primate IT results in different patterns of core object "
                       "recognition deficits. Neuron, 102(2), 493-505.",
    "afraz2015": "Afraz, A., Boyden, E. S., & DiCarlo, J. J. (2015). Optogenetic and pharmacological suppression of "
                 "spatial clusters of face neurons reveal their causal role in face gender discrimination. PNAS, "
                 "112(21), 6730-6735.",
    "sadagopan2017": "Sadagopan, S., Zarco, W., & Freiwald, W. A. (2017). A causal relationship between face-patch "
                     "activity and face-detection behavior. eLife, 6, e18558.",
    "blauch2022": "Blauch, N. M., Behrmann, M., & Plaut, D. C. (2022). A connectivity-constrained computational "
                  "account of topographic organization in primate high-level visual cortex. PNAS, 119(3), "
                  "e2112566119.",
    "kriegeskorte2008": "Kriegeskorte, N., Mur, M., Ruff, D.A., Kiani, R., Bodurka, J., Esteky, H., Tanaka, K., "
                        "Bandettini, P.A. (2008). Matching categorical object representations in inferior temporal "
                        "cortex of man and monkey. Neuron 60(6), 1126-1141.",
}

COMPARISONS = {
    "interventional_alignment": {
        "compared_to": "Rajalingham & DiCarlo (2019): muscimol inactivation of millimetre-scale IT sites gave "
                       "object-specific deficits in core object recognition, and the deficit pattern across objects "
                       "followed the object selectivity of the inactivated site.",
        "comparison": "qualitative",
        "expectation": "score > 0 and score_above_mismatched > 0 (permutation p < 0.05): a site's deficits follow "
                       "its own selectivity better than other sites' selectivity. Objects (CIFAR-10 classes), task "
                       "and species differ from the monkey study, so magnitudes are not compared.",
    },
    "face_specificity": {
        "compared_to": "Face-patch inactivation: Afraz et al. (2015) and Sadagopan et al. (2017) found that "
                       "silencing face-selective IT sites impairs face discrimination / detection more than object "
                       "behaviour; ITN (Blauch et al. 2022) reproduces face-specific deficits for lesions of its "
                       "face-selective region against random lesions.",
        "comparison": "qualitative",
        "expectation": "specificity_ratio > 1 and specificity_index > 0 (CI excluding 0). The model's deficit is "
                       "representational (response change of the response layer to held-out face images), since "
                       "CIFAR-10 has no face task.",
    },
    "category_specificity_cifar": {
        "compared_to": "ITN lesion experiments (Blauch et al. 2022): lesioning a category-selective region of a "
                       "topographic network hurts recognition of that category more than size-matched random "
                       "lesions.",
        "comparison": "qualitative",
        "expectation": "an animate-selective lesion costs more accuracy on CIFAR-10 animal classes than random "
                       "lesions of the same size (specificity_ratio > 1, specificity_index > 0).",
    },
    "rsa_v4_change": {
        "compared_to": "no published lesion counterpart; descriptive (how a lesion moves the model's alignment with "
                       "hIT/mIT, Kriegeskorte et al. 2008, and its V4 predictivity).",
        "comparison": "none (model-only description)",
        "expectation": "",
    },
}


# -- config ----------------------------------------------------------------------------------------------------------

def _options(cfg: dict) -> dict[str, Any]:
    given = dict(cfg.get("intervene") or {})
    unknown = set(given) - set(INTERVENE_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown intervene option(s) {sorted(unknown)}; valid options: {sorted(INTERVENE_DEFAULTS)}")
    opts = {**INTERVENE_DEFAULTS, **{k: v for k, v in given.items()}}
    if opts["mode"] not in ("zero", "mean"):
        raise ValueError(f"intervene.mode must be 'zero' or 'mean', got {opts['mode']!r}")
    bad = [e for e in opts["effects"] if e not in EFFECTS]
    if bad:
        raise ValueError(f"unknown intervene.effects {bad}; choose from {list(EFFECTS)}")
    sizes = list(opts["lesion_sizes"])
    if not sizes:
        raise ValueError("intervene.lesion_sizes needs at least one size")
    if opts["main_size"] not in sizes:
        raise ValueError(f"intervene.main_size {opts['main_size']} must be one of lesion_sizes {sizes}")
    if opts["site_kind"] not in ("auto", "disk", "top_k"):
        raise ValueError(f"intervene.site_kind must be auto, disk or top_k, got {opts['site_kind']!r}")
    for key in ("n_random", "n_bootstrap", "n_permutations", "n_sites", "batch_size"):
        if int(opts[key]) < 1:
            raise ValueError(f"intervene.{key} must be >= 1, got {opts[key]}")
    if not opts["contrasts"]:
        raise ValueError("intervene.contrasts needs at least one category (e.g. {face: null})")
    return opts


def _topography_weight(model_cfg: dict) -> float:
    topo = (model_cfg or {}).get("topography") or {}
    w = topo.get("weight", 0.0) if topo.get("layers") else 0.0
    if isinstance(w, dict):
        return float(max(w.values(), default=0.0))
    return float(w or 0.0)


def _default_layer(model, model_cfg: dict, shapes: dict[str, tuple]) -> str:
    from workbench.models import layer_names

    topo_layers = ((model_cfg or {}).get("topography") or {}).get("layers") or []
    if isinstance(topo_layers, str):
        topo_layers = [topo_layers]
    if topo_layers:
        return list(topo_layers)[-1]
    spatial = [name for name in layer_names(model) if len(shapes.get(name, ())) == 3]
    if not spatial:
        raise ValueError("the model has no layer with a (C, H, W) output; set intervene.layer")
    return spatial[-1]


def _stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets, each holding (about) half of every class."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = (members.size + 1) // 2
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _farthest_point_centers(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n sheet positions spread evenly: greedy farthest-point sampling from a seeded random start."""
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(positions)))]
    dist = np.linalg.norm(positions - positions[chosen[0]], axis=1)
    for _ in range(1, min(n, len(positions))):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(positions - positions[nxt], axis=1))
    return positions[chosen]


def _cifar_test(cfg: dict, n: int, seed: int):
    """(images tensor, labels, class names) of a class-balanced CIFAR-10 test subset, or None with a reason."""
    import torch

    data = dict(cfg.get("data") or {})
    target = str(data.get("_target_", "workbench.data.CIFAR10DataModule"))
    if not target.endswith("CIFAR10DataModule"):
        return None, f"data is {target}, not CIFAR-10"
    if int((cfg.get("model") or {}).get("num_classes", 10)) != 10:
        return None, "the model does not have 10 output classes"
    from workbench.training.stage import build_datamodule

    data.update({"test_subset": int(n), "augment": False, "num_workers": 0, "seed": seed})
    dm = build_datamodule({**cfg, "data": data})
    dm.setup("test")
    xs, ys = [], []
    for x, y in dm.test_dataloader():
        xs.append(x)
        ys.append(y)
    return (torch.cat(xs), torch.cat(ys).numpy().astype(np.int64), list(dm.classes)), ""


# -- the stage -------------------------------------------------------------------------------------------------------

def intervene_stage(run, cfg: dict) -> dict:
    """Lesion studies of cfg["intervene"]["layer"]; returns the ``intervene`` metrics section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from tqdm.auto import tqdm

    from workbench.data import load_stimuli
    from workbench.features import Preprocess
    from workbench.intervention.plots import lesion_curves_figure, lesion_map_figure
    from workbench.models import build_sheets, layer_names, layer_unit_shapes
    from workbench.pipeline import model_for_run
    from workbench.utils import atomic_save_npz, get_device

    t_start = time.perf_counter()
    opts = _options(cfg)
    seed = int(opts["seed"] if opts["seed"] is not None else cfg.get("seed", 0))
    model_cfg = cfg.get("model") or {}
    preprocess = Preprocess.from_config(model_cfg.get("preprocess"))
    device = get_device(cfg.get("device"))
    model = model_for_run(run, cfg).to(device).eval()

    names = layer_names(model)
    shapes = layer_unit_shapes(model, preprocess.image_size)
    layer = opts["layer"] or _default_layer(model, model_cfg, shapes)
    if layer not in shapes:
        raise KeyError(f"intervene.layer {layer!r} is not a layer of the model; layers are {names}")
    unit_shape = tuple(shapes[layer])
    n_units = int(np.prod(unit_shape))
    response_layer = opts["response_layer"]
    if response_layer is None:
        i = names.index(layer) if layer in names else len(names) - 1
        response_layer = names[min(i + 1, len(names) - 1)]
    if response_layer not in shapes:
        raise KeyError(f"intervene.response_layer {response_layer!r} is not a layer of the model; layers are {names}")
    effects = set(opts["effects"])

    # Cortical sheet (the model's own; else a default one, so topographic and plain models get the same lesions).
    sheets = dict(getattr(model, "cortical_sheets", {}) or {})
    sheet_source = "model"
    if layer not in sheets and opts["default_sheet"] and len(unit_shape) == 3:
        sheets.update(build_sheets(model, model_cfg, layers=[layer]))
        sheet_source = "default (the model has none for this layer)"
    positions = None
    if layer in sheets:
        pos = sheets[layer].positions
        positions = np.asarray(pos.detach().cpu().numpy() if hasattr(pos, "detach") else pos, dtype=np.float64)
    else:
        sheet_source = "none"

    def to_frac(size) -> float:
        return resolve_size(size, n_units) / n_units

    sizes = list(opts["lesion_sizes"])
    counts = [resolve_size(s, n_units) for s in sizes]
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"intervene.lesion_sizes must grow strictly; as unit counts of {layer}: {counts}")
    main_i = sizes.index(opts["main_size"])

    # -- stimuli --------------------------------------------------------------------------------------------------
    k92 = load_stimuli("kriegeskorte92")
    meta = k92.metadata
    x92 = preprocess(k92.images)
    contrasts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for cat, ref in opts["contrasts"].items():
        if cat not in meta.columns or (ref is not None and ref not in meta.columns):
            raise KeyError(f"intervene.contrasts: no column {cat!r}/{ref!r} in the 92-image metadata; columns are "
                           f"{[c for c in meta.columns if c not in ('stimulus_id', 'image_index')]}")
        t = meta[cat].to_numpy().astype(bool)
        r = ~t if ref is None else meta[ref].to_numpy().astype(bool) & ~t
        contrasts[cat] = (t, r)
    # Selection on one half of the 92 images (stratified by fine category), measurement on the other half, so the
    # response change of a category-selective lesion is not measured on the images that selected its units.
    fine = meta["category"].astype("category").cat.codes.to_numpy()
    sel92, meas92 = _stratified_halves(fine, seed)

    cifar, cifar_note = (None, "not requested")
    if "cifar" in effects:
        cifar, cifar_note = _cifar_test(cfg, opts["n_cifar_test"], seed)
    if cifar is not None:
        xc, yc, class_names = cifar
        csel, ceval = _stratified_halves(yc, seed + 1)
        n_classes = len(class_names)

    bs = int(opts["batch_size"])

    # -- clean model ------------------------------------------------------------------------------------------------
    clean92 = layer_outputs(model, x92, [layer, response_layer], bs)
    selectivity92 = {}
    for cat, (t, r) in contrasts.items():
        use = np.zeros(len(t), bool)
        use[sel92] = True
        use &= t | r
        selectivity92[cat] = category_dprime(clean92[layer][use], t[use])[0]
    if cifar is not None:
        clean_c = layer_outputs(model, xc[csel], [layer], bs)[layer]
        class_dprime = category_dprime(clean_c, yc[csel][:, None] == np.arange(n_classes)[None, :])
        clean_correct = predict_labels(model, xc[ceval], bs) == yc[ceval]
        mean_reference = clean_c.mean(0)
    else:
        mean_reference = clean92[layer].mean(0)
    reference = mean_reference.reshape(unit_shape) if opts["mode"] == "mean" else None

    # Lesions change nothing below `layer`: cache its clean output once and replay only the network above it
    # (verified against the full model; falls back to full forward passes with the ablation hook otherwise).
    from workbench.intervention.replay import layer_replay

    replay = layer_replay(model, layer, x92[:4].to(device), leaves=names)
    cached92 = cached_c = None
    if replay is not None:
        cached92 = torch.from_numpy(clean92[layer]).reshape((-1,) + unit_shape)
        if cifar is not None:
            cached_c = torch.from_numpy(layer_outputs(model, xc[ceval], [layer], bs)[layer]).reshape(
                (-1,) + unit_shape)

    @torch.no_grad()
    def replay_pass(handle, cached: torch.Tensor, capture: bool,
                    capture_layer: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        capture_layer = capture_layer or response_layer
        logits, resp = [], []
        grab: dict[str, torch.Tensor] = {}
        hook = None
        if capture and capture_layer != layer:
            hook = model.get_submodule(capture_layer).register_forward_hook(
                lambda m, i, o: grab.__setitem__("r", o.detach()))
        try:
            for start in range(0, cached.shape[0], bs):
                h = handle.apply(cached[start:start + bs].to(device))
                logits.append(replay(h).argmax(1).cpu())
                if capture:
                    r = h if capture_layer == layer else grab["r"]
                    resp.append(r.reshape(r.shape[0], -1).float().cpu().numpy())
        finally:
            if hook is not None:
                hook.remove()
        return torch.cat(logits).numpy(), (np.concatenate(resp) if capture else None)

    def run_lesion(selection: Selection, keep_responses: bool = False) -> dict[str, Any]:
        with ablate_units(model, layer, selection, mode=opts["mode"], reference=reference,
                          unit_shape=unit_shape) as handle:
            if replay is not None:
                _, resp = replay_pass(handle, cached92, capture=True)
                correct = (replay_pass(handle, cached_c, capture=False)[0] == yc[ceval]
                           if cifar is not None else None)
            else:
                resp = layer_outputs(model, x92, [response_layer], bs)[response_layer]
                correct = predict_labels(model, xc[ceval], bs) == yc[ceval] if cifar is not None else None
        out: dict[str, Any] = {"change92": relative_response_change(clean92[response_layer], resp),
                               "correct": correct}
        if keep_responses:
            out["responses"] = resp
        return out

    def v4_changes() -> dict[str, Any]:
        """Cross-validated ridge predictivity of V4 (Cowley et al. 2023) from ``v4_layer``, clean vs lesioned."""
        from workbench.alignment.regression import cross_validate_encoding
        from workbench.data import load_responses

        v4_layer = opts["v4_layer"] or response_layer
        if v4_layer not in shapes:
            raise KeyError(f"intervene.v4_layer {v4_layer!r} is not a layer of the model; layers are {names}")
        session = str(opts["v4_session"])
        out: dict[str, Any] = {"layer": v4_layer, "session": session, "method": "ridge (GCV alphas), 5-fold CV",
                               "score": "median over neurons of the out-of-fold Pearson r",
                               **COMPARISONS["rsa_v4_change"]}
        if v4_layer in names and layer in names and names.index(v4_layer) < names.index(layer):
            out["note"] = f"{v4_layer} lies below the lesioned layer {layer}: unchanged by construction"
            return out
        stim = load_stimuli(f"cowley_v4_{session}")
        resp = load_responses("cowley2023_v4", session=session)
        pos = {str(sid): i for i, sid in enumerate(resp.coords["stimulus_id"].values)}
        keep = np.arange(len(stim))
        if opts["v4_n_images"] is not None and int(opts["v4_n_images"]) < len(stim):
            keep = np.sort(np.random.default_rng(seed).choice(len(stim), int(opts["v4_n_images"]), replace=False))
        out["n_images"] = int(keep.size)
        y = resp.values[[pos[str(sid)] for sid in stim.stimulus_ids[keep]]]
        xv = preprocess(stim.images[keep])
        clean = layer_outputs(model, xv, [layer, v4_layer], bs)
        cached_v = torch.from_numpy(clean[layer]).reshape((-1,) + unit_shape) if replay is not None else None

        def score(features):
            return cross_validate_encoding(features, y, method="ridge", n_folds=5, seed=seed,
                                           standardize=True).score

        def lesioned(selection):
            with ablate_units(model, layer, selection, mode=opts["mode"], reference=reference,
                              unit_shape=unit_shape) as handle:
                if replay is not None:
                    return replay_pass(handle, cached_v, capture=True, capture_layer=v4_layer)[1]
                return layer_outputs(model, xv, [v4_layer], bs)[v4_layer]

        clean_score = score(clean[v4_layer])
        out["clean"] = clean_score
        for cat in contrasts:
            for kind in kinds:
                s = score(lesioned(lesions[(kind, cat, main_i, 0)]))
                out[f"{cat}/{kind}"] = {"lesioned": s, "delta": s - clean_score}
        for kind in sorted({control_of[k] for k in kinds}):
            vals = [score(lesioned(lesions[(kind, None, main_i, k)])) for k in range(opts["n_random"])]
            out[kind] = {"lesioned_mean": float(np.mean(vals)), "delta_mean": float(np.mean(vals) - clean_score),
                         "delta_range": [float(min(vals) - clean_score), float(max(vals) - clean_score)]}
        return out

    # -- lesion sweep ---------------------------------------------------------------------------------------------
    kinds = ["top_k"] + (["disk_peak"] if positions is not None else [])
    control_of = {"top_k": "random", "disk_peak": "random_disk"}
    lesions: dict[tuple, Selection] = {}
    for i, size in enumerate(sizes):
        for cat in contrasts:
            lesions[("top_k", cat, i, 0)] = top_k_selective(selectivity92[cat], size, layer=layer, label=cat,
                                                            unit_shape=unit_shape)
            if positions is not None:
                lesions[("disk_peak", cat, i, 0)] = disk_around_peak(
                    selectivity92[cat], positions, size=size, smoothing_sigma=opts["smoothing_sigma"], layer=layer,
                    label=cat, unit_shape=unit_shape)
        for r in range(int(opts["n_random"])):
            lesions[("random", None, i, r)] = random_units(n_units, size, seed=seed * 1000 + 17 * i + r,
                                                           layer=layer, unit_shape=unit_shape)
            if positions is not None:
                lesions[("random_disk", None, i, r)] = random_disk(positions, size=size,
                                                                   seed=seed * 1000 + 17 * i + r + 500,
                                                                   layer=layer, unit_shape=unit_shape)
    results: dict[tuple, dict] = {}
    for key, selection in tqdm(lesions.items(), desc=f"lesions of {layer}", unit="lesion", leave=False):
        results[key] = run_lesion(selection, keep_responses=(key[2] == main_i))

    # -- effects at the main size -----------------------------------------------------------------------------------
    section: dict[str, Any] = {
        "layer": layer, "response_layer": response_layer, "unit_shape": list(unit_shape), "n_units": n_units,
        "mode": opts["mode"], "sheet": sheet_source, "topography_weight": _topography_weight(model_cfg),
        "topographic": _topography_weight(model_cfg) > 0, "selectivity": "d' (category vs reference stimuli)",
        "lesion_sizes": [round(to_frac(s), 6) for s in sizes], "lesion_counts": counts,
        "main_size": round(to_frac(sizes[main_i]), 6), "n_random": int(opts["n_random"]),
        "stimuli": {"k92_selection": int(len(sel92)), "k92_measurement": int(len(meas92))},
        "replayed_from_cached_layer": replay is not None,
    }
    if cifar is not None:
        clean_acc = per_class_accuracy(clean_correct, yc[ceval], n_classes)
        section["clean"] = {"cifar_accuracy": float(clean_correct.mean()),
                            "per_class_accuracy": dict(zip(class_names, clean_acc.round(4).tolist())),
                            "n_eval_images": int(len(ceval)), "n_selectivity_images": int(len(csel))}
    else:
        section["clean"] = {"cifar": f"skipped: {cifar_note}"}

    cat_cols = [c for c in ("face", "body", "animate", "inanim", "human", "natObj", "artiObj") if c in meta.columns]
    cat_matrix = meta[cat_cols].to_numpy().astype(bool)[meas92]

    main: dict[str, Any] = {}
    for cat in contrasts:
        main[cat] = {}
        for kind in kinds:
            res, sel = results[(kind, cat, main_i, 0)], lesions[(kind, cat, main_i, 0)]
            entry = {"selection": sel.summary(),
                     "response_change_by_category": category_response_change(res["change92"][meas92], cat_matrix,
                                                                              cat_cols)}
            if cifar is not None:
                deficit = class_deficits(clean_correct, res["correct"], yc[ceval], n_classes)
                entry["cifar_accuracy"] = float(res["correct"].mean())
                entry["cifar_class_deficit"] = dict(zip(class_names, deficit.round(4).tolist()))
            main[cat][kind] = entry
    for kind in [control_of[k] for k in kinds]:
        changes = np.stack([results[(kind, None, main_i, r)]["change92"][meas92] for r in range(opts["n_random"])])
        per_ctrl = [category_response_change(c, cat_matrix, cat_cols) for c in changes]
        entry = {"n_controls": int(opts["n_random"]),
                 "response_change_by_category": {c: float(np.mean([p[c] for p in per_ctrl])) for c in cat_cols}}
        if cifar is not None:
            correct = np.stack([results[(kind, None, main_i, r)]["correct"] for r in range(opts["n_random"])])
            entry["cifar_accuracy"] = float(correct.mean())
            entry["cifar_class_deficit"] = dict(zip(class_names, class_deficits(
                clean_correct, correct, yc[ceval], n_classes).mean(0).round(4).tolist()))
        main[kind] = entry
    section["main_lesions"] = main

    # -- specificity with bootstrap CIs ---------------------------------------------------------------------------
    spec: dict[str, Any] = {}
    nb, lvl = int(opts["n_bootstrap"]), float(opts["ci_level"])
    for cat, (t, r) in contrasts.items():
        spec[cat] = {}
        m = meas92[(t | r)[meas92]]
        for kind in kinds:
            ctl = control_of[kind]
            entry: dict[str, Any] = {"control": ctl}
            if "responses92" in effects and t[m].any() and (~t[m]).any():
                entry["responses92"] = lesion_specificity(
                    results[(kind, cat, main_i, 0)]["change92"][m],
                    np.stack([results[(ctl, None, main_i, k)]["change92"][m] for k in range(opts["n_random"])]),
                    t[m], n_bootstrap=nb, seed=seed, level=lvl)
                entry["responses92"]["measure"] = (f"relative response change of {response_layer} on held-out "
                                                   f"{cat} images (target) vs reference images")
            targets = (opts["cifar_targets"] or {}).get(cat)
            if cifar is not None and targets:
                unknown = [c for c in targets if c not in class_names]
                if unknown:
                    raise KeyError(f"intervene.cifar_targets[{cat}]: unknown classes {unknown}; classes are "
                                   f"{class_names}")
                target_c = np.isin(yc[ceval], [class_names.index(c) for c in targets])
                damage_sel = clean_correct.astype(float) - results[(kind, cat, main_i, 0)]["correct"]
                damage_rnd = np.stack([clean_correct.astype(float) - results[(ctl, None, main_i, k)]["correct"]
                                       for k in range(opts["n_random"])])
                entry["cifar"] = lesion_specificity(damage_sel, damage_rnd, target_c, strata=yc[ceval],
                                                    n_bootstrap=nb, seed=seed, level=lvl)
                entry["cifar"]["measure"] = f"accuracy lost on CIFAR-10 {targets} (target) vs the other classes"
            spec[cat][kind] = entry
    section["specificity"] = spec

    # -- RSA and V4 changes at the main size --------------------------------------------------------------------
    if "rsa" in effects:
        section["rsa_change"] = _rsa_changes(clean92[response_layer], results, lesions, kinds, control_of, contrasts,
                                             main_i, opts, k92.stimulus_ids)
    if "v4" in effects:
        section["v4_change"] = v4_changes()

    # -- interventional alignment -----------------------------------------------------------------------------------
    if cifar is not None:
        site_kind = opts["site_kind"]
        if site_kind == "auto":
            site_kind = "disk" if positions is not None else "top_k"
        if site_kind == "disk" and positions is None:
            raise ValueError(f"intervene.site_kind=disk needs a cortical sheet for {layer}; set default_sheet: true "
                             "or site_kind: top_k")
        if site_kind == "disk":
            centers = _farthest_point_centers(positions, int(opts["n_sites"]), seed)
            sites = [disk(positions, c, size=opts["site_size"], layer=layer, kind="site", unit_shape=unit_shape)
                     for c in centers]
        else:
            sites = [top_k_selective(class_dprime[k], opts["site_size"], layer=layer, label=class_names[k],
                                     unit_shape=unit_shape) for k in range(n_classes)]
        site_correct = np.stack([run_lesion(s)["correct"] for s in tqdm(sites, desc="lesion sites", leave=False)])
        ia = interventional_alignment(clean_c, yc[csel], sites, clean_correct, site_correct, yc[ceval], n_classes,
                                      n_bootstrap=nb, n_permutations=int(opts["n_permutations"]), seed=seed,
                                      level=lvl)
        ia.update({"site_kind": site_kind, "site_size": round(to_frac(opts["site_size"]), 6),
                   "categories": class_names, **COMPARISONS["interventional_alignment"]})
        section["interventional_alignment"] = ia
    else:
        section["interventional_alignment"] = {"skipped": f"needs CIFAR-10 deficits: {cifar_note}"}

    # -- sweep curves and figures -------------------------------------------------------------------------------
    curves: dict[str, dict[str, dict[str, Any]]] = {}
    for cat, (t, r) in contrasts.items():
        curves[cat] = {"response_change_target": {}, "cifar_target_deficit": {}}
        tm = meas92[t[meas92]]
        for kind in kinds + [control_of[k] for k in kinds]:
            if kind in ("random", "random_disk"):
                v = np.array([[results[(kind, None, i, k)]["change92"][tm].mean() for i in range(len(sizes))]
                              for k in range(opts["n_random"])])
            else:
                v = np.array([results[(kind, cat, i, 0)]["change92"][tm].mean() for i in range(len(sizes))])
            curves[cat]["response_change_target"][kind] = v
        targets = (opts["cifar_targets"] or {}).get(cat)
        if cifar is not None and targets:
            tc = np.isin(yc[ceval], [class_names.index(c) for c in targets])
            for kind in kinds + [control_of[k] for k in kinds]:
                if kind in ("random", "random_disk"):
                    v = np.array([[clean_correct[tc].mean() - results[(kind, None, i, k)]["correct"][tc].mean()
                                   for i in range(len(sizes))] for k in range(opts["n_random"])])
                else:
                    v = np.array([clean_correct[tc].mean() - results[(kind, cat, i, 0)]["correct"][tc].mean()
                                  for i in range(len(sizes))])
                curves[cat]["cifar_target_deficit"][kind] = v
    section["sweep"] = {cat: {measure: {kind: np.asarray(v).tolist() for kind, v in by_kind.items()}
                              for measure, by_kind in c.items() if by_kind} for cat, c in curves.items()}
    if cifar is not None:
        section["sweep_cifar_accuracy"] = {
            kind: [float(np.mean([results[(kind, None, i, k)]["correct"].mean() for k in range(opts["n_random"])]))
                   for i in range(len(sizes))] for kind in [control_of[k] for k in kinds]}

    fractions = [to_frac(s) for s in sizes]
    fig = lesion_curves_figure(fractions, curves, [
        ("response_change_target", f"response change of {response_layer}\non held-out target images"),
        ("cifar_target_deficit", "accuracy lost on\ntarget CIFAR-10 classes")])
    run.save_figure(fig, "intervene_lesion_curves")
    plt.close(fig)
    map_kind = "disk_peak" if positions is not None else "top_k"
    map_lesions = {cat: {"selective": lesions[(map_kind, cat, main_i, 0)],
                         "control": lesions.get(("random_disk", None, main_i, 0))} for cat in contrasts}
    fig = lesion_map_figure(selectivity92, map_lesions, positions, unit_shape, layer)
    run.save_figure(fig, "intervene_lesion_map")
    plt.close(fig)

    atomic_save_npz(run.subdir("cache/intervention") / "lesions.npz",
                    **{f"selectivity/{c}": v.astype(np.float32) for c, v in selectivity92.items()},
                    **{f"units/{k[0]}/{k[1]}/{k[2]}/{k[3]}": s.units for k, s in lesions.items()})

    section["comparisons"] = COMPARISONS
    section["headline"] = _headline(section, contrasts, kinds)
    section["captions"] = {
        "intervene_lesion_curves": (
            f"Lesions of {layer} ({opts['mode']} ablation) of growing size. Top: relative response change of "
            f"{response_layer} to held-out images of the target category; bottom: accuracy lost on the CIFAR-10 "
            "classes matching the category. Selective lesions (solid) against size-matched random controls "
            "(dashed, mean and min-max over controls)."),
        "intervene_lesion_map": (
            f"Category selectivity (d', selection half of the 92 images) of {layer}; outlined: the "
            f"{map_kind.replace('_', ' ')} lesion at {100 * section['main_size']:.1f}% of the units (black) and a "
            "random disk of the same size (grey)."),
    }
    section["references"] = sorted(set(REFERENCES.values()))
    section["seconds_compute"] = round(time.perf_counter() - t_start, 2)
    return section


def _headline(section: dict, contrasts, kinds) -> dict[str, Any]:
    head: dict[str, Any] = {}
    ia = section.get("interventional_alignment", {})
    if "score" in ia:
        head["Interventional alignment (site selectivity vs deficit r)"] = {
            "value": ia["score"],
            "detail": (f"CI {ia['score_ci'][0]:.2f} to {ia['score_ci'][1]:.2f}; above mismatched sites "
                       f"{ia['score_above_mismatched']:.2f} (p={ia['permutation_p']:.3f}); {ia['n_sites']} "
                       f"{ia['site_kind']} sites; vs Rajalingham & DiCarlo 2019 (qualitative)")}
    kind = "disk_peak" if "disk_peak" in kinds else "top_k"
    for cat in contrasts:
        entry = section["specificity"].get(cat, {}).get(kind, {})
        for measure, what in (("cifar", "CIFAR target-class deficit"), ("responses92", "target response change")):
            if measure in entry and np.isfinite(entry[measure]["specificity_ratio"]):
                e = entry[measure]
                lo, hi = e["specificity_ratio_ci"]
                head[f"{cat} lesion vs random: {what} ratio"] = {
                    "value": e["specificity_ratio"],
                    "detail": f"{kind} lesion; CI {lo:.2f} to {hi:.2f}; index {e['specificity_index']:.3f}"}
                break
    return head


def _rsa_changes(clean: np.ndarray, results, lesions, kinds, control_of, contrasts, main_i, opts,
                 stimulus_ids) -> dict[str, Any]:
    """Spearman RSA (default) of the response layer with each region, clean and under each main-size lesion."""
    from workbench.alignment import compare_rdms, compute_rdm
    from workbench.data import load_rdms

    def score(responses, brain):
        try:
            rdm = compute_rdm(responses, metric=opts["rsa_metric"])
        except ValueError as err:  # e.g. a lesion that leaves a stimulus with a constant pattern
            return float("nan"), str(err)
        per_subject = np.atleast_1d(compare_rdms(rdm, brain, method=opts["rsa_method"]))
        return float(np.mean(per_subject)), ""

    out: dict[str, Any] = {"metric": opts["rsa_metric"], "method": opts["rsa_method"],
                           "scored_as": "mean over subjects of the comparison with each subject's RDM "
                                        "(sessions averaged)", **COMPARISONS["rsa_v4_change"]}
    for region in opts["rsa_regions"]:
        brain = load_rdms("kriegeskorte2008", region=region)
        if "session" in brain.dims:
            brain = brain.mean("session")
        ids = [str(s) for s in brain["stimulus"].values]
        if ids != [str(s) for s in stimulus_ids]:
            raise ValueError(f"{region} RDM stimuli are not in the order of the 92-image set")
        brain_stack = brain.values.reshape(-1, len(ids), len(ids))
        clean_score, _ = score(clean, brain_stack)
        reg: dict[str, Any] = {"clean": clean_score}
        for cat in contrasts:
            for kind in kinds:
                s, note = score(results[(kind, cat, main_i, 0)]["responses"], brain_stack)
                reg[f"{cat}/{kind}"] = {"lesioned": s, "delta": s - clean_score, **({"note": note} if note else {})}
        for kind in {control_of[k] for k in kinds}:
            vals = [score(results[(kind, None, main_i, k)]["responses"], brain_stack)[0]
                    for k in range(opts["n_random"])]
            reg[kind] = {"lesioned_mean": float(np.nanmean(vals)), "delta_mean": float(np.nanmean(vals) - clean_score),
                         "delta_range": [float(np.nanmin(vals) - clean_score), float(np.nanmax(vals) - clean_score)]}
        out[region] = reg
    return out
