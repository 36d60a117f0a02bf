"""The intervene stage: lesion studies on the run's model and its interventional-alignment score.

For one layer (IT-like by default: the model's last topographic layer), in named steps over a ``LesionStudy``:

1. ``open_study``, ``load_stimulus_probe``, ``load_cifar_probe``, ``measure_clean``: category selectivity (d',
   target vs reference stimuli) of every unit from one half of the stimulus set (``stimulus_set``, the 92 images of
   Kriegeskorte et al. 2008 by default), and class selectivity (one-vs-rest d') from one half of a CIFAR-10 test
   subset.
2. ``plan_lesions`` (workbench.intervention.plan): for every size of ``lesion_sizes`` and every category, each lesion
   selection of ``selections`` (``SELECTIONS``: the most selective units, the disk of the cortical sheet around the
   selectivity peak, ...) and ``n_random`` draws of the size-matched control each selection names.
3. ``run_lesions``: per lesion, per-class accuracy on the other half of the CIFAR-10 subset and the relative
   response change of ``response_layer`` on the other half of the stimulus set.
4. At ``main_size``: ``main_lesions``, ``specificity`` of each selective lesion against its controls (bootstrap
   CIs), and the change of RSA alignment (``rsa_changes``) and of V4 predictivity (``v4_changes``).
5. ``site_alignment``: interventional alignment (Rajalingham & DiCarlo 2019): lesion sites (``SITES``) tiling the
   layer; correlation between each site's class-selectivity profile and the class-deficit profile its lesion causes.
6. ``size_curves``, ``save_figures`` (drawn by workbench.intervention.plots), ``save_lesions``, ``headline``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from workbench.config import ConfigError
from workbench.intervention.config import InterveneConfig
from workbench.intervention.plan import LesionKey, LesionPlan, plan_lesions
from workbench.intervention.selection import (SELECTIONS, SITES, LesionLayer, resolve_size, site_choice,
                                              stratified_halves)
from workbench.registry import nearest

__all__ = ["intervene_stage", "COMPARISONS", "LesionStudy"]

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


# -- the state the steps share ---------------------------------------------------------------------------------------

@dataclass
class StimulusProbe:
    """The stimulus set whose metadata defines the contrasts, split into a selection and a measurement half (the
    response change of a selective lesion is never measured on the images that chose its units)."""

    name: str
    stimulus_ids: list[str]
    metadata: Any                                    # pandas DataFrame, one row per stimulus
    images: Any                                      # preprocessed tensor (n, C, H, W)
    contrasts: dict[str, tuple[np.ndarray, np.ndarray]]  # category -> (target, reference) boolean masks
    selection: np.ndarray
    measurement: np.ndarray


@dataclass
class CifarProbe:
    """A class-balanced CIFAR-10 test subset: one half measures class selectivity, the other lesion deficits."""

    images: Any
    labels: np.ndarray
    classes: list[str]
    selection: np.ndarray
    evaluation: np.ndarray
    activations: np.ndarray | None = None            # clean layer output on the selection half
    class_selectivity: np.ndarray | None = None      # (n_classes, n_units) one-vs-rest d'
    clean_correct: np.ndarray | None = None          # evaluation half: right or wrong without a lesion

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def eval_labels(self) -> np.ndarray:
        return self.labels[self.evaluation]


@dataclass
class LesionEffect:
    change: np.ndarray                               # relative response change of response_layer, per stimulus
    correct: np.ndarray | None                       # CIFAR-10 evaluation half under the lesion
    responses: np.ndarray | None = None              # response_layer's output (kept at the main size, for RSA)


@dataclass
class LesionStudy:
    ctx: Any                                         # the StageContext
    config: InterveneConfig
    seed: int
    model: Any
    layer_names: list[str]
    shapes: dict[str, tuple[int, ...]]
    layer: LesionLayer
    response_layer: str
    sheet_source: str
    stimuli: StimulusProbe | None = None
    cifar: CifarProbe | None = None
    cifar_note: str = "not requested"
    clean: dict[str, np.ndarray] = field(default_factory=dict)        # clean outputs on the stimulus set
    selectivity: dict[str, np.ndarray] = field(default_factory=dict)  # category -> d' per unit (selection half)
    runner: Any = None                               # workbench.intervention.runner.LesionRunner
    probes: dict[str, Any] = field(default_factory=dict)
    plan: LesionPlan | None = None
    effects: dict[LesionKey, LesionEffect] = field(default_factory=dict)

    def fraction(self, size: int | float) -> float:
        return resolve_size(size, self.layer.n_units) / self.layer.n_units

    def wants(self, effect: str) -> bool:
        return effect in self.config.effects


# -- the stage -------------------------------------------------------------------------------------------------------

def intervene_stage(ctx) -> dict:
    """Lesion studies of ``intervene.layer``; returns the ``intervene`` metrics section."""
    t_start = time.perf_counter()
    check_data_names(ctx.config)
    study = open_study(ctx)
    load_stimulus_probe(study)
    load_cifar_probe(study)
    measure_clean(study)
    cfg = study.config
    study.plan = plan_lesions(study.layer, study.selectivity, cfg.selections, cfg.lesion_sizes, cfg.main_size,
                              cfg.n_random, study.seed)
    run_lesions(study)

    section = describe_study(study)
    section["main_lesions"] = main_lesions(study)
    section["specificity"] = specificity(study)
    if study.wants("rsa"):
        section["rsa_change"] = rsa_changes(study)
    if study.wants("v4"):
        section["v4_change"] = v4_changes(study)
    section["interventional_alignment"] = site_alignment(study)
    curves = size_curves(study)
    section["sweep"] = {cat: {measure: {kind: np.asarray(v).tolist() for kind, v in by_kind.items()}
                              for measure, by_kind in c.items() if by_kind} for cat, c in curves.items()}
    if study.cifar is not None:
        section["sweep_cifar_accuracy"] = control_accuracy_curves(study)
    save_figures(study, curves)
    save_alignment_changes(study, section)
    save_lesions(study)
    section["comparisons"] = COMPARISONS
    section["headline"] = headline(study, section)
    section["captions"] = captions(study, section)
    cite(study)
    section["seconds_compute"] = round(time.perf_counter() - t_start, 2)
    return section


# -- 1. the layer, the stimuli and the clean model -------------------------------------------------------------------

def check_data_names(cfg: InterveneConfig) -> None:
    """Every data set the config names is registered (before any work; a typo gets the nearest name)."""
    from workbench.data import RDM_SETS, RESPONSES, STIMULUS_SETS

    names = [("stimulus_set", STIMULUS_SETS, cfg.stimulus_set)]
    if "rsa" in cfg.effects:
        names.append(("rsa_rdm_set", RDM_SETS, cfg.rsa_rdm_set))
    if "v4" in cfg.effects:
        names += [("v4_dataset", STIMULUS_SETS, cfg.v4_dataset), ("v4_dataset", RESPONSES, cfg.v4_dataset)]
    for key, registry, name in names:
        if name not in registry:
            raise ConfigError(f"intervene.{key}: unknown {registry.kind} {name!r}{nearest(name, registry.names())}; "
                              f"registered: {', '.join(registry.names())}")


def open_study(ctx) -> LesionStudy:
    """The model, the lesioned layer (with its cortical sheet) and the layer whose responses are measured."""
    from workbench.models import layer_names, layer_unit_shapes

    cfg: InterveneConfig = ctx.config
    seed = int(cfg.seed if cfg.seed is not None else ctx.seed)
    model = ctx.model().to(ctx.device).eval()
    names = layer_names(model)
    shapes = layer_unit_shapes(model, ctx.preprocess.image_size)
    layer = cfg.layer or _default_layer(model, ctx.model_config, shapes)
    _check_layer("layer", layer, shapes)
    response_layer = cfg.response_layer
    if response_layer is None:
        i = names.index(layer) if layer in names else len(names) - 1
        response_layer = names[min(i + 1, len(names) - 1)]
    _check_layer("response_layer", response_layer, shapes)
    unit_shape = tuple(shapes[layer])
    positions, sheet_source = _sheet_positions(model, ctx.model_config, layer, unit_shape, cfg.default_sheet)
    return LesionStudy(ctx, cfg, seed, model, names, shapes, LesionLayer(layer, unit_shape, positions,
                                                                         cfg.smoothing_sigma),
                       response_layer, sheet_source)


def _check_layer(key: str, layer: str, shapes: dict) -> None:
    if layer not in shapes:
        raise ConfigError(f"intervene.{key} {layer!r} is not a layer of the model{nearest(layer, shapes)}; layers "
                          f"are {list(shapes)}")


def _default_layer(model, model_cfg: dict, shapes: dict[str, tuple]) -> str:
    from workbench.models import layer_names

    topo_layers = ((model_cfg or {}).get("topography") or {}).get("layers") or []
    if isinstance(topo_layers, str):
        topo_layers = [topo_layers]
    if topo_layers:
        return list(topo_layers)[-1]
    spatial = [name for name in layer_names(model) if len(shapes.get(name, ())) == 3]
    if not spatial:
        raise ConfigError("the model has no layer with a (C, H, W) output; set intervene.layer")
    return spatial[-1]


def _sheet_positions(model, model_cfg: dict, layer: str, unit_shape: tuple, default_sheet: bool
                     ) -> tuple[np.ndarray | None, str]:
    """The layer's cortical-sheet positions: the model's own, else (``default_sheet``) the default sheet, so that
    topographic and plain models get the same lesions."""
    from workbench.models import build_sheets

    sheets = dict(getattr(model, "cortical_sheets", {}) or {})
    source = "model"
    if layer not in sheets and default_sheet and len(unit_shape) == 3:
        sheets.update(build_sheets(model, model_cfg, layers=[layer]))
        source = "default (the model has none for this layer)"
    if layer not in sheets:
        return None, "none"
    pos = sheets[layer].positions
    return np.asarray(pos.detach().cpu().numpy() if hasattr(pos, "detach") else pos, dtype=np.float64), source


def _topography_weight(model_cfg: dict) -> float:
    topo = (model_cfg or {}).get("topography") or {}
    w = topo.get("weight", 0.0) if topo.get("layers") else 0.0
    if isinstance(w, dict):
        return float(max(w.values(), default=0.0))
    return float(w or 0.0)


def load_stimulus_probe(study: LesionStudy) -> None:
    from workbench.data import load_stimuli

    cfg = study.config
    stim = load_stimuli(cfg.stimulus_set)
    meta = stim.metadata
    columns = [c for c in meta.columns if c not in ("stimulus_id", "image_index")]
    for key, names in (("contrasts", [c for pair in cfg.contrasts.items() for c in pair if c is not None]),
                       ("response_categories", cfg.response_categories),
                       ("split_by", [cfg.split_by] if cfg.split_by else [])):
        for name in names:
            if name not in meta.columns:
                raise ConfigError(f"intervene.{key}: no column {name!r} in the metadata of {cfg.stimulus_set}"
                                  f"{nearest(name, columns)}; columns are {columns}")
    contrasts = {}
    for cat, ref in cfg.contrasts.items():
        target = meta[cat].to_numpy().astype(bool)
        contrasts[cat] = (target, ~target if ref is None else meta[ref].to_numpy().astype(bool) & ~target)
    # selection on one half (stratified by split_by: the fine category), measurement on the other
    strata = (meta[cfg.split_by].astype("category").cat.codes.to_numpy() if cfg.split_by
              else np.zeros(len(meta), dtype=np.int64))
    selection, measurement = stratified_halves(strata, study.seed)
    study.stimuli = StimulusProbe(cfg.stimulus_set, [str(s) for s in stim.stimulus_ids], meta,
                                  study.ctx.preprocess(stim.images), contrasts, selection, measurement)


def load_cifar_probe(study: LesionStudy) -> None:
    """The class-balanced CIFAR-10 test subset (or a note why there is none: other data, other classes)."""
    import torch

    ctx, cfg = study.ctx, study.config
    if not study.wants("cifar"):
        return
    target = str((ctx.cfg.get("data") or {}).get("_target_", "workbench.data.CIFAR10DataModule"))
    if not target.endswith("CIFAR10DataModule"):
        study.cifar_note = f"data is {target}, not CIFAR-10"
        return
    if int(ctx.model_config.get("num_classes", 10)) != 10:
        study.cifar_note = "the model does not have 10 output classes"
        return
    dm = ctx.datamodule(test_subset=int(cfg.n_cifar_test), augment=False, num_workers=0, seed=study.seed)
    dm.setup("test")
    xs, ys = [], []
    for x, y in dm.test_dataloader():
        xs.append(x)
        ys.append(y)
    labels, classes = torch.cat(ys).numpy().astype(np.int64), list(dm.classes)
    for category, targets in (cfg.cifar_targets or {}).items():
        unknown = [c for c in targets if c not in classes]
        if unknown:
            raise ConfigError(f"intervene.cifar_targets.{category}: unknown classes {unknown}"
                              f"{nearest(unknown[0], classes)}; classes are {classes}")
    selection, evaluation = stratified_halves(labels, study.seed + 1)
    study.cifar = CifarProbe(torch.cat(xs), labels, classes, selection, evaluation)


def measure_clean(study: LesionStudy) -> None:
    """Clean outputs, selectivity maps, clean CIFAR-10 correctness, and the lesion runner with its probes."""
    from workbench.intervention.effects import layer_outputs, predict_labels
    from workbench.intervention.runner import LesionRunner
    from workbench.intervention.selection import category_dprime

    cfg, stim, cifar, layer = study.config, study.stimuli, study.cifar, study.layer
    bs = int(cfg.batch_size)
    study.clean = layer_outputs(study.model, stim.images, [layer.name, study.response_layer], bs)
    for cat, (target, reference) in stim.contrasts.items():
        use = np.zeros(len(target), bool)
        use[stim.selection] = True
        use &= target | reference
        study.selectivity[cat] = category_dprime(study.clean[layer.name][use], target[use])[0]
    if cifar is not None:
        cifar.activations = layer_outputs(study.model, cifar.images[cifar.selection], [layer.name], bs)[layer.name]
        one_vs_rest = cifar.labels[cifar.selection][:, None] == np.arange(cifar.n_classes)[None, :]
        cifar.class_selectivity = category_dprime(cifar.activations, one_vs_rest)
        cifar.clean_correct = predict_labels(study.model, cifar.images[cifar.evaluation], bs) == cifar.eval_labels
    mean_reference = (cifar.activations if cifar is not None else study.clean[layer.name]).mean(0)
    reference = mean_reference.reshape(layer.unit_shape) if cfg.mode == "mean" else None
    study.runner = LesionRunner(study.model, layer.name, layer.unit_shape, mode=cfg.mode, reference=reference,
                                batch_size=bs, device=study.ctx.device, check_input=stim.images[:4],
                                leaves=study.layer_names)
    study.probes["stimuli"] = study.runner.probe(stim.images, study.clean[layer.name])
    if cifar is not None:
        study.probes["cifar"] = study.runner.probe(cifar.images[cifar.evaluation])


# -- 2. run the lesions ----------------------------------------------------------------------------------------------

def run_lesions(study: LesionStudy) -> None:
    from workbench.intervention.effects import relative_response_change

    plan, cifar = study.plan, study.cifar
    lesions = study.ctx.progress(plan.lesions.items(), desc=f"lesions of {study.layer.name}",
                                 total=len(plan.lesions), unit="lesion")
    for key, selection in lesions:
        with study.runner.lesioned(selection) as lesion:
            responses = lesion.outputs(study.probes["stimuli"], study.response_layer)
            correct = (lesion.predictions(study.probes["cifar"]) == cifar.eval_labels) if cifar is not None else None
        change = relative_response_change(study.clean[study.response_layer], responses)
        study.effects[key] = LesionEffect(change, correct, responses if key.size_index == plan.main_index else None)


# -- 3. effects at the main size -------------------------------------------------------------------------------------

def describe_study(study: LesionStudy) -> dict[str, Any]:
    plan, layer, model_cfg = study.plan, study.layer, study.ctx.model_config
    section: dict[str, Any] = {
        "layer": layer.name, "response_layer": study.response_layer, "unit_shape": list(layer.unit_shape),
        "n_units": layer.n_units, "mode": study.config.mode, "sheet": study.sheet_source,
        "topography_weight": _topography_weight(model_cfg), "topographic": _topography_weight(model_cfg) > 0,
        "selectivity": "d' (category vs reference stimuli)", "selections": dict(plan.controls),
        "lesion_sizes": [round(study.fraction(s), 6) for s in plan.sizes], "lesion_counts": plan.counts,
        "main_size": round(study.fraction(plan.sizes[plan.main_index]), 6), "n_random": plan.n_random,
        "stimuli": {"stimulus_set": study.stimuli.name, "selection": int(len(study.stimuli.selection)),
                    "measurement": int(len(study.stimuli.measurement))},
        "replayed_from_cached_layer": study.runner.replayed,
    }
    cifar = study.cifar
    if cifar is None:
        section["clean"] = {"cifar": f"skipped: {study.cifar_note}"}
        return section
    from workbench.intervention.effects import per_class_accuracy

    clean_acc = per_class_accuracy(cifar.clean_correct, cifar.eval_labels, cifar.n_classes)
    section["clean"] = {"cifar_accuracy": float(cifar.clean_correct.mean()),
                        "per_class_accuracy": dict(zip(cifar.classes, clean_acc.round(4).tolist())),
                        "n_eval_images": int(len(cifar.evaluation)),
                        "n_selectivity_images": int(len(cifar.selection))}
    return section


def main_lesions(study: LesionStudy) -> dict[str, Any]:
    """Per category and selective kind, and per control kind: what the main-size lesion changes."""
    from workbench.intervention.effects import category_response_change, class_deficits

    plan, cifar, stim = study.plan, study.cifar, study.stimuli
    columns = list(study.config.response_categories)
    membership = stim.metadata[columns].to_numpy().astype(bool)[stim.measurement]
    out: dict[str, Any] = {}
    for cat in stim.contrasts:
        out[cat] = {}
        for kind in plan.selective_kinds:
            key = plan.main(kind, cat)[0]
            effect = study.effects[key]
            entry = {"selection": plan.lesions[key].summary(),
                     "response_change_by_category": category_response_change(effect.change[stim.measurement],
                                                                             membership, columns)}
            if cifar is not None:
                deficit = class_deficits(cifar.clean_correct, effect.correct, cifar.eval_labels, cifar.n_classes)
                entry["cifar_accuracy"] = float(effect.correct.mean())
                entry["cifar_class_deficit"] = dict(zip(cifar.classes, deficit.round(4).tolist()))
            out[cat][kind] = entry
    for kind in plan.control_kinds:
        effects = [study.effects[key] for key in plan.main(kind)]
        per_draw = [category_response_change(e.change[stim.measurement], membership, columns) for e in effects]
        entry = {"n_controls": plan.n_random,
                 "response_change_by_category": {c: float(np.mean([p[c] for p in per_draw])) for c in columns}}
        if cifar is not None:
            correct = np.stack([e.correct for e in effects])
            entry["cifar_accuracy"] = float(correct.mean())
            entry["cifar_class_deficit"] = dict(zip(cifar.classes, class_deficits(
                cifar.clean_correct, correct, cifar.eval_labels, cifar.n_classes).mean(0).round(4).tolist()))
        out[kind] = entry
    return out


def specificity(study: LesionStudy) -> dict[str, Any]:
    """Each selective lesion's damage to its target against its size-matched controls, with bootstrap CIs."""
    out: dict[str, Any] = {}
    for cat in study.stimuli.contrasts:
        out[cat] = {}
        for kind in study.plan.selective_kinds:
            entry: dict[str, Any] = {"control": study.plan.controls[kind]}
            responses = _response_specificity(study, cat, kind)
            if responses is not None:
                entry["responses92"] = responses
            cifar = _cifar_specificity(study, cat, kind)
            if cifar is not None:
                entry["cifar"] = cifar
            out[cat][kind] = entry
    return out


def _response_specificity(study: LesionStudy, cat: str, kind: str) -> dict | None:
    from workbench.intervention.scoring import lesion_specificity

    target, reference = study.stimuli.contrasts[cat]
    meas = study.stimuli.measurement
    m = meas[(target | reference)[meas]]
    if not study.wants("responses92") or not target[m].any() or target[m].all():
        return None
    plan, cfg = study.plan, study.config
    selective = study.effects[plan.main(kind, cat)[0]].change[m]
    controls = np.stack([study.effects[k].change[m] for k in plan.main(plan.controls[kind])])
    out = lesion_specificity(selective, controls, target[m], n_bootstrap=int(cfg.n_bootstrap), seed=study.seed,
                             level=float(cfg.ci_level))
    out["measure"] = (f"relative response change of {study.response_layer} on held-out {cat} images (target) vs "
                      "reference images")
    return out


def _cifar_specificity(study: LesionStudy, cat: str, kind: str) -> dict | None:
    from workbench.intervention.scoring import lesion_specificity

    cifar, plan, cfg = study.cifar, study.plan, study.config
    targets = (cfg.cifar_targets or {}).get(cat)
    if cifar is None or not targets:
        return None
    target = np.isin(cifar.eval_labels, [cifar.classes.index(c) for c in targets])
    clean = cifar.clean_correct.astype(float)
    damage_selective = clean - study.effects[plan.main(kind, cat)[0]].correct
    damage_controls = np.stack([clean - study.effects[k].correct for k in plan.main(plan.controls[kind])])
    out = lesion_specificity(damage_selective, damage_controls, target, strata=cifar.eval_labels,
                             n_bootstrap=int(cfg.n_bootstrap), seed=study.seed, level=float(cfg.ci_level))
    out["measure"] = f"accuracy lost on CIFAR-10 {targets} (target) vs the other classes"
    return out


# -- 4. RSA and V4 changes at the main size --------------------------------------------------------------------------

def rsa_changes(study: LesionStudy) -> dict[str, Any]:
    """RSA (rsa_method over rsa_metric RDMs) of the response layer with each region of ``rsa_rdm_set``, clean and
    under each main-size lesion: mean over subjects of the comparison with each subject's RDM."""
    cfg, plan = study.config, study.plan
    out: dict[str, Any] = {"rdm_set": cfg.rsa_rdm_set, "metric": cfg.rsa_metric, "method": cfg.rsa_method,
                           "scored_as": "mean over subjects of the comparison with each subject's RDM "
                                        "(sessions averaged)", **COMPARISONS["rsa_v4_change"]}
    for region in cfg.rsa_regions:
        brain = _subject_rdms(cfg.rsa_rdm_set, region, study.stimuli)
        clean_score, _ = _rsa_score(study.clean[study.response_layer], brain, cfg)
        scores: dict[str, Any] = {"clean": clean_score}
        for cat in study.stimuli.contrasts:
            for kind in plan.selective_kinds:
                s, note = _rsa_score(study.effects[plan.main(kind, cat)[0]].responses, brain, cfg)
                scores[f"{cat}/{kind}"] = {"lesioned": s, "delta": s - clean_score, **({"note": note} if note else {})}
        for kind in plan.control_kinds:
            values = [_rsa_score(study.effects[key].responses, brain, cfg)[0] for key in plan.main(kind)]
            scores[kind] = _control_summary(values, clean_score, np.nanmean, np.nanmin, np.nanmax)
        out[region] = scores
    return out


def _subject_rdms(rdm_set: str, region: str, stimuli: StimulusProbe) -> np.ndarray:
    """(subject, n, n) RDMs of ``region`` (sessions averaged), in the stimulus set's order."""
    from workbench.alignment.rsa import subject_stack
    from workbench.data import load_rdms

    brain = subject_stack(load_rdms(rdm_set, region=region))
    ids = [str(s) for s in brain["stimulus"].values]
    if ids != stimuli.stimulus_ids:
        if sorted(ids) != sorted(stimuli.stimulus_ids):
            raise ConfigError(f"intervene.rsa_rdm_set {rdm_set!r} ({region}) describes other stimuli than "
                              f"intervene.stimulus_set {stimuli.name!r}; pick an RDM set of that set's images")
        brain = brain.sel(stimulus=stimuli.stimulus_ids, stimulus_b=stimuli.stimulus_ids)
    n = len(stimuli.stimulus_ids)
    return np.asarray(brain.values).reshape(-1, n, n)


def _rsa_score(responses: np.ndarray, brain: np.ndarray, cfg: InterveneConfig) -> tuple[float, str]:
    from workbench.alignment import compare_rdms, compute_rdm

    try:
        rdm = compute_rdm(responses, metric=cfg.rsa_metric)
    except ValueError as err:  # e.g. a lesion that leaves a stimulus with a constant pattern
        return float("nan"), str(err)
    return float(np.mean(np.atleast_1d(compare_rdms(rdm, brain, method=cfg.rsa_method)))), ""


def _control_summary(values: list[float], clean: float, mean: Callable = np.mean, low: Callable = min,
                     high: Callable = max) -> dict[str, Any]:
    return {"lesioned_mean": float(mean(values)), "delta_mean": float(mean(values) - clean),
            "delta_range": [float(low(values) - clean), float(high(values) - clean)]}


def v4_changes(study: LesionStudy) -> dict[str, Any]:
    """Cross-validated ridge predictivity of the ``v4_dataset`` recordings (Cowley et al. 2023 by default) from
    ``v4_layer``, clean vs under each main-size lesion."""
    cfg, plan, names = study.config, study.plan, study.layer_names
    v4_layer = cfg.v4_layer or study.response_layer
    _check_layer("v4_layer", v4_layer, study.shapes)
    out: dict[str, Any] = {"layer": v4_layer, "dataset": cfg.v4_dataset, "method": "ridge (GCV alphas), 5-fold CV",
                           "score": "median over neurons of the out-of-fold Pearson r",
                           **COMPARISONS["rsa_v4_change"]}
    layer = study.layer.name
    if v4_layer in names and layer in names and names.index(v4_layer) < names.index(layer):
        out["note"] = f"{v4_layer} lies below the lesioned layer {layer}: unchanged by construction"
        return out
    clean, responses, probe = _v4_probe(study, v4_layer)
    out["n_images"] = int(len(responses))
    out["clean"] = clean_score = _encoding_score(clean, responses, study.seed)
    for cat in study.stimuli.contrasts:
        for kind in plan.selective_kinds:
            s = _encoding_score(_lesioned_outputs(study, plan.main(kind, cat)[0], probe, v4_layer), responses,
                                study.seed)
            out[f"{cat}/{kind}"] = {"lesioned": s, "delta": s - clean_score}
    for kind in sorted(plan.control_kinds):
        values = [_encoding_score(_lesioned_outputs(study, key, probe, v4_layer), responses, study.seed)
                  for key in plan.main(kind)]
        out[kind] = _control_summary(values, clean_score)
    return out


def _v4_probe(study: LesionStudy, v4_layer: str):
    """(clean v4_layer features, responses, probe) on the recordings' images (a seeded subset of v4_n_images)."""
    from workbench.alignment.metrics.base import recording
    from workbench.data import load_stimuli
    from workbench.intervention.effects import layer_outputs

    cfg = study.config
    stim = load_stimuli(cfg.v4_dataset)
    keep = np.arange(len(stim))
    if cfg.v4_n_images is not None and int(cfg.v4_n_images) < len(stim):
        keep = np.sort(np.random.default_rng(study.seed).choice(len(stim), int(cfg.v4_n_images), replace=False))
    # the responses in the order of the images kept (the align stage's reader of a response set)
    responses = np.asarray(recording(cfg.v4_dataset, [str(s) for s in stim.stimulus_ids[keep]]).values)
    images = study.ctx.preprocess(stim.images[keep])
    clean = layer_outputs(study.model, images, [study.layer.name, v4_layer], int(cfg.batch_size))
    return clean[v4_layer], responses, study.runner.probe(images, clean[study.layer.name])


def _encoding_score(features: np.ndarray, responses: np.ndarray, seed: int) -> float:
    from workbench.alignment.regression import cross_validate_encoding

    return cross_validate_encoding(features, responses, method="ridge", n_folds=5, seed=seed,
                                   standardize=True).score


def _lesioned_outputs(study: LesionStudy, key: LesionKey, probe, layer: str) -> np.ndarray:
    with study.runner.lesioned(study.plan.lesions[key]) as lesion:
        return lesion.outputs(probe, layer)


# -- 5. interventional alignment -------------------------------------------------------------------------------------

def site_alignment(study: LesionStudy) -> dict[str, Any]:
    """Rajalingham & DiCarlo (2019) on the model: does a site's lesion hurt the classes the site prefers?"""
    from workbench.intervention.scoring import interventional_alignment

    cifar, cfg = study.cifar, study.config
    if cifar is None:
        return {"skipped": f"needs CIFAR-10 deficits: {study.cifar_note}"}
    kind = site_choice(cfg.site_kind, study.layer)
    sites = SITES.get(kind)().choose(study.layer, cfg.site_size, cifar.class_selectivity, cifar.classes,
                                     int(cfg.n_sites), study.seed)
    correct = []
    for site in study.ctx.progress(sites, desc="lesion sites", total=len(sites), unit="site"):
        with study.runner.lesioned(site) as lesion:
            correct.append(lesion.predictions(study.probes["cifar"]) == cifar.eval_labels)
    out = interventional_alignment(cifar.activations, cifar.labels[cifar.selection], sites, cifar.clean_correct,
                                   np.stack(correct), cifar.eval_labels, cifar.n_classes,
                                   n_bootstrap=int(cfg.n_bootstrap), n_permutations=int(cfg.n_permutations),
                                   seed=study.seed, level=float(cfg.ci_level))
    out.update({"site_kind": kind, "site_size": round(study.fraction(cfg.site_size), 6),
                "categories": cifar.classes, **COMPARISONS["interventional_alignment"]})
    study.ctx.cite(SITES, kind)
    return out


# -- 6. size curves, figures, lesion cache, headline -----------------------------------------------------------------

def size_curves(study: LesionStudy) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """curves[category][measure][kind]: (n_sizes,) for a selective kind, (n_random, n_sizes) for a control."""
    plan, stim, cifar = study.plan, study.stimuli, study.cifar
    kinds = plan.selective_kinds + plan.control_kinds
    curves: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for cat, (target, _) in stim.contrasts.items():
        curves[cat] = {"response_change_target": {}, "cifar_target_deficit": {}}
        held_out_targets = stim.measurement[target[stim.measurement]]
        for kind in kinds:
            curves[cat]["response_change_target"][kind] = _curve(
                study, kind, cat, lambda e: e.change[held_out_targets].mean())
        targets = (study.config.cifar_targets or {}).get(cat)
        if cifar is None or not targets:
            continue
        in_target = np.isin(cifar.eval_labels, [cifar.classes.index(c) for c in targets])
        clean_target = cifar.clean_correct[in_target].mean()
        for kind in kinds:
            curves[cat]["cifar_target_deficit"][kind] = _curve(
                study, kind, cat, lambda e: clean_target - e.correct[in_target].mean())
    return curves


def _curve(study: LesionStudy, kind: str, category: str, measure: Callable[[LesionEffect], float]) -> np.ndarray:
    plan = study.plan
    values = np.array([[measure(study.effects[key]) for key in plan.keys(kind, category, i)]
                       for i in range(len(plan.sizes))]).T
    return values if plan.is_control(kind) else values[0]


def control_accuracy_curves(study: LesionStudy) -> dict[str, list[float]]:
    plan = study.plan
    return {kind: [float(np.mean([study.effects[key].correct.mean() for key in plan.keys(kind, None, i)]))
                   for i in range(len(plan.sizes))] for kind in plan.control_kinds}


def _map_lesions(study: LesionStudy) -> tuple[str, dict[str, dict[str, Any]]]:
    """The lesions drawn on the selectivity map: the first configured selection that ran, and its control."""
    plan = study.plan
    kind = plan.selective_kinds[0]
    control = LesionKey(plan.controls[kind], None, plan.main_index, 0)
    return kind, {cat: {"selective": plan.lesions[plan.main(kind, cat)[0]], "control": plan.lesions.get(control)}
                  for cat in study.stimuli.contrasts}


def save_figures(study: LesionStudy, curves: dict) -> None:
    from workbench.intervention.plots import lesion_curves_figure, lesion_map_figure

    ctx, layer = study.ctx, study.layer
    fractions = [study.fraction(s) for s in study.plan.sizes]
    ctx.save_figure(lesion_curves_figure(fractions, curves, [
        ("response_change_target", f"response change of {study.response_layer}\non held-out target images"),
        ("cifar_target_deficit", "accuracy lost on\ntarget CIFAR-10 classes")]), "intervene_lesion_curves")
    _, lesions = _map_lesions(study)
    ctx.save_figure(lesion_map_figure(study.selectivity, lesions, layer.positions, layer.unit_shape, layer.name),
                    "intervene_lesion_map")


def save_alignment_changes(study: LesionStudy, section: dict) -> None:
    """intervene_alignment_change: the RSA (per region) and V4 changes under lesions as a picture, not a table."""
    from workbench.intervention.plots import alignment_change_figure

    changes = {f"{region} RSA": scores for region, scores in (section.get("rsa_change") or {}).items()
               if isinstance(scores, dict) and "clean" in scores}
    if "clean" in (section.get("v4_change") or {}):
        changes["V4 predictivity"] = section["v4_change"]
    if changes:
        size = study.fraction(study.plan.sizes[study.plan.main_index])
        study.ctx.save_figure(alignment_change_figure(changes, f"{100 * size:.1f}% of the units lesioned"),
                              "intervene_alignment_change")


def save_lesions(study: LesionStudy) -> None:
    """The units of every lesion and the selectivity maps (``run.lesions_path``)."""
    run = study.ctx.run
    run.save_arrays(run.lesions_path,
                    **{f"selectivity/{c}": v.astype(np.float32) for c, v in study.selectivity.items()},
                    **{key.path(): selection.units for key, selection in study.plan.lesions.items()})


def headline(study: LesionStudy, section: dict) -> list[dict[str, Any]]:
    """The interventional-alignment score and, per category, the specificity ratio of the map's lesion."""
    ctx, out = study.ctx, []
    ia = section["interventional_alignment"]
    if np.isfinite(ia.get("score", np.nan)):
        out.append(ctx.headline(
            "interventional_alignment", ia["score"], "Interventional alignment (site selectivity vs deficit r)",
            "interventional_alignment.score", unit="Pearson r", ci=ia["score_ci"],
            above_mismatched=ia["score_above_mismatched"], permutation_p=ia["permutation_p"],
            n_sites=ia["n_sites"], site_kind=ia["site_kind"], compared_to="Rajalingham & DiCarlo 2019 (qualitative)"))
    kind, _ = _map_lesions(study)
    for cat in study.stimuli.contrasts:
        entry = section["specificity"][cat][kind]
        for measure, what in (("cifar", "CIFAR target-class deficit"), ("responses92", "target response change")):
            if measure in entry and np.isfinite(entry[measure]["specificity_ratio"]):
                e = entry[measure]
                out.append(ctx.headline(
                    f"{cat}_specificity", e["specificity_ratio"],
                    f"{cat} lesion vs {entry['control'].replace('_', ' ')}: {what} ratio",
                    f"specificity.{cat}.{kind}.{measure}.specificity_ratio", unit="ratio",
                    ci=e["specificity_ratio_ci"], index=e["specificity_index"], lesion=kind))
                break
    return out


def captions(study: LesionStudy, section: dict) -> dict[str, str]:
    cfg, layer = study.config, study.layer.name
    kind, _ = _map_lesions(study)
    control = study.plan.controls[kind].replace("_", " ")
    return {
        "intervene_lesion_curves": (
            f"Lesions of {layer} ({cfg.mode} ablation) of growing size. Top: relative response change of "
            f"{study.response_layer} to held-out images of the target category; bottom: accuracy lost on the CIFAR-10 "
            "classes matching the category. Selective lesions (solid) against size-matched random controls "
            "(dashed, mean and min-max over controls)."),
        "intervene_lesion_map": (
            f"Category selectivity (d', selection half of {study.stimuli.name}) of {layer}; outlined: the "
            f"{kind.replace('_', ' ')} lesion at {100 * section['main_size']:.1f}% of the units (black) and a "
            f"{control} lesion of the same size (grey)."),
    }


def cite(study: LesionStudy) -> None:
    """The registry entries this study used: the stimulus set, the lesion selections, the RDM and response sets."""
    from workbench.data import RDM_SETS, RESPONSES, STIMULUS_SETS

    ctx, cfg = study.ctx, study.config
    ctx.cite(STIMULUS_SETS, cfg.stimulus_set)
    for kind in study.plan.selective_kinds + study.plan.control_kinds:
        ctx.cite(SELECTIONS, kind)
    if study.wants("rsa"):
        ctx.cite(RDM_SETS, cfg.rsa_rdm_set)
    if study.wants("v4"):
        ctx.cite(STIMULUS_SETS, cfg.v4_dataset)
        ctx.cite(RESPONSES, cfg.v4_dataset)
