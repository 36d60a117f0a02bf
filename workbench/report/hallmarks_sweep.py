"""Topographic hallmarks across the runs of a spatial-weight sweep: the table over seeds, patch stability, a figure.

    hallmarks = analyse_hallmarks(run_dirs)        # a list of run folders (or sweep_hallmarks(sweep_folder))
    hallmarks.runs_frame                           # one row per run: the numbers below, NaN where the run has none
    hallmarks.table                                # per spatial weight: mean and 95% t-interval over seeds of each
    hallmarks.stability                            # per weight and category: patch location stability across seeds
    write_hallmarks(hallmarks, folder)             # hallmarks_*.csv, hallmarks.json, figures/sweep_hallmarks_maps.*

Runs are grouped by ``model.topography.weight`` of their config.yaml. Per run, everything is read from what its
stages wrote, never recomputed differently:

- ``topography.orientation.<layer>``: pinwheel density (per column spacing squared), pinwheel count, mean OSI;
- ``topography.layers.<layer>.contrasts.<category>``: Moran's I of the category t-map (vs shuffled positions),
  patch count and total area (``<layer>`` is the layer the intervene stage lesioned, else the last analysed layer;
  the area from the map cache when metrics.json lists only the 10 largest patches);
- ``intervene.specificity.<category>.<selection>.<measure>``: the lesion specificity ratio (selective lesion's
  target deficit / the size-matched random lesions' deficit) with the bootstrap CI the intervene stage computed
  (``disk_peak``, the patch-like lesion, when it ran; the CIFAR-10 measure where the category has target classes,
  else the response change, as the intervene headline chooses), and the same ratio at every lesion size from the
  stage's size curves ``intervene.sweep.<category>`` (``<category>.specificity_ratio@<fraction of units>``);
- ``intervene.interventional_alignment``: score and its bootstrap CI; ``train.test_accuracy``;
- wall time: the sum of every stage's ``seconds`` in metrics.json (the time each stage took when it ran).

Two numbers need the run's model or maps and are computed here: Moran's I of the orientation map (the complex map
z = OSI exp(2i theta) per unit, from the gratings the topography stage shows the model, recomputed from
``checkpoints/model.pt``; read from ``topography.orientation.<layer>.morans_i`` instead when a run has it), and the
patch location stability across seeds (from ``cache/topography/selectivity.npz``). A number a run lacks stays
missing (NaN in the tables, null in the JSON): nothing is filled in.

The interval over seeds is Student's t (mean +- t_{0.975, n-1} s / sqrt(n)): with 2-5 seeds a bootstrap over seeds
has too few distinct resamples to give an interval. One seed gives a mean without an interval.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.report.discovery import find_run_dirs, is_run_dir, read_json, read_yaml

__all__ = ["RunHallmarks", "HallmarkSweep", "run_hallmarks", "analyse_hallmarks", "sweep_hallmarks",
           "seed_interval", "hallmarks_table", "complex_morans_i", "map_stability", "stability_across_seeds",
           "write_hallmarks", "hallmarks_figure", "WEIGHT_KEY"]

WEIGHT_KEY = "model.topography.weight"
PATCH_SELECTION = "disk_peak"  # the intervene selection that lesions a patch (a disk around the selectivity peak)
CI_LEVEL = 0.95


# -- per run --------------------------------------------------------------------------------------------------------

@dataclass
class RunHallmarks:
    """One run's hallmark numbers (``values``: flat name -> float, NaN where missing) and where its maps are."""

    path: Path
    weight: float | None
    seed: int | None
    values: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)     # name -> why a value is missing or what it is
    category_layer: str | None = None
    orientation_layer: str | None = None
    categories: list[str] = field(default_factory=list)
    topography_options: dict[str, Any] = field(default_factory=dict)
    orientation: dict[str, Any] | None = field(default=None, repr=False)  # recomputed map (z, extent, centres, ...)


def _number(x: Any) -> float:
    """A metrics value as a float; NaN for anything that is not a finite-or-NaN number (missing, null, text)."""
    if isinstance(x, bool) or x is None:
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _weight_of(config: Mapping[str, Any]) -> float | None:
    """``model.topography.weight`` as a number; a per-layer mapping gives its largest weight (as the intervene stage
    reports it); None when the config has none."""
    weight = _get(config, "model", "topography", "weight")
    if isinstance(weight, Mapping):
        numbers = [_number(v) for v in weight.values()]
        return max(numbers) if numbers else None
    value = _number(weight)
    return None if math.isnan(value) else value


def _category_layer(metrics: Mapping[str, Any]) -> str | None:
    layers = list((_get(metrics, "topography", "layers") or {}))
    lesioned = _get(metrics, "intervene", "layer")
    if lesioned in layers:
        return lesioned
    return layers[-1] if layers else None


def _specificity(metrics: Mapping[str, Any], category: str) -> tuple[dict[str, Any] | None, str]:
    """The specificity entry of the category's patch lesion (else the first selection that ran) and its measure."""
    by_kind = _get(metrics, "intervene", "specificity", category) or {}
    kind = PATCH_SELECTION if PATCH_SELECTION in by_kind else next(iter(by_kind), None)
    if kind is None:
        return None, ""
    entry = by_kind[kind]
    undefined = []
    for measure in ("cifar", "responses92"):
        if isinstance(entry.get(measure), Mapping) and math.isfinite(_number(entry[measure].get("specificity_ratio"))):
            return entry[measure], f"{kind}/{measure}" + (f" ({', '.join(undefined)} ratio undefined)"
                                                         if undefined else "")
        if isinstance(entry.get(measure), Mapping):
            undefined.append(measure)  # random lesions did not damage the target: a ratio over ~0 means nothing
    return None, f"{kind}: no finite specificity ratio"


_CURVE_OF_MEASURE = {"cifar": "cifar_target_deficit", "responses92": "response_change_target"}


def size_ratios(metrics: Mapping[str, Any], category: str, measure: str) -> dict[float, float]:
    """The patch lesion's target deficit over the mean deficit of its size-matched controls at every lesion size
    (from the intervene stage's size curves; at the main size this is its specificity ratio), by size fraction.
    NaN where the controls did no damage (as the stage's ratio)."""
    from workbench.intervention.scoring import _RATIO_MIN_DENOMINATOR

    intervene = metrics.get("intervene") or {}
    sizes = intervene.get("lesion_sizes") or []
    controls = intervene.get("selections") or {}
    curves = _get(intervene, "sweep", category, _CURVE_OF_MEASURE.get(measure, "")) or {}
    kind = PATCH_SELECTION if PATCH_SELECTION in curves else next(iter(controls), None)
    if kind not in curves or controls.get(kind) not in curves:
        return {}
    selective = np.asarray([_number(v) for v in curves[kind]])
    control = np.asarray([[_number(v) for v in row] for row in curves[controls[kind]]]).mean(0)
    if selective.shape != (len(sizes),) or control.shape != (len(sizes),):
        return {}
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(control > _RATIO_MIN_DENOMINATOR, selective / control, np.nan)
    return {float(size): float(r) for size, r in zip(sizes, ratios)}


def _interval(values: Any) -> tuple[float, float]:
    if isinstance(values, (list, tuple)) and len(values) == 2:
        return _number(values[0]), _number(values[1])
    return float("nan"), float("nan")


def _wall_time(metrics: Mapping[str, Any]) -> float:
    seconds = [_number(s.get("seconds")) for s in metrics.values() if isinstance(s, Mapping) and "seconds" in s]
    seconds = [s for s in seconds if math.isfinite(s)]
    return float(sum(seconds)) if seconds else float("nan")


def _topography_options(config: Mapping[str, Any]):
    """The run's topography options (defaults filled), so patches are found here exactly as the stage found them."""
    from workbench.config import parse
    from workbench.training.config import TopographyConfig

    return parse(TopographyConfig, dict(config.get("topography") or {}), "topography")


def _category_values(contrast: Mapping[str, Any], prefix: str) -> tuple[dict[str, float], dict[str, str]]:
    """Moran's I, patch count and total patch area of one category t-map's entry in the topography section."""
    morans = contrast.get("morans_i") if isinstance(contrast.get("morans_i"), Mapping) else {}
    patches = contrast.get("patches") or []
    n_patches = _number(contrast.get("n_patches"))
    values = {f"{prefix}.morans_i": _number(morans.get("morans_i")),
              f"{prefix}.morans_p": _number(morans.get("p_value")),
              f"{prefix}.n_patches": n_patches, f"{prefix}.patch_area_mm2": float("nan")}
    notes = {}
    if not morans:
        notes[f"{prefix}.morans_i"] = "not in metrics.json (undefined for this map, or an older topography stage)"
    if math.isfinite(n_patches) and n_patches <= len(patches):
        values[f"{prefix}.patch_area_mm2"] = float(sum(_number(p.get("area_mm2")) for p in patches))
    elif math.isfinite(n_patches):
        notes[f"{prefix}.patch_area_mm2"] = "metrics.json lists fewer patches than it counts: area from the map cache"
    return values, notes


def _lesion_values(metrics: Mapping[str, Any], category: str) -> tuple[dict[str, float], dict[str, str]]:
    entry, measure = _specificity(metrics, category)
    low, high = _interval((entry or {}).get("specificity_ratio_ci"))
    values = {f"{category}.specificity_ratio": _number((entry or {}).get("specificity_ratio")),
              f"{category}.specificity_ratio_ci_low": low, f"{category}.specificity_ratio_ci_high": high}
    # the same ratio at every lesion size, from the measure the main-size ratio used
    measure_name = measure.split("/")[1].split(" ")[0] if "/" in measure else "responses92"
    for size, ratio in size_ratios(metrics, category, measure_name).items():
        values[f"{category}.specificity_ratio@{size:g}"] = ratio
    return values, ({f"{category}.specificity_ratio": measure} if measure else {})


def run_hallmarks(path: str | os.PathLike, *, orientation: bool = True) -> RunHallmarks:
    """One run's hallmark numbers from its config.yaml and metrics.json (+ the orientation map's Moran's I from
    its checkpoint when ``orientation`` and the run has one)."""
    path = Path(path)
    config = read_yaml(path / "config.yaml") or {}
    metrics = read_json(path / "metrics.json")  # NaNs written as null are NaN again
    seed = _number(config.get("seed"))
    out = RunHallmarks(path, _weight_of(config), None if math.isnan(seed) else int(seed), {})
    out.values["test_accuracy"] = _number(_get(metrics, "train", "test_accuracy"))
    out.values["wall_time_s"] = _wall_time(metrics)
    ia = _get(metrics, "intervene", "interventional_alignment") or {}
    low, high = _interval(ia.get("score_ci"))
    out.values.update({"interventional_alignment": _number(ia.get("score")),
                       "interventional_alignment_ci_low": low, "interventional_alignment_ci_high": high})
    if "skipped" in ia:
        out.notes["interventional_alignment"] = str(ia["skipped"])
    elif ia and math.isnan(out.values["interventional_alignment"]):
        out.notes["interventional_alignment"] = (f"undefined: {ia.get('n_sites_undefined')} of {ia.get('n_sites')} "
                                                 "sites had a flat selectivity or deficit profile")

    orientation_section = _get(metrics, "topography", "orientation") or {}
    out.orientation_layer = next(iter(orientation_section), None)
    result = orientation_section.get(out.orientation_layer) or {}
    for name in ("pinwheel_density", "n_pinwheels", "mean_osi", "column_spacing_mm"):
        out.values[name] = _number(result.get(name))
    stored = result.get("morans_i")
    out.values["orientation_morans_i"] = _number(stored.get("morans_i") if isinstance(stored, Mapping) else stored)
    out.values["orientation_morans_p"] = _number(stored.get("p_value") if isinstance(stored, Mapping) else None)

    out.category_layer = _category_layer(metrics)
    contrasts = _get(metrics, "topography", "layers", out.category_layer or "", "contrasts") or {}
    out.categories = list(contrasts)
    for category in (_get(metrics, "intervene", "specificity") or {}):
        if category not in out.categories:
            out.categories.append(category)
    for category in out.categories:
        values, notes = _category_values(contrasts.get(category) or {}, category)
        lesion_values, lesion_notes = _lesion_values(metrics, category)
        out.values.update({**values, **lesion_values})
        out.notes.update({**notes, **lesion_notes})
    if "topography" in metrics:
        out.topography_options = vars(_topography_options(config))
    if orientation and out.orientation_layer and math.isnan(out.values["orientation_morans_i"]):
        _add_orientation_map(out)
    return out


# -- maps: the orientation map from the checkpoint, the category t-maps from the topography cache ---------------------

def complex_morans_i(z: np.ndarray, positions: np.ndarray, radius_mm: float, n_shuffles: int = 100,
                     seed: int = 0) -> dict[str, float]:
    """Moran's I of a complex map (an orientation map z = OSI exp(2i theta) per unit; ``hallmarks.morans_i`` on
    complex values: the variance-weighted mean of Moran's I of the real and the imaginary part), with its null over
    ``n_shuffles`` shufflings of the units' positions and the one-sided p-value."""
    from workbench.models.hallmarks import morans_i_test

    return morans_i_test(np.asarray(z, dtype=np.complex128), positions, radius_mm, n_shuffles, seed)


def orientation_of_model(model, preprocess, layer: str, positions: np.ndarray, smoothing_mm: float) -> dict:
    """The topography stage's orientation analysis of one layer, again: gratings -> tuning -> the complex map per
    unit and on the sheet (smoothed by ``smoothing_mm``), its pinwheels."""
    from workbench.data.stimuli import StimulusSet
    from workbench.features import extract_activations
    from workbench.models.hallmarks import find_pinwheels, grating_images, orientation_map, orientation_tuning

    images, meta = grating_images(size=int(preprocess.image_size or 32))
    acts = extract_activations(model, StimulusSet("gratings", pd.DataFrame(meta), images), [layer],
                               preprocess=preprocess, device="cpu", progress=False)
    tuning = orientation_tuning(np.asarray(acts[layer]), meta["orientation_deg"].to_numpy())
    z_units = np.nan_to_num(tuning.osi) * np.exp(2j * np.deg2rad(tuning.preference_deg))
    z, extent = orientation_map(tuning.preference_deg, tuning.osi, positions, smoothing_mm=smoothing_mm)
    centres, _ = find_pinwheels(z)
    return {"z_units": z_units, "z": z, "extent": extent, "centres": centres, "positions": positions}


def load_orientation_map(run: RunHallmarks) -> dict | None:
    """The run's orientation map, recomputed from its checkpoint on the positions the topography stage used
    (kept in ``run.orientation``); None, with a note, when the run lacks either."""
    from workbench.features.preprocess import Preprocess
    from workbench.run import RunDir

    if run.orientation is not None or run.orientation_layer is None:
        return run.orientation
    maps = _topography_cache(run)
    positions = None if maps is None else maps.get(f"{run.orientation_layer}/positions")
    if not (run.path / "checkpoints" / "model.pt").is_file() or positions is None:
        run.notes["orientation_map"] = "needs checkpoints/model.pt and cache/topography/selectivity.npz"
        return None
    config = read_yaml(run.path / "config.yaml") or {}
    model = RunDir(run.path, create=False).load_model()
    preprocess = Preprocess.from_config(_get(config, "model", "preprocess"))
    smoothing = float(run.topography_options.get("patch_smoothing_mm", 0.5)) / 2  # as the topography stage
    run.orientation = orientation_of_model(model, preprocess, run.orientation_layer, positions, smoothing)
    return run.orientation


def _add_orientation_map(run: RunHallmarks) -> None:
    """Moran's I of the run's orientation map (per unit, on the sheet), against shuffled positions."""
    found = load_orientation_map(run)
    if found is None:
        run.notes["orientation_morans_i"] = run.notes["orientation_map"]
        return
    opts = run.topography_options
    tuned = np.abs(found["z_units"]) > 0  # as the topography stage: units without tuning left out
    try:
        test = complex_morans_i(found["z_units"][tuned], found["positions"][tuned],
                                float(opts.get("morans_radius_mm", 0.5)), int(opts.get("morans_shuffles", 100)),
                                int(opts.get("seed", 0)))
    except ValueError as err:
        run.notes["orientation_morans_i"] = str(err)
        return
    run.values["orientation_morans_i"], run.values["orientation_morans_p"] = test["morans_i"], test["p_value"]
    run.notes["orientation_morans_i"] = "recomputed from the checkpoint (a topography stage older than this record)"


def _topography_cache(run: RunHallmarks) -> dict[str, np.ndarray] | None:
    """cache/topography/selectivity.npz of the run: '<layer>/<category>' t-values and '<layer>/positions'."""
    from workbench.run import RunDir

    path = run.path / "cache" / "topography" / "selectivity.npz"
    if not path.is_file():
        return None
    return RunDir(run.path, create=False).load_arrays(path)


def category_map(run: RunHallmarks, category: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(t-values per unit, unit positions in mm) of the run's category map on its category layer, or None."""
    maps = _topography_cache(run)
    key = f"{run.category_layer}/{category}"
    if maps is None or key not in maps or f"{run.category_layer}/positions" not in maps:
        return None
    return np.asarray(maps[key], dtype=np.float64), np.asarray(maps[f"{run.category_layer}/positions"], float)


def patch_units(values: np.ndarray, positions: np.ndarray, options: Mapping[str, Any]) -> tuple[np.ndarray, list]:
    """Boolean mask of the units inside a patch (and the patches), found with the topography stage's options."""
    from workbench.models.topography import detect_patches

    patches, _, _ = detect_patches(values, positions, threshold=float(options.get("patch_threshold", 4.0)),
                                   smoothing_mm=float(options.get("patch_smoothing_mm", 0.5)),
                                   min_units=int(options.get("patch_min_units", 20)))
    inside = np.zeros(len(values), dtype=bool)
    for patch in patches:
        inside[np.asarray(patch.units, dtype=int)] = True
    return inside, patches


def _fill_patch_areas(run: RunHallmarks) -> None:
    """Total patch area from the map cache where metrics.json lists only the largest patches."""
    for category in run.categories:
        name = f"{category}.patch_area_mm2"
        if not math.isnan(run.values.get(name, 0.0)) or math.isnan(run.values.get(f"{category}.n_patches", np.nan)):
            continue
        found = category_map(run, category)
        if found is not None:
            _, patches = patch_units(*found, run.topography_options)
            run.values[name] = float(sum(p.area_mm2 for p in patches))


# -- patch location stability across seeds ----------------------------------------------------------------------------

def _on_grid(values: np.ndarray, positions: np.ndarray, extent: tuple, pixel_mm: float) -> np.ndarray:
    from workbench.models.topography import rasterize

    grid, _, _ = rasterize(values, positions, pixel_mm, extent=extent)
    return grid


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3 or np.std(a[both]) == 0 or np.std(b[both]) == 0:
        return float("nan")
    return float(np.corrcoef(a[both], b[both])[0, 1])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A and B| / (|A| + |B|) of two boolean pixel masks; NaN when both are empty."""
    size = a.sum() + b.sum()
    return float(2 * (a & b).sum() / size) if size else float("nan")


def _top_mask(grid: np.ndarray, fraction: float) -> np.ndarray:
    finite = np.isfinite(grid)
    if not finite.any():
        return np.zeros_like(finite)
    cut = np.quantile(grid[finite], 1 - fraction)
    return finite & (np.nan_to_num(grid, nan=-np.inf) >= cut)


def map_stability(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                  options: Mapping[str, Any] | None = None, grid_pixels: int = 32, top_fraction: float = 0.1,
                  n_shifts: int = 200, seed: int = 0) -> dict[str, float]:
    """How well two runs' maps of one category agree in location on the sheet.

    ``a`` and ``b`` are (t-values per unit, positions (n, 2) in mm); units are compared by where they sit, never by
    index (seeds may place units differently): both maps are averaged onto one grid of ``grid_pixels`` pixels
    across the union of the two sheets. Returns
      r            Pearson correlation of the two t-maps over the pixels both cover;
      dice_top     Dice overlap of the two maps' most selective ``top_fraction`` of pixels (defined for any map);
      dice_patches Dice overlap of the detected patches (topography options ``options``); NaN when neither run has
                   a patch;
    and for each, its null: the same number with ``b``'s grid circularly shifted by a random offset
    (``n_shifts`` offsets; the map keeps its smoothness and its patches their shape, only their location is
    random), as ``<name>_null`` (mean) and ``<name>_p`` (one-sided, (1 + #null >= observed) / (1 + n)).
    """
    options = dict(options or {})
    (va, pa), (vb, pb) = a, b
    lo = np.minimum(pa.min(0), pb.min(0))
    hi = np.maximum(pa.max(0), pb.max(0))
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    pixel_mm = max(hi[0] - lo[0], hi[1] - lo[1]) / grid_pixels
    ga, gb = _on_grid(va, pa, extent, pixel_mm), _on_grid(vb, pb, extent, pixel_mm)
    ta, tb = _top_mask(ga, top_fraction), _top_mask(gb, top_fraction)
    patches_a = _on_grid(patch_units(va, pa, options)[0].astype(float), pa, extent, pixel_mm) >= 0.5
    patches_b = _on_grid(patch_units(vb, pb, options)[0].astype(float), pb, extent, pixel_mm) >= 0.5
    measures = {"r": lambda shift: _correlation(ga, np.roll(gb, shift, axis=(0, 1))),
                "dice_top": lambda shift: _dice(ta, np.roll(tb, shift, axis=(0, 1))),
                "dice_patches": lambda shift: _dice(patches_a, np.roll(patches_b, shift, axis=(0, 1)))}
    rng = np.random.default_rng(seed)
    shifts = [tuple(int(s) for s in rng.integers(0, ga.shape)) for _ in range(n_shifts)]
    out: dict[str, float] = {"n_pixels": int((np.isfinite(ga) & np.isfinite(gb)).sum()),
                             "n_patch_pixels_a": int(patches_a.sum()), "n_patch_pixels_b": int(patches_b.sum())}
    for name, measure in measures.items():
        observed = measure((0, 0))
        null = np.array([measure(s) for s in shifts]) if math.isfinite(observed) else np.array([])
        null = null[np.isfinite(null)]
        out[name] = observed
        out[f"{name}_null"] = float(null.mean()) if len(null) else float("nan")
        out[f"{name}_p"] = float((1 + np.sum(null >= observed)) / (1 + len(null))) if len(null) else float("nan")
    return out


def stability_across_seeds(runs: Sequence[RunHallmarks], **options: Any) -> pd.DataFrame:
    """``map_stability`` for every pair of seeds of one weight and every category both runs mapped: one row per
    (weight, category, seed pair)."""
    rows = []
    by_weight: dict[Any, list[RunHallmarks]] = {}
    for run in runs:
        by_weight.setdefault(run.weight, []).append(run)
    for weight, group in by_weight.items():
        for first, second in itertools.combinations(sorted(group, key=lambda r: (r.seed is None, r.seed or 0)), 2):
            for category in [c for c in first.categories if c in second.categories]:
                a, b = category_map(first, category), category_map(second, category)
                if a is None or b is None:
                    continue
                stats = map_stability(a, b, first.topography_options, **options)
                rows.append({"weight": weight, "category": category, "seed_a": first.seed, "seed_b": second.seed,
                             "run_a": first.path.name, "run_b": second.path.name, **stats})
    return pd.DataFrame(rows)


# -- the table over seeds ----------------------------------------------------------------------------------------------

def seed_interval(values: Iterable[float], level: float = CI_LEVEL) -> dict[str, float]:
    """Mean and Student-t interval over the finite values (one per seed): mean +- t_{(1+level)/2, n-1} s / sqrt(n).
    ``n`` counts the finite values, ``n_missing`` the others; the interval is NaN for fewer than 2 values."""
    from scipy import stats

    values = np.asarray(list(values), dtype=np.float64)
    finite = values[np.isfinite(values)]
    n = len(finite)
    out = {"mean": float(finite.mean()) if n else float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "sd": float(finite.std(ddof=1)) if n > 1 else float("nan"), "n": n, "n_missing": int(len(values) - n)}
    if n > 1:
        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * out["sd"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def _quantities(runs: Sequence[RunHallmarks]) -> list[str]:
    categories: list[str] = []
    for run in runs:
        categories += [c for c in run.categories if c not in categories]
    names = ["pinwheel_density", "n_pinwheels", "mean_osi", "column_spacing_mm", "orientation_morans_i"]
    for category in categories:
        names += [f"{category}.{q}" for q in ("morans_i", "n_patches", "patch_area_mm2", "specificity_ratio")]
        at_sizes = {k for r in runs for k in r.values if k.startswith(f"{category}.specificity_ratio@")}
        names += sorted(at_sizes, key=lambda k: float(k.rsplit("@", 1)[1]))
    return names + ["interventional_alignment", "test_accuracy", "wall_time_s"]


def _per_run_text(run: RunHallmarks, name: str) -> str:
    value = run.values.get(name, float("nan"))
    text = "missing" if math.isnan(value) else f"{value:.3g}"
    low, high = run.values.get(f"{name}_ci_low"), run.values.get(f"{name}_ci_high")
    if low is not None and not math.isnan(value):
        text += " [missing CI]" if math.isnan(low) or math.isnan(high) else f" [{low:.3g}, {high:.3g}]"
    return f"seed {run.seed}: {text}"


def hallmarks_table(runs: Sequence[RunHallmarks], level: float = CI_LEVEL) -> pd.DataFrame:
    """One row per (weight, quantity): mean, t-interval, s.d. and count over seeds, and each run's own value (with
    the per-run CI its stage reported, for the lesion specificity ratio and the interventional alignment)."""
    rows = []
    weights = sorted({r.weight for r in runs}, key=lambda w: (w is None, w or 0.0))
    for weight in weights:
        group = sorted([r for r in runs if r.weight == weight], key=lambda r: (r.seed is None, r.seed or 0))
        for name in _quantities(runs):
            stats = seed_interval([r.values.get(name, float("nan")) for r in group], level)
            rows.append({"weight": weight, "quantity": name, **stats,
                         "per_run": "; ".join(_per_run_text(r, name) for r in group)})
    return pd.DataFrame(rows, columns=["weight", "quantity", "mean", "ci_low", "ci_high", "sd", "n", "n_missing",
                                       "per_run"])


def runs_frame(runs: Sequence[RunHallmarks]) -> pd.DataFrame:
    """One row per run: weight, seed, folder and every hallmark value (NaN where the run has none)."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.values if k not in names]
    return pd.DataFrame([{"run": r.path.name, "weight": r.weight, "seed": r.seed, **r.values} for r in runs],
                        columns=["run", "weight", "seed", *names])


@dataclass
class HallmarkSweep:
    runs: list[RunHallmarks]
    table: pd.DataFrame          # hallmarks_table
    stability: pd.DataFrame      # stability_across_seeds, one row per (weight, category, seed pair)

    @property
    def runs_frame(self) -> pd.DataFrame:
        return runs_frame(self.runs)

    def stability_summary(self) -> pd.DataFrame:
        """Per weight and category: the mean over seed pairs of each stability number and its null."""
        if self.stability.empty:
            return self.stability
        numbers = [c for c in self.stability.columns if c.startswith(("r", "dice")) and c not in ("run_a", "run_b")]
        grouped = self.stability.groupby(["weight", "category"], sort=False, dropna=False)
        return grouped[numbers].mean().join(grouped.size().rename("n_pairs")).reset_index()


def analyse_hallmarks(run_dirs: Iterable[str | os.PathLike], *, orientation: bool = True,
                      level: float = CI_LEVEL, **stability_options: Any) -> HallmarkSweep:
    """The cross-run hallmark analysis of ``run_dirs`` (each a run folder: config.yaml, metrics.json, and for the
    maps its cache and checkpoint). ``orientation``: recompute the orientation map's Moran's I from each run's
    checkpoint where metrics.json lacks it. ``stability_options`` go to ``map_stability``."""
    paths = [Path(p) for p in run_dirs]
    missing = [str(p) for p in paths if not is_run_dir(p)]
    if missing:
        raise FileNotFoundError(f"not run folders (no config.yaml or metrics.json in them): {missing}; pass the "
                                "folders a workbench run wrote, or a sweep folder to sweep_hallmarks")
    runs = [run_hallmarks(p, orientation=orientation) for p in paths]
    for run in runs:
        _fill_patch_areas(run)
    return HallmarkSweep(runs, hallmarks_table(runs, level), stability_across_seeds(runs, **stability_options))


def sweep_hallmarks(sweep_dir: str | os.PathLike, **options: Any) -> HallmarkSweep:
    """``analyse_hallmarks`` on every run folder of a sweep (up to two levels below it); a run that stopped before a
    stage has that stage's numbers missing."""
    runs = find_run_dirs(sweep_dir, max_depth=2)
    if not runs:
        raise FileNotFoundError(f"no run folders under {sweep_dir}")
    return analyse_hallmarks(runs, **options)


# -- the figure: weight 0 against a weight > 0 -------------------------------------------------------------------------

def _figure_pair(runs: Sequence[RunHallmarks]) -> list[RunHallmarks]:
    """Weight 0 and the largest weight > 0, the lowest seed of each (those with maps when some lack them)."""
    chosen = []
    zero = [r for r in runs if r.weight == 0]
    positive = [r for r in runs if r.weight is not None and r.weight > 0]
    if positive:
        top = max(r.weight for r in positive)
        positive = [r for r in positive if r.weight == top]
    for group in (zero, positive):
        ordered = sorted(group, key=lambda r: (r.seed is None, r.seed or 0))
        with_maps = [r for r in ordered if (r.path / "cache" / "topography" / "selectivity.npz").is_file()]
        if with_maps or ordered:
            chosen.append((with_maps or ordered)[0])
    return chosen


def _draw_orientation(ax, run: RunHallmarks) -> None:
    from matplotlib.colors import hsv_to_rgb

    found = load_orientation_map(run)
    if found is None:
        ax.text(0.5, 0.5, "no orientation map\n(" + run.notes.get("orientation_map", "") + ")", ha="center",
                va="center", fontsize=8, transform=ax.transAxes, wrap=True)
        return
    z, extent, centres = found["z"], found["extent"], found["centres"]
    hue = (np.angle(z) / (2 * np.pi)) % 1.0
    value = np.nan_to_num(np.abs(z) / max(np.nanmax(np.abs(z)), 1e-12))
    ax.imshow(hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1)), origin="lower", extent=extent,
              interpolation="nearest")
    pixel = (extent[1] - extent[0]) / z.shape[1]
    if len(centres):
        ax.plot(extent[0] + centres[:, 1] * pixel, extent[2] + centres[:, 0] * pixel, "wo", ms=3, mfc="none")
    v = run.values
    ax.set_title(f"{run.orientation_layer}: {len(centres)} pinwheels, density {v['pinwheel_density']:.2f}\n"
                 f"mean OSI {v['mean_osi']:.2f}, Moran's I {v['orientation_morans_i']:.2f}", fontsize=8)


def _draw_category(ax, run: RunHallmarks, category: str, limit: float):
    from workbench.models.topography import rasterize

    found = category_map(run, category)
    if found is None:
        ax.text(0.5, 0.5, f"no {category} map", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        return None
    values, positions = found
    grid, extent, _ = rasterize(values, positions)
    image = ax.imshow(grid, origin="lower", extent=extent, cmap="RdBu_r", vmin=-limit, vmax=limit,
                      interpolation="nearest")
    inside, patches = patch_units(values, positions, run.topography_options)
    if patches:
        mask, _, _ = rasterize(inside.astype(float), positions, extent=extent)
        ax.contour(np.nan_to_num(mask) >= 0.5, levels=[0.5], colors="k", linewidths=1, origin="lower",
                   extent=extent)
    ax.set_title(f"{run.category_layer} {category} t-map: {len(patches)} patches\n"
                 f"Moran's I {run.values.get(f'{category}.morans_i', float('nan')):.2f}", fontsize=8)
    return image


def hallmarks_figure(runs: Sequence[RunHallmarks], category: str | None = None):
    """Weight 0 beside the largest weight > 0 (one seed each): the orientation map with its pinwheels (top) and one
    category's t-map with its patches outlined (bottom; one colour scale for both runs). None without runs."""
    from matplotlib.figure import Figure

    pair = _figure_pair(runs)
    if not pair:
        return None
    categories = [c for c in pair[0].categories if all(c in r.categories for r in pair)]
    category = category or ("face" if "face" in categories else (categories or [None])[0])
    maps = [category_map(r, category) for r in pair] if category else []
    limit = max([float(np.nanmax(np.abs(m[0]))) for m in maps if m is not None] or [1.0])
    fig = Figure(figsize=(3.8 * len(pair) + 0.8, 7.4), layout="constrained")
    axes = fig.subplots(2, len(pair), squeeze=False)
    image = None
    for column, run in enumerate(pair):
        _draw_orientation(axes[0, column], run)
        axes[0, column].set_ylabel(f"weight {run.weight:g}, seed {run.seed}\nmm" if run.weight is not None
                                   else "mm", fontsize=8)
        if category:
            image = _draw_category(axes[1, column], run, category, limit) or image
        for ax in axes[:, column]:
            ax.set_xlabel("mm", fontsize=8)
            ax.tick_params(labelsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes[1, :].tolist(), shrink=0.8, label=f"{category} selectivity (t)")
    fig.suptitle("Spatial weight 0 vs > 0: orientation preference (hue; brightness = OSI; circles: pinwheels) and "
                 "category selectivity (outlined: patches)", fontsize=9)
    return fig


# -- files and the report section --------------------------------------------------------------------------------------

METHODS = {
    "interval_over_seeds": "Student t over seeds: mean +- t_{0.975, n-1} s.d./sqrt(n); none for one seed",
    "wall_time_s": "sum of the stages' recorded seconds in metrics.json",
    "specificity_ratio": "target deficit of the patch (disk_peak) lesion / that of size-matched random lesions, at "
                         "the intervene stage's main size; per-run CI: the stage's bootstrap over stimuli and controls"
                         "; specificity_ratio@<fraction>: the same ratio at each lesion size, from the stage's size "
                         "curves (no per-run CI)",
    "orientation_morans_i": "Moran's I of z = OSI exp(2i theta) per unit, pairs closer than topography."
                            "morans_radius_mm; p against shuffled positions",
    "stability": "pairs of seeds of one weight, maps compared on the sheet (a common grid over both sheets, never by "
                 "unit index): r = correlation of the t-maps; dice_top = Dice overlap of each map's top 10% pixels; "
                 "dice_patches = Dice overlap of detected patches (missing when neither run has a patch); nulls: the "
                 "same with the second map circularly shifted by random offsets (*_null mean, *_p one-sided)",
}


def write_hallmarks(hallmarks: HallmarkSweep, folder: str | os.PathLike) -> dict[str, Path]:
    """hallmarks_table.csv, hallmarks_runs.csv, hallmarks_stability.csv, hallmarks.json and
    figures/sweep_hallmarks_maps.{png,pdf} in ``folder`` (each written atomically); returns them by name."""
    from workbench.report.sweep import _save
    from workbench.utils import atomic_write_json, atomic_write_text

    folder = Path(folder)
    out = {"table": atomic_write_text(folder / "hallmarks_table.csv", hallmarks.table.to_csv(index=False)),
           "runs": atomic_write_text(folder / "hallmarks_runs.csv", hallmarks.runs_frame.to_csv(index=False)),
           "stability": atomic_write_text(folder / "hallmarks_stability.csv",
                                          hallmarks.stability.to_csv(index=False))}
    out["json"] = atomic_write_json(folder / "hallmarks.json", {
        "methods": METHODS,
        "table": hallmarks.table.to_dict(orient="records"),
        "runs": [{"run": r.path.name, "weight": r.weight, "seed": r.seed, "values": r.values, "notes": r.notes,
                  "category_layer": r.category_layer, "orientation_layer": r.orientation_layer}
                 for r in hallmarks.runs],
        "stability": hallmarks.stability.to_dict(orient="records"),
        "stability_summary": hallmarks.stability_summary().to_dict(orient="records")})
    figure = hallmarks_figure(hallmarks.runs)
    if figure is not None:
        out["figure"] = _save(figure, folder / "figures" / "sweep_hallmarks_maps")
    return out


def _cell(row: Mapping[str, Any]) -> str:
    from workbench.report import html as H

    if row["n"] == 0:
        return '<span class="na">missing</span>'
    text = H.format_number(row["mean"])
    if row["n"] > 1:
        text += f" [{H.format_number(row['ci_low'])}, {H.format_number(row['ci_high'])}]"
    missing = f", {row['n_missing']} missing" if row["n_missing"] else ""
    text += f' <span class="na">(n={row["n"]}{missing})</span>'
    return f'<span title="{H.esc(row["per_run"])}">{text}</span>'


def _matrix(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from workbench.report import html as H

    return ('<div class="metrics"><table class="matrix"><thead><tr>'
            + "".join(f'<th scope="col">{H.esc(h)}</th>' for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table></div>")


def hallmarks_section_html(hallmarks: HallmarkSweep, figure: Path | None) -> str:
    """The sweep report's hallmarks section: the table over seeds, the stability numbers, the figure."""
    from workbench.report import html as H

    table = hallmarks.table
    weights = list(dict.fromkeys(table["weight"].tolist()))
    rows = []
    for quantity in dict.fromkeys(table["quantity"].tolist()):
        cells = [H.esc(quantity)]
        for weight in weights:
            match = table[(table["quantity"] == quantity) & (table["weight"].astype(str) == str(weight))]
            cells.append(_cell(match.iloc[0]) if len(match) else '<span class="na">missing</span>')
        rows.append(cells)
    parts = ['<section id="hallmarks"><h2>Topographic hallmarks</h2><p class="lede">Per spatial weight: mean '
             "[95% t-interval over seeds] (n seeds with the value); hover a cell for each run's value (and its own "
             "CI). Missing means no run of that weight recorded it. Files: <a href=\"hallmarks_table.csv\">"
             'hallmarks_table.csv</a>, <a href="hallmarks_runs.csv">hallmarks_runs.csv</a>, '
             '<a href="hallmarks_stability.csv">hallmarks_stability.csv</a>, <a href="hallmarks.json">'
             "hallmarks.json</a>.</p>",
             _matrix(["quantity", *(f"weight {w:g}" if isinstance(w, float) else f"weight {w}" for w in weights)],
                     rows)]
    summary = hallmarks.stability_summary()
    parts.append("<h3>Patch location stability across seeds</h3><p class=\"lede\">" + H.esc(METHODS["stability"])
                 + ".</p>")
    if summary.empty:
        parts.append('<p class="muted">No weight has two seeds with category maps: nothing to compare.</p>')
    else:
        head = ["weight", "category", "seed pairs", "t-map r (null)", "Dice top 10% (null)", "Dice patches (null)"]
        fmt = lambda r, k: ('<span class="na">missing</span>' if pd.isna(r[k]) else
                            f"{H.format_number(r[k])} (null {H.format_number(r[k + '_null'])}; "
                            f"mean p {H.format_number(r[k + '_p'])})")
        parts.append(_matrix(head, [[H.esc(str(r["weight"])), H.esc(r["category"]), str(int(r["n_pairs"])),
                                     fmt(r, "r"), fmt(r, "dice_top"), fmt(r, "dice_patches")]
                                    for _, r in summary.iterrows()]))
    if figure is not None:
        parts.append(H.figure_grid([H.figure_html(figure, "Weight 0 against the largest weight > 0 (lowest seed of "
                                                  "each): orientation maps with pinwheels, one category t-map with "
                                                  "its patches.", wide=True)]))
    return "".join(parts) + "</section>"
