"""The synthesize stage: images that drive units, category patches and V4 neural sites of the run's model.

For every target (``units``; one patch per category of the topography stage; the most predictable neuroids of
``neural_sites.dataset`` and, with ``contrast``, the best of them against all the others), ``n_seeds`` images are
synthesised (``workbench.synthesis.synthesize``) under the norm budget of the target's natural images (the
``budget_quantile`` of their L2 distances from the mean colour, in the model's input space) and compared with those
natural images projected onto the same budget. Neural sites are driven by a ridge readout fitted on one half of the
data set's images and scored also by one fitted on the other half (held out). Writes ``cache/synthesis/<target>.npz``
(``RunDir.save_synthesis``), figures ``synthesize_<group>`` and the ``synthesize`` metrics section. A target whose
synthesis fails (a dead unit, NaN gradients) is reported under ``errors`` and saves no image.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.registry import nearest
from workbench.synthesis.image import NormBudget, colour_sqrt
from workbench.synthesis.objectives import Objective, SiteContrastTarget, TargetObjective
from workbench.synthesis.synthesize import SynthesisError, SynthesisSettings, synthesize
from workbench.synthesis.transforms import Transforms
from workbench.synthesis.validate import compare_with_natural, fit_split_readouts

__all__ = ["synthesize_stage", "NaturalSet", "SynthesisJob", "run_job"]

CITATIONS = (
    "Olah, C., Mordvintsev, A., & Schubert, L. (2017). Feature visualization. Distill 2(11), e7.",
    "Walker, E. Y., Sinz, F. H., Cobos, E., et al. (2019). Inception loops discover what excites neurons most using "
    "deep predictive models. Nature Neuroscience 22, 2060-2065.",
    "Bashivan, P., Kar, K., & DiCarlo, J. J. (2019). Neural population control via deep image synthesis. "
    "Science 364(6439), eaav9436.",
)


@dataclass
class NaturalSet:
    """A stimulus set as model inputs, with the norm budget and colour statistics it defines."""

    name: str
    stimulus_ids: list[str]
    x: torch.Tensor
    budget: NormBudget
    colour: torch.Tensor


@dataclass
class SynthesisJob:
    name: str                               # file-safe: cache/synthesis/<name>.npz
    group: str                              # unit | patch | neural_site
    objective: Objective
    natural: NaturalSet
    held_out: Objective | None = None       # the readout fitted on the other half (neural sites)
    second: Objective | None = None         # a second model's readout fitted on that half (neural_sites.second_run)
    details: dict[str, Any] = field(default_factory=dict)


SETTING_KEYS = ("param", "steps", "lr", "n_seeds", "diversity", "frequency_penalty", "jitter", "rotate", "scale",
                "budget_quantile")


def synthesize_stage(ctx) -> dict:
    t_start = time.perf_counter()
    cfg = ctx.config
    check_data_names(cfg)
    model = ctx.model().to(ctx.device).eval()
    seed = int(cfg.seed if cfg.seed is not None else ctx.seed)
    settings = SynthesisSettings(param=cfg.param, steps=cfg.steps, lr=cfg.lr, diversity=cfg.diversity,
                                 frequency_penalty=cfg.frequency_penalty,
                                 transforms=Transforms(cfg.jitter, cfg.rotate, tuple(cfg.scale)))
    section: dict[str, Any] = {"device": str(ctx.device), "seeds": [seed + i for i in range(cfg.n_seeds)],
                               "settings": {k: getattr(cfg, k) for k in SETTING_KEYS},
                               "skipped": {}, "errors": {}, "targets": {}, "budgets": {}}
    jobs = build_jobs(ctx, model, seed, section)
    rows: dict[str, list] = {}
    for job in ctx.progress(jobs, "targets", unit="target"):
        try:
            entry, row = run_job(ctx, model, job, section["seeds"], settings)
        except SynthesisError as err:  # no image is saved for it; the others go on
            section["errors"][job.name] = str(err)
            ctx.log(f"synthesize: {job.name}: {err}")
            continue
        section["targets"][job.name] = entry
        rows.setdefault(job.group, []).append(row)
    save_figures(ctx, rows)
    section["summary"] = summary(section)
    section["headline"] = headline(ctx, section)
    section["captions"] = captions(section)
    ctx.cite_text(*CITATIONS)
    section["seconds_compute"] = round(time.perf_counter() - t_start, 2)
    return section


def check_data_names(cfg) -> None:
    from workbench.data import RESPONSES, STIMULUS_SETS

    names = [("stimulus_set", STIMULUS_SETS, cfg.stimulus_set)]
    if cfg.neural_sites is not None:
        names += [("neural_sites.dataset", registry, cfg.neural_sites.dataset)
                  for registry in (STIMULUS_SETS, RESPONSES)]
    for key, registry, name in names:
        if name not in registry:
            raise ConfigError(f"synthesize.{key}: unknown {registry.kind} {name!r}{nearest(name, registry.names())}; "
                              f"registered: {', '.join(registry.names())}")


def natural_set(ctx, name: str, quantile: float) -> NaturalSet:
    from workbench.data import STIMULUS_SETS, load_stimuli

    stimuli = load_stimuli(name)
    ctx.cite(STIMULUS_SETS, name)
    x = ctx.preprocess(stimuli.images)
    budget = NormBudget.from_stimuli(x, quantile, source=f"{name}, quantile {quantile}")
    return NaturalSet(name, [str(s) for s in stimuli.stimulus_ids], x, budget, colour_sqrt(x))


# -- targets ---------------------------------------------------------------------------------------------------------
def build_jobs(ctx, model, seed: int, section: dict) -> list[SynthesisJob]:
    cfg = ctx.config
    jobs: list[SynthesisJob] = []
    if cfg.units or cfg.patches is not None:
        natural = natural_set(ctx, cfg.stimulus_set, cfg.budget_quantile)
        section["budgets"][natural.name] = natural.budget.describe()
        example = natural.x[:1].to(ctx.device)
        for spec in cfg.units:
            unit = tuple(spec.unit) if isinstance(spec.unit, list) else spec.unit
            target = {"kind": "unit", "layer": spec.layer, "unit": unit, "channel": spec.channel}
            what = f"c{spec.channel}" if spec.channel is not None else "u" + "_".join(map(str, np.atleast_1d(unit)))
            jobs.append(SynthesisJob(safe_name(f"unit_{spec.layer}_{what}"), "unit",
                                     TargetObjective(model, target, example), natural))
        if cfg.patches is not None:
            jobs += patch_jobs(ctx, model, natural, example, section["skipped"])
    if cfg.neural_sites is not None:
        jobs += neural_site_jobs(ctx, model, seed, section)
    return jobs


def patch_jobs(ctx, model, natural: NaturalSet, example, skipped: dict) -> list[SynthesisJob]:
    from workbench.attribution.targets import PatchTarget, patch_layers, patch_sheet_positions

    layers = patch_layers(ctx.config.patches, ctx.model_config)
    topography = ctx.run.metrics().get("topography", {}).get("layers", {})
    jobs = []
    for layer, positions in patch_sheet_positions(model, layers, skipped).items():
        for category, (centre, radius, how) in patch_places(ctx, layer, positions, topography.get(layer)).items():
            target = PatchTarget(layer=layer, centre=centre, radius=radius)
            jobs.append(SynthesisJob(safe_name(f"patch_{layer}_{category}"), "patch",
                                     TargetObjective(model, target, example), natural,
                                     details={"category": category, "placed_by": how}))
    return jobs


def patch_places(ctx, layer: str, positions: np.ndarray, topography: dict | None) -> dict[str, tuple]:
    """{category: (centre, radius, how)}: the topography stage's largest patch of each category, else a disk
    around its most selective unit; without a topography stage one disk at the sheet's centre."""
    cfg = ctx.config.patches
    lo, hi = positions.min(0), positions.max(0)
    default_radius = float(cfg.radius_fraction) * float((hi - lo).max())
    if not topography:
        return {"centre": (tuple(((lo + hi) / 2).tolist()), default_radius, "sheet centre (no topography stage)")}
    maps = ctx.run.load_arrays(ctx.run.topography_maps_path) if ctx.run.topography_maps_path.is_file() else {}
    places = {}
    for category in cfg.categories:
        found = (topography.get("contrasts", {}).get(category) or {}).get("patches") or []
        if found:
            radius = max(float(np.sqrt(found[0]["area_mm2"] / np.pi)), default_radius / 4)
            places[category] = (tuple(found[0]["centroid_mm"]), radius, "largest patch of the topography stage")
        elif f"{layer}/{category}" in maps:
            peak = positions[int(np.argmax(maps[f"{layer}/{category}"]))]
            places[category] = (tuple(peak.tolist()), default_radius, "most selective unit (no patch detected)")
    return places


def neural_site_jobs(ctx, model, seed: int, section: dict) -> list[SynthesisJob]:
    """The most predictable neuroids (mean held-out r of the two split readouts) and, with ``contrast``, the best
    of them against all the others: readout A drives, readout B scores."""
    from workbench.alignment.metrics.base import recording
    from workbench.data import RESPONSES, load_stimuli
    from workbench.features import extract_activations

    sites = ctx.config.neural_sites
    natural = natural_set(ctx, sites.dataset, ctx.config.budget_quantile)
    section["budgets"][natural.name] = natural.budget.describe()
    ctx.cite(RESPONSES, sites.dataset)
    layer = sites.layer or _best_align_layer(ctx, sites.dataset) or "conv4"
    acts = extract_activations(model, load_stimuli(sites.dataset), [layer], preprocess=ctx.preprocess,
                               device=ctx.device, progress=False)
    responses = recording(sites.dataset, [str(s) for s in acts.stimulus_ids])
    ids = [str(s) for s in responses.coords["neuroid_id"].values]
    readouts = fit_split_readouts(acts[layer], responses.values, seed=seed, device=ctx.device)
    predictability = (readouts[0]["held_out_r"] + readouts[1]["held_out_r"]) / 2
    best = [int(i) for i in np.argsort(-predictability, kind="stable")[:sites.n_neuroids]]
    section["neural_sites"] = {"dataset": sites.dataset, "layer": layer, "n_neuroids": len(ids),
                               "held_out_r": {ids[i]: float(predictability[i]) for i in best},
                               "median_held_out_r": float(np.median(predictability))}
    example = natural.x[:1].to(ctx.device)

    def objective(readout: dict, neuroid: int, contrast: bool, half: str) -> TargetObjective:
        kind = SiteContrastTarget if contrast else _site
        target = kind(layer=layer, coef=readout["coef"], intercept=readout["intercept"], neuroid=neuroid,
                      neuroid_id=ids[neuroid], source=f"split readout {half} of {sites.dataset}")
        return TargetObjective(model, target, example)

    second = second_model_objectives(ctx, sites, layer, responses.values, seed, natural) if sites.second_run else None
    pairs = [(i, False) for i in best] + ([(best[0], True)] if sites.contrast and len(ids) > 1 else [])
    return [SynthesisJob(safe_name(f"{'contrast' if contrast else 'site'}_{ids[i]}"), "neural_site",
                         objective(readouts[0], i, contrast, "A"), natural, objective(readouts[1], i, contrast, "B"),
                         second(i, contrast) if second else None,
                         details={"neuroid_id": ids[i], "held_out_r": float(predictability[i])})
            for i, contrast in pairs]


def second_model_objectives(ctx, sites, layer: str, responses: np.ndarray, seed: int, natural: NaturalSet):
    """``(neuroid, contrast) -> Objective``: the trained model of ``sites.second_run`` read out by a ridge readout
    fitted on the same held-out half (B) of the images. Its input must be the run's model's (same preprocessing)."""
    from workbench.data import load_stimuli
    from workbench.features import extract_activations
    from workbench.features.preprocess import Preprocess
    from workbench.run import RunDir

    other = RunDir(sites.second_run, create=False)
    preprocess = Preprocess.from_config((other.config().get("model") or {}).get("preprocess"))
    if preprocess != ctx.preprocess:
        raise ConfigError(f"synthesize.neural_sites.second_run: its model takes {preprocess}, this run's "
                          f"{ctx.preprocess}; the same images must be valid inputs of both models")
    model = other.load_model().to(ctx.device).eval()
    second_layer = sites.second_layer or layer
    acts = extract_activations(model, load_stimuli(sites.dataset), [second_layer], preprocess=preprocess,
                               device=ctx.device, progress=False)
    readout = fit_split_readouts(acts[second_layer], responses, seed=seed, device=ctx.device)[1]
    example = natural.x[:1].to(ctx.device)

    def make(neuroid: int, contrast: bool) -> TargetObjective:
        kind = SiteContrastTarget if contrast else _site
        return TargetObjective(model, kind(layer=second_layer, coef=readout["coef"], intercept=readout["intercept"],
                                           neuroid=neuroid, source=f"{sites.second_run}, split readout B"), example)

    return make


def _site(**kwargs):
    from workbench.attribution.targets import NeuralSiteTarget

    return NeuralSiteTarget(**kwargs)


def _best_align_layer(ctx, dataset: str) -> str | None:
    align = ctx.run.metrics().get("align", {})
    for metric in ("ridge", "pls"):
        layer = (align.get(metric, {}).get(dataset) or {}).get("best_layer")
        if layer:
            return layer
    return None


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# -- one target ------------------------------------------------------------------------------------------------------
def run_job(ctx, model, job: SynthesisJob, seeds: list[int], settings: SynthesisSettings):
    """Synthesise, compare with the natural images under the same budget (and the held-out readout), save."""
    from workbench.synthesis.plots import SynthesisRow

    nat = job.natural
    result = synthesize(model, job.objective, shape=tuple(nat.x.shape[1:]), budget=nat.budget, seeds=seeds,
                        settings=settings, colour=nat.colour, device=ctx.device, desc=f"synthesize {job.name}")
    top_k = ctx.config.top_natural
    comparison = compare_with_natural(job.objective, result.images, nat.x, nat.budget, top_k)
    entry: dict[str, Any] = {"target": job.objective.describe(), **job.details, "drive": comparison.summary(),
                             "budget_norms": nat.budget.norms(result.images).tolist(),
                             "history": [float(result.history[0]), float(result.history[-1])]}
    held = None
    if job.held_out is not None:
        held_out = compare_with_natural(job.held_out, result.images, nat.x, nat.budget, top_k)
        entry["held_out"] = held_out.summary()
        held = held_out.synthetic
    if job.second is not None:
        entry["second_model"] = compare_with_natural(job.second, result.images, nat.x, nat.budget, top_k).summary()
    ctx.run.save_synthesis(job.name, **result.arrays(), top_natural=comparison.top,
                           natural_values=comparison.natural, natural_ids=np.asarray(nat.stimulus_ids))
    show = lambda x: ctx.preprocess.invert(nat.budget.project(x.float())).permute(0, 2, 3, 1).numpy()  # noqa: E731
    label = job.objective.label + (f" ({job.details['category']})" if "category" in job.details else "")
    row = SynthesisRow(label, show(result.images), comparison.synthetic, show(nat.x[comparison.top]),
                       comparison.natural[comparison.top], [nat.stimulus_ids[i] for i in comparison.top], held)
    return entry, row


FIGURES = {"unit": "synthesize_units", "patch": "synthesize_patches", "neural_site": "synthesize_neural_sites"}


def save_figures(ctx, rows: dict[str, list]) -> None:
    from workbench.synthesis.plots import synthesis_figure

    titles = {"unit": "Units", "patch": "Cortical patches", "neural_site": "V4 neural sites (drive: readout A; "
              "held-out: readout B)"}
    for group, group_rows in rows.items():
        title = f"{titles.get(group, group)}: synthesised (red) vs best natural images, same norm budget"
        ctx.save_figure(synthesis_figure(group_rows, title), FIGURES[group])


# -- summary and headline --------------------------------------------------------------------------------------------
def summary(section: dict) -> dict[str, Any]:
    entries = section["targets"].values()
    out: dict[str, Any] = {"n_targets": len(section["targets"]), "n_errors": len(section["errors"])}
    if entries:
        out["fraction_above_best_natural"] = float(np.mean([e["drive"]["fraction_above_best_natural"]
                                                            for e in entries]))
        out["median_gain_sd"] = float(np.median([e["drive"]["gain_sd"] for e in entries]))
    held = [e["held_out"] for e in entries if "held_out" in e]
    if held:
        out["held_out_fraction_above_best_natural"] = float(np.mean([h["fraction_above_best_natural"]
                                                                     for h in held]))
        out["held_out_median_gain_sd"] = float(np.median([h["gain_sd"] for h in held]))
    second = [e["second_model"] for e in entries if "second_model" in e]
    if second:
        out["second_model_fraction_above_best_natural"] = float(np.mean([h["fraction_above_best_natural"]
                                                                         for h in second]))
    return out


def captions(section: dict) -> dict[str, str]:
    """Figure captions: what the numbers over the images are."""
    budgets = ", ".join(f"{name}: L2 radius {b['radius']:.3g}" for name, b in section["budgets"].items())
    common = (f"Red: synthesised images ({len(section['seeds'])} seeds) with their predicted drive; grey: the natural "
              f"images that drive the target most, with theirs. All under the same norm budget ({budgets}).")
    return {"synthesize_units": f"Units. {common}", "synthesize_patches": f"Cortical patches (mean activity of the "
            f"units of a disk on the sheet). {common}",
            "synthesize_neural_sites": f"V4 neural sites: the drive is the readout fitted on one half of the images "
            f"(A), 'held-out' the readout fitted on the other half (B); the natural images are ranked by A. {common}"}


def headline(ctx, section: dict) -> list[dict[str, Any]]:
    s = section["summary"]
    cards = []
    if "fraction_above_best_natural" in s:
        cards.append(ctx.headline("above_natural", s["fraction_above_best_natural"],
                                  "synthesised images driving their target more than the best natural image "
                                  "(same norm budget)", "summary.fraction_above_best_natural", unit="fraction",
                                  n_targets=s["n_targets"], ci="none (a count over targets and seeds)"))
    if "held_out_fraction_above_best_natural" in s:
        cards.append(ctx.headline("held_out_above_natural", s["held_out_fraction_above_best_natural"],
                                  "V4 sites: images above the best natural image under the held-out readout",
                                  "summary.held_out_fraction_above_best_natural", unit="fraction",
                                  ci="none (a count over sites and seeds)"))
    return cards
