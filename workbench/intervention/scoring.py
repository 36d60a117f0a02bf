"""Interventional alignment: does silencing a model site do what silencing the matching brain site does?

Two analyses, both on plain arrays:

* :func:`interventional_alignment` (the Rajalingham & DiCarlo 2019 analysis): for several lesion sites, correlate
  the site's selectivity profile across object categories (mean d' of its units, measured on images the deficits
  are *not* measured on) with the profile of behavioural deficits its lesion causes across the same categories. A
  site whose deficit follows its own selectivity better than the other sites' selectivity gives a positive
  matched-minus-mismatched correlation; a permutation of the site pairing gives its null distribution.
* :func:`lesion_specificity`: the damage a category-selective lesion does to its target category, against size-
  matched random lesions (the face-patch-inactivation / ITN comparison).

Both report percentile bootstrap intervals over stimuli (resampled within class, so every class keeps its count).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from workbench.intervention.effects import percentile_ci, stratified_bootstrap_indices

# Random-lesion damage at or below this is "no damage": a specificity ratio over it is undefined (NaN).
_RATIO_MIN_DENOMINATOR = 1e-9

__all__ = ["site_profiles", "profile_correlations", "interventional_alignment", "lesion_specificity"]


def site_profiles(unit_selectivity: Any, sites: Sequence[Any]) -> np.ndarray:
    """(n_sites, n_categories): the mean selectivity of each site's units (sites: Selections or index arrays)."""
    d = np.asarray(unit_selectivity, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"unit selectivity must be (n_categories, n_units), got shape {d.shape}")
    rows = []
    for k, site in enumerate(sites):
        idx = np.asarray(site.units if hasattr(site, "units") else site, dtype=np.int64)
        if idx.size == 0:
            raise ValueError(f"site {k} is empty: every lesion site needs at least one unit")
        if idx.max() >= d.shape[1] or idx.min() < 0:
            raise ValueError(f"site {k} has unit indices outside [0, {d.shape[1] - 1}]")
        rows.append(d[:, idx].mean(1))
    if not rows:
        raise ValueError("no lesion sites given")
    return np.stack(rows)


def _centred_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows minus their means, and their norms; NaN norm for a constant row (its correlation is undefined).

    A constant non-zero row (every class lost 0.2) centres to rounding noise of about eps * |value| rather than to
    0, so "constant" is a norm within a few ulps of the row's magnitude, not a norm of exactly 0."""
    centred = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1)
    rounding = 4 * x.shape[1] * np.finfo(np.float64).eps * np.abs(x).max(1, initial=0.0)
    return centred, np.where(norm > rounding, norm, np.nan)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row of a with every row of b: (n_a, n_b); NaN where a row is constant."""
    a, na = _centred_rows(a)
    b, nb = _centred_rows(b)
    return (a @ b.T) / np.outer(na, nb)


def profile_correlations(selectivity_profiles: Any, deficit_profiles: Any) -> dict[str, Any]:
    """Matched (own site) and mismatched (other sites) correlations between selectivity and deficit profiles."""
    s = np.asarray(selectivity_profiles, dtype=np.float64)
    dfc = np.asarray(deficit_profiles, dtype=np.float64)
    if s.shape != dfc.shape or s.ndim != 2:
        raise ValueError(f"selectivity and deficit profiles must both be (n_sites, n_categories), got {s.shape} "
                         f"and {dfc.shape}")
    if s.shape[1] < 3:
        raise ValueError(f"a profile correlation needs at least 3 categories, got {s.shape[1]}")
    r = _row_corr(s, dfc)
    matched = np.diag(r)
    off = r[~np.eye(r.shape[0], dtype=bool)]
    # A site whose lesion hurt every class alike (flat deficit profile, e.g. no change at all) or whose units prefer
    # no class (flat selectivity profile) has an undefined r: it is left out of the means and counted.
    return {"matched": matched, "mean_matched": _finite_mean(matched), "mean_mismatched": _finite_mean(off),
            "matrix": r, "n_sites_undefined": int(np.isnan(matched).sum())}


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def interventional_alignment(sel_responses: Any, sel_labels: Any, sites: Sequence[Any], clean_correct: Any,
                             lesion_correct: Any, eval_labels: Any, n_classes: int, n_bootstrap: int = 1000,
                             n_permutations: int = 1000, seed: int = 0, level: float = 0.95,
                             progress: bool = False) -> dict[str, Any]:
    """The Rajalingham & DiCarlo (2019) site analysis on a model.

    sel_responses: (n_sel_images, n_units) clean responses of the lesioned layer to the *selectivity split*;
    sel_labels: their classes. sites: the lesion sites (Selections / unit indices), one per row of
    ``lesion_correct`` (n_sites, n_eval_images): per-image correctness on the *evaluation split* with that site
    lesioned; clean_correct (n_eval_images,) without a lesion; eval_labels their classes.

    Returns per-site correlations, ``score`` = mean matched r (site selectivity profile vs its own deficit profile),
    ``score_above_mismatched`` = score minus the mean r with other sites' deficits, a permutation p-value of the
    latter (site pairing shuffled), and bootstrap intervals over both image splits. A site with a flat selectivity
    or deficit profile has an undefined r (NaN in ``per_site_r``), is left out of the means and is counted in
    ``n_sites_undefined``.
    """
    x = np.asarray(sel_responses, dtype=np.float64)
    sel_labels = np.asarray(sel_labels)
    eval_labels = np.asarray(eval_labels)
    lesion_correct = np.asarray(lesion_correct)
    if lesion_correct.ndim != 2 or lesion_correct.shape[0] != len(sites):
        raise ValueError(f"lesion_correct must be (n_sites={len(sites)}, n_eval_images), got {lesion_correct.shape}")
    if len(sites) < 2:
        raise ValueError("interventional alignment needs at least 2 lesion sites")
    statistic = _SiteProfiles(x, sel_labels, sites, clean_correct, lesion_correct, eval_labels, n_classes)
    s_prof, d_prof = statistic()
    corr = profile_correlations(s_prof, d_prof)
    score = corr["mean_matched"]
    above = score - corr["mean_mismatched"]

    rng = np.random.default_rng(seed)  # one stream: the permutations first, then the bootstrap resamples
    null = _permutation_null(s_prof, d_prof, n_permutations, rng)
    p_value = float((1 + np.sum(null >= above)) / (1 + n_permutations)) if np.isfinite(above) else float("nan")
    boot_score, boot_above = _bootstrap_scores(statistic, sel_labels, eval_labels, n_bootstrap, rng, progress)
    return {
        "score": score,
        "score_ci": percentile_ci(boot_score, level),
        "score_above_mismatched": above,
        "score_above_mismatched_ci": percentile_ci(boot_above, level),
        "mean_mismatched_r": corr["mean_mismatched"],
        "permutation_p": p_value,
        "n_sites": len(sites),
        "n_categories": n_classes,
        "per_site_r": corr["matched"].tolist(),
        "n_sites_undefined": corr["n_sites_undefined"],
        "selectivity_profiles": s_prof.tolist(),
        "deficit_profiles": d_prof.tolist(),
        "n_bootstrap": n_bootstrap,
        "n_permutations": n_permutations,
        "ci_level": level,
    }


class _SiteProfiles:
    """(selectivity profiles, deficit profiles) of the sites, on all images or on a resample of each split."""

    def __init__(self, x: np.ndarray, sel_labels: np.ndarray, sites: Sequence[Any], clean_correct: Any,
                 lesion_correct: np.ndarray, eval_labels: np.ndarray, n_classes: int):
        # Only the units inside some site matter: keep those columns (much less work per bootstrap sample).
        site_idx = [np.asarray(s.units if hasattr(s, "units") else s, dtype=np.int64) for s in sites]
        used = np.unique(np.concatenate(site_idx))
        remap = {u: i for i, u in enumerate(used)}
        self.local_sites = [np.array([remap[u] for u in idx]) for idx in site_idx]
        self.x_used = x[:, used]
        self.sel_labels, self.eval_labels, self.n_classes = sel_labels, eval_labels, n_classes
        self.clean_correct, self.lesion_correct = clean_correct, lesion_correct

    def __call__(self, sel_index: np.ndarray | None = None,
                 eval_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        from workbench.intervention.effects import class_deficits
        from workbench.intervention.selection import category_dprime

        xs, ls = self.x_used, self.sel_labels
        if sel_index is not None:
            xs, ls = xs[sel_index], ls[sel_index]
        dprime = category_dprime(xs, ls[:, None] == np.arange(self.n_classes)[None, :])
        s_prof = site_profiles(dprime, self.local_sites)
        d_prof = class_deficits(self.clean_correct, self.lesion_correct, self.eval_labels, self.n_classes,
                                eval_index)
        return s_prof, d_prof


def _permutation_null(s_prof: np.ndarray, d_prof: np.ndarray, n_permutations: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Matched-minus-mismatched r with each site's selectivity paired with another site's deficits."""
    null = np.empty(n_permutations)
    for p in range(n_permutations):
        c = profile_correlations(s_prof, d_prof[rng.permutation(len(s_prof))])
        null[p] = c["mean_matched"] - c["mean_mismatched"]
    return null


def _bootstrap_scores(statistic: _SiteProfiles, sel_labels: np.ndarray, eval_labels: np.ndarray, n_bootstrap: int,
                      rng: np.random.Generator, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Score and score above mismatched on resamples of both image splits (within class)."""
    boot_score = np.full(n_bootstrap, np.nan)
    boot_above = np.full(n_bootstrap, np.nan)
    sel_boot = stratified_bootstrap_indices(sel_labels, n_bootstrap, rng)
    eval_boot = stratified_bootstrap_indices(eval_labels, n_bootstrap, rng)
    iterator: Any = range(n_bootstrap)
    if progress:
        from tqdm.auto import tqdm

        from workbench.logs import progress_disabled

        iterator = tqdm(iterator, desc="bootstrap interventional alignment", leave=False, disable=progress_disabled())
    for b in iterator:
        c = profile_correlations(*statistic(sel_boot[b], eval_boot[b]))
        boot_score[b] = c["mean_matched"]
        boot_above[b] = c["mean_matched"] - c["mean_mismatched"]
    return boot_score, boot_above


def lesion_specificity(damage_selective: Any, damage_random: Any, target: Any, strata: Any = None,
                       n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Target-category damage of a selective lesion against size-matched random lesions.

    damage_selective: (n_stimuli,) per-stimulus damage of the selective lesion (e.g. 1 - 0 for an image the lesion
    made the model get wrong, or the relative response change of a stimulus). damage_random: (n_controls,
    n_stimuli) the same for each random control. target: boolean (n_stimuli,), the lesion's target category.
    strata: labels to resample within (default: target vs non-target).

    Returns D_T and D_O (mean damage on target / other stimuli) for both lesion kinds,
    ``specificity_ratio`` = D_T(selective) / D_T(random), and ``specificity_index`` =
    [D_T - D_O](selective) - [D_T - D_O](random), each with a bootstrap interval (stimuli resampled within strata,
    random controls resampled with replacement).
    """
    sel = np.asarray(damage_selective, dtype=np.float64)
    rnd = np.asarray(damage_random, dtype=np.float64)
    tgt = np.asarray(target, dtype=bool)
    if rnd.ndim == 1:
        rnd = rnd[None]
    if sel.ndim != 1 or rnd.shape[1] != sel.size or tgt.shape != sel.shape:
        raise ValueError(f"shapes do not match: selective {sel.shape}, random {rnd.shape}, target {tgt.shape}; "
                         "expected (n,), (n_controls, n), (n,)")
    if not tgt.any() or tgt.all():
        raise ValueError("the target category must contain some but not all stimuli")
    strata = tgt.astype(np.int64) if strata is None else np.asarray(strata)
    if strata.shape != sel.shape:
        raise ValueError(f"strata must label each of the {sel.size} stimuli")
    _, strata = np.unique(strata, return_inverse=True)

    def stats(index=None, controls=None):
        s, r, t = sel, rnd, tgt
        if index is not None:
            s, r, t = s[index], r[:, index], t[index]
        if controls is not None:
            r = r[controls]
        dt_s, do_s = s[t].mean(), s[~t].mean()
        dt_r, do_r = r[:, t].mean(1).mean(), r[:, ~t].mean(1).mean()
        # a ratio over a random-lesion damage that is zero (up to rounding) or negative means nothing
        ratio = dt_s / dt_r if dt_r > _RATIO_MIN_DENOMINATOR else np.nan
        return dt_s, do_s, dt_r, do_r, ratio, (dt_s - do_s) - (dt_r - do_r)

    point = stats()
    rng = np.random.default_rng(seed)
    idx = stratified_bootstrap_indices(strata, n_bootstrap, rng)
    ctl = rng.integers(0, rnd.shape[0], size=(n_bootstrap, rnd.shape[0]))
    boots = np.array([stats(idx[b], ctl[b]) for b in range(n_bootstrap)])
    names = ["target_damage_selective", "other_damage_selective", "target_damage_random", "other_damage_random",
             "specificity_ratio", "specificity_index"]
    out: dict[str, Any] = {}
    for k, name in enumerate(names):
        out[name] = float(point[k])
        out[f"{name}_ci"] = percentile_ci(boots[:, k], level)
    # The ratio is only interpretable when random lesions reliably damage the target (denominator > 0).
    out["ratio_denominator_nonpositive_fraction"] = float(np.mean(boots[:, 2] <= _RATIO_MIN_DENOMINATOR))
    # One-sided bootstrap p-value that the selective lesion hurts its target no more than random lesions do.
    out["p_index_le_0"] = float((1 + np.sum(boots[:, 5] <= 0)) / (1 + n_bootstrap))
    out.update({"n_target": int(tgt.sum()), "n_other": int((~tgt).sum()), "n_controls": int(rnd.shape[0]),
                "n_bootstrap": n_bootstrap, "ci_level": level})
    return out
