"""The attribute stage: maps for classes, units, cortical patches and neural sites, and how far to trust them.

Reads its section (``ctx.config``, an ``AttributeConfig``; configs/attribute/default.yaml documents every key), the
run's model (``ctx.model()``), the stimulus sets with the model's preprocessing, and the linear readouts the align
stage fitted for ``targets.neural_sites.dataset`` (``ctx.run.load_readout``) when present (else the neural-site
target is skipped and the section says why). Every method comes from the ``METHODS`` registry and maps its own
options from the config. Writes figures ``attribute_overlays_<set>`` (``_92`` and ``_v4`` for the default study's
sets) and ``attribute_checks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.attribution.checks import (
    CHECKS, FaithfulnessResult, completeness, deletion_insertion, method_agreement, model_randomisation,
)
from workbench.attribution.methods import METHODS, Attribution, AttributionMethod
from workbench.attribution.plots import checks_figure, target_overlays
from workbench.attribution.safety import safe_copy
from workbench.attribution.targets import (ClassTarget, NeuralSiteTarget, PatchTarget, Target, UnitTarget,
                                          patch_layers, patch_sheet_positions)

__all__ = ["attribute_stage", "build_targets", "run_checks", "figure_name"]


@dataclass
class MethodRun:
    """One configured method: its name as the config gives it (an alias stays an alias in the metrics), its class,
    and the constructor options the class mapped from the config."""

    name: str
    cls: type[AttributionMethod]
    options: dict[str, Any]

    def baselines(self, background: torch.Tensor) -> torch.Tensor | None:
        """The SHAP family explains against a background distribution; the others against zeros (the mean image)."""
        return background if self.cls.baseline_distribution else None


@dataclass
class StimulusBatch:
    """The first ``n_images`` of a stimulus set, preprocessed, with the SHAP background and the model's classes."""

    name: str
    stimulus_ids: list[str]
    x: torch.Tensor
    background: torch.Tensor
    predicted: np.ndarray
    class_target: np.ndarray | None       # the class each image's class-target map explains; None: no class target


@dataclass
class ChecksInput:
    """The class-target maps of the first stimulus set: what the checks test."""

    batch: StimulusBatch
    maps: dict[str, Attribution]
    label: str


def attribute_stage(ctx) -> dict:
    config = ctx.config
    model = ctx.model()
    methods = [MethodRun(m, METHODS.get(m), {**METHODS.get(m).options_from_config(config), "device": str(ctx.device)})
               for m in config.methods]
    targets, skipped = build_targets(model, config.targets, ctx.run, ctx.model_config)
    section: dict[str, Any] = {"device": str(ctx.device), "methods": list(config.methods), "skipped": skipped,
                               "stimulus_sets": {}}
    sites = config.targets.neural_sites
    site_set = sites.dataset if sites is not None else None
    rng = np.random.default_rng(ctx.seed)
    checks_input = None
    for set_name in ctx.progress(config.stimulus_sets, "stimulus sets"):
        batch, stimuli = load_batch(set_name, config, ctx.preprocess, model, rng)
        # a neuroid's readout belongs to its data set's images only
        set_targets = [t for t in targets if not (isinstance(t, NeuralSiteTarget) and set_name != site_set)]
        results, rows = attribute_set(model, batch, set_targets, methods, config.targets.class_target)
        section["stimulus_sets"][set_name] = results
        if checks_input is None and batch.class_target is not None:
            checks_input = ChecksInput(batch, rows[0][1], rows[0][0])
        images = ctx.preprocess.invert(batch.x).permute(0, 2, 3, 1).numpy()
        fig = target_overlays(images, stimuli.stimulus_ids, rows, config.overlay_images,
                              title=f"{set_name}: |attribution| per method and target")
        if fig is not None:
            ctx.save_figure(fig, figure_name(set_name, site_set))
        _cite_stimulus_set(ctx, set_name)
    for method in methods:
        ctx.cite(METHODS, method.name)
    if checks_input is not None:
        section["checks"] = run_checks(model, config, checks_input, methods, ctx.device, ctx.seed)
        for check in checks_that_ran(section["checks"]):
            ctx.cite(CHECKS, check)
        ctx.save_figure(checks_figure(section["checks"]), "attribute_checks")
    section["summary"] = _summary(section)
    section["headline"] = headline(ctx, section)
    return section


def _cite_stimulus_set(ctx, set_name: str) -> None:
    from workbench.data import STIMULUS_SETS

    if set_name in STIMULUS_SETS:
        ctx.cite(STIMULUS_SETS, set_name)


# -- targets ---------------------------------------------------------------------------------------------------------
def build_targets(model: torch.nn.Module, config, run, model_config: dict) -> tuple[list[Target], dict[str, str]]:
    """Unit, patch and neural-site targets from ``config`` (a ``TargetsConfig``; the class target is handled per
    image), and why any configured target was skipped."""
    skipped: dict[str, str] = {}
    targets: list[Target] = [
        UnitTarget(layer=u.layer, unit=tuple(u.unit) if isinstance(u.unit, list) else u.unit, channel=u.channel)
        for u in config.units]
    if config.patches is not None:
        targets += patch_targets(model, config.patches, model_config, skipped)
    if config.neural_sites is not None:
        targets += neural_site_targets(model, config.neural_sites, run, skipped)
    return targets, skipped


def patch_targets(model, patches, model_config: dict, skipped: dict[str, str]) -> list[PatchTarget]:
    """One patch at the centre of each topographic layer's cortical sheet, its radius a fraction of the sheet."""
    layers = patch_layers(patches, model_config)
    if not layers:
        skipped["patch"] = "no topography layers in cfg['model']['topography']['layers'] and none configured"
    out = []
    for layer, pos in patch_sheet_positions(model, layers, skipped).items():
        lo, hi = pos.min(0), pos.max(0)
        radius = float(patches.radius_fraction) * float((hi - lo).max())
        out.append(PatchTarget(layer=layer, centre=tuple(((lo + hi) / 2).tolist()), radius=radius))
    return out


def neural_site_targets(model, sites, run, skipped: dict[str, str]) -> list[NeuralSiteTarget]:
    """Neuroids of the align stage's readouts for ``sites.dataset``: the configured layers, else the earliest
    layers (in the model's module order) that have one, up to ``max_layers``."""
    key = f"neural_site:{sites.dataset}"
    fitted = run.readout_layers(sites.dataset)
    if sites.layers:
        layers = [layer for layer in sites.layers if layer in fitted]
        missing = [layer for layer in sites.layers if layer not in fitted]
        if missing:
            skipped[key] = f"no readout of {sites.dataset} for layer(s) {missing} in this run (fitted: {fitted})"
    else:
        order = {name: i for i, name in enumerate(n for n, _ in model.named_modules())}
        layers = sorted(fitted, key=lambda layer: order.get(layer, len(order)))[:sites.max_layers]
    if not layers and key not in skipped:
        skipped[key] = (f"no fitted readouts of {sites.dataset} in this run (run the align stage with a regression "
                        f"on {sites.dataset} first); the neural-site target was skipped")
    out = []
    for layer in layers:
        arrays = run.load_readout(sites.dataset, layer)
        n_neuroids = arrays["coef"].shape[0]
        neuroids = (list(range(min(sites.neuroids, n_neuroids))) if isinstance(sites.neuroids, int)
                    else list(sites.neuroids))
        source = str(run.readout_path(sites.dataset, layer))
        out += [NeuralSiteTarget.from_arrays(arrays, neuroid=i, layer=layer, source=source) for i in neuroids]
    return out


# -- maps ------------------------------------------------------------------------------------------------------------
def load_batch(set_name: str, config, preprocess, model, rng: np.random.Generator):
    """The set's first ``n_images`` images, a SHAP background of other images of the same set (so the reference is
    the stimulus distribution), the model's predicted classes and the class target; and the set itself."""
    from workbench.data import load_stimuli

    stimuli = load_stimuli(set_name)
    n = min(config.n_images, len(stimuli))
    x = preprocess(stimuli.images[:n])
    rest = np.arange(n, len(stimuli))
    n_background = min(config.shap.n_background, len(rest))
    background = (preprocess(stimuli.images[np.sort(rng.choice(rest, n_background, replace=False))])
                  if n_background else x)
    with torch.no_grad():
        predicted = safe_copy(model)[0](x).argmax(1).numpy()
    spec = config.targets.class_target
    class_target = None if spec is None else predicted if spec == "predicted" else np.full(n, spec if spec else 0)
    batch = StimulusBatch(set_name, [str(s) for s in stimuli.stimulus_ids[:n]], x, background, predicted,
                          class_target)
    return batch, stimuli


def attribute_set(model, batch: StimulusBatch, targets: list[Target], methods: list[MethodRun], class_spec
                  ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Attribution]]]]:
    """Every method's maps for the class target (first, when there is one) and every other target of one set.

    Returns the set's metrics and the rows (target label, {method: Attribution}) for the figures and the checks."""
    results: dict[str, Any] = {"n_images": len(batch.x), "stimulus_ids": batch.stimulus_ids,
                               "predicted_class": batch.predicted.tolist(), "targets": {},
                               "class_target": None if batch.class_target is None else batch.class_target.tolist()}
    rows = []
    for target in ([None] if batch.class_target is not None else []) + targets:
        if target is None:
            label = "predicted class" if class_spec == "predicted" else f"class {class_spec}"
        else:
            label = target.label
        entries: dict[str, Any] = {}
        maps: dict[str, Attribution] = {}
        for method in methods:
            try:
                maps[method.name] = _attribute(model, batch, target, method)
            except ValueError as e:  # e.g. DeepLift on a model with a reused ReLU: say so, keep going
                entries[method.name] = {"error": str(e)}
                continue
            entries[method.name] = _map_entry(maps[method.name])
        entries["target"] = {"kind": "class", "label": label} if target is None else target.describe()
        results["targets"][label] = entries
        rows.append((label, maps))
    return results, rows


def _attribute(model, batch: StimulusBatch, target: Target | None, method: MethodRun) -> Attribution:
    base = method.baselines(batch.background)
    if target is None:
        return attribute_per_class(method, model, batch.x, batch.class_target, base)
    return method.cls(model, target, **method.options).attribute(batch.x, base, progress=False)


def _map_entry(a: Attribution) -> dict[str, Any]:
    entry: dict[str, Any] = {"seconds": round(a.seconds, 3), "outputs": a.outputs.tolist()}
    if a.delta is not None:
        entry["completeness"] = completeness(a)
    return entry


def attribute_per_class(method: MethodRun, model, x: torch.Tensor, classes: np.ndarray, baselines) -> Attribution:
    """Per-image class targets (e.g. the predicted class): one call per distinct class, reassembled in order."""
    parts: dict[int, Attribution] = {}
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        parts[int(c)] = method.cls(model, ClassTarget(int(c)), **method.options).attribute(x[idx], baselines,
                                                                                           progress=False)
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


def figure_name(set_name: str, neural_site_set: str | None) -> str:
    """attribute_overlays_92 / _v4 for the two sets of the default study (names kept stable for reports and earlier
    runs), attribute_overlays_<set> otherwise."""
    if set_name == "kriegeskorte92":
        return "attribute_overlays_92"
    if set_name == neural_site_set:
        return "attribute_overlays_v4"
    return f"attribute_overlays_{set_name}"


# -- checks ----------------------------------------------------------------------------------------------------------
def run_checks(model, config, checks_input: ChecksInput, methods: list[MethodRun], device, seed: int
               ) -> dict[str, Any]:
    """Completeness, randomisation, deletion/insertion and agreement on the class target of the first set."""
    c = config.checks
    batch = checks_input.batch
    k = min(c.n_images, len(batch.x))
    x, classes = batch.x[:k], batch.class_target[:k]
    out: dict[str, Any] = {"stimulus_set": batch.name, "target": checks_input.label, "n_images": k, "methods": {}}
    for method in methods:
        if method.name not in checks_input.maps:
            continue  # the method failed on this target; its error is in the set's metrics
        full = checks_input.maps[method.name]
        base = method.baselines(batch.background)
        entry: dict[str, Any] = {}
        if c.completeness and full.delta is not None:
            entry["completeness"] = completeness(full)
        if c.randomisation:
            entry["randomisation"] = _randomisation(model, x, classes, method, base, c.granularity, seed)
        if c.faithfulness:
            entry["faithfulness"] = _faithfulness(model, x, classes, full.attributions, c, seed, device)
        out["methods"][method.name] = entry
    if c.agreement and len(checks_input.maps) > 1:
        out["agreement"] = method_agreement({m: a.attributions[:k] for m, a in checks_input.maps.items()})
    return out


def checks_that_ran(checks: dict[str, Any]) -> list[str]:
    """Names (``CHECKS`` entries) of the checks with results in ``checks``."""
    per_method = checks.get("methods", {}).values()
    ran = [name for name in ("completeness", "randomisation", "faithfulness") if any(name in e for e in per_method)]
    return ran + (["agreement"] if "agreement" in checks else [])


def _randomisation(model, x, classes: np.ndarray, method: MethodRun, base, granularity: str, seed: int) -> dict:
    """Cascading randomisation needs one fixed target per call: each image's class, grouped by class."""
    layers, per_class = None, []
    for cls_ in np.unique(classes):
        idx = np.flatnonzero(classes == cls_)
        res = model_randomisation(model, x[idx], int(cls_), method.cls, baselines=base, granularity=granularity,
                                  seed=seed, progress=False, method_options=method.options)
        layers = res.layers
        per_class.append((idx, res.spearman))
    spearman = np.full((len(layers), len(x)), np.nan)
    for idx, rho in per_class:
        spearman[:, idx] = rho
    return {"layers": layers, "spearman_mean": np.nanmean(spearman, 1).tolist(),
            "spearman_per_image": spearman.tolist(),
            "spearman_fully_randomised": float(np.nanmean(spearman[-1]))}


def _faithfulness(model, x, classes: np.ndarray, attributions: np.ndarray, c, seed: int, device) -> dict:
    """Deletion / insertion per class group, pooled over the images."""
    curves = []
    for cls_ in np.unique(classes):
        idx = np.flatnonzero(classes == cls_)
        curves.append((idx, deletion_insertion(model, x[idx], attributions[idx], int(cls_),
                                               n_steps=c.faithfulness_steps, fill=c.fill,
                                               n_random=c.n_random_orders, seed=seed, device=str(device))))
    return _pool_faithfulness(curves, len(x))


def _pool_faithfulness(curves, k: int) -> dict[str, Any]:
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


# -- summary and headline --------------------------------------------------------------------------------------------
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


def headline_method(section: dict) -> str | None:
    """The method whose checks go on the summary cards: the first configured one that promises completeness (a path
    or SHAP method, the maps the checks say most about), else the first one checked."""
    checked = section.get("checks", {}).get("methods") or {}
    complete = [m for m in section["methods"] if "completeness" in checked.get(m, {})]
    return (complete or [m for m in section["methods"] if m in checked] or [None])[0]


def headline(ctx, section: dict) -> list[dict[str, Any]]:
    """Cards: the headline method's completeness error, its map's rank correlation with the map of a fully
    randomised model (low: the map depends on what the model learned) and its deletion gain over random orders."""
    method = headline_method(section)
    if method is None:
        return []
    checks = section["checks"]["methods"][method]
    cards = [("completeness", "relative_error_max", "completeness_error", "completeness error (max over images)",
              "|sum - (f(x) - f(b))| / |f(x) - f(b)|"),
             ("randomisation", "spearman_fully_randomised", "randomisation_spearman",
              "map vs fully randomised model", "Spearman r"),
             ("faithfulness", "deletion_gain", "deletion_gain", "deletion AUC gain over random order",
              "target x fraction")]
    out = []
    for check, key, name, label, unit in cards:
        value = checks.get(check, {}).get(key)
        if value is None or not np.isfinite(value):
            continue
        out.append(ctx.headline(name, value, f"{method}: {label}", f"checks.methods.{method}.{check}.{key}",
                                unit=unit, method=method, stimulus_set=section["checks"]["stimulus_set"],
                                n_images=section["checks"]["n_images"]))
    return out
