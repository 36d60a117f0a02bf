"""Noise ceilings for encoding models from trial-level data.

``split_half_ceiling``: for each split, the valid repeats of every (stimulus, neuroid) cell are put in random order
and halved (each cell keeps its own number of valid repeats; NaN marks a repeat that was not shown), each half is
averaged, and the per-neuroid Pearson r between the two half-means across stimuli is corrected with the
Spearman-Brown formula c = f r / (1 + (f - 1) r) (f = 2 unless ``corrected_to="all_repeats"``).

Options (config keys ``ceiling_halves``, ``ceiling_corrected_to``, ``ceiling_spearman_brown_order`` of the ridge and
pls metrics):

* ``halves="equal"`` (default): a cell with an odd number k of valid repeats drops one of them at random in each
  split, so both halves average (k - 1) / 2 repeats. Spearman-Brown with factor 2 is exact only for halves of equal
  size; the ceiling is then the reliability of a mean of 2 floor(k / 2) repeats. ``"unequal"``: the halves take
  floor(k / 2) and the remaining ceil(k / 2) repeats (every repeat used; what this module did before).
* ``corrected_to="kept_repeats"`` (default): Spearman-Brown factor 2, i.e. c is the reliability of a mean of the
  repeats the two halves hold together. ``"all_repeats"`` (equal halves only): c is the reliability of the mean of
  all k valid repeats, the recorded means a model is scored against. With noise variance s2 per repeat, a half-mean
  of m = floor(k / 2) repeats has noise s2 / m and the full mean s2 / k; averaged over stimuli, the factor is
  mean(1 / m) / mean(1 / k) per neuroid (2 when every k is even; 2.16 for V4 210325, where k is 6-10).
* ``spearman_brown_order="per_split"`` (default): correct each split's r, then average the corrected values over splits.
  This is Brain-Score's order (brainscore_vision/metrics/internal_consistency/ceiling.py: ``SplitHalfWrapper``
  corrects each split's per-neuroid consistency with n=2 before the median over neuroids and the mean over splits).
  ``"mean_r"``: average r over splits, then correct the mean once. Spearman-Brown is concave (for r > -1 / (f - 1)),
  so this is not below the per-split value; the two differ little when r varies little between splits (V4 210325:
  1e-4 in the median).

Ceiled scores (both are reported because Brain-Score changed its convention):
* ``r2_over_c`` = r^2 / c: explained variance relative to the explainable variance. c estimates the squared
  correlation of the data with its noise-free signal, so r^2 / c is the fraction of explainable variance.
* ``r_over_c_sq`` = (r / c)^2: the square of the classic Brain-Score ceiled correlation r / c.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from workbench.alignment.regression import pearson_per_column

HALVES = ("equal", "unequal")
SPEARMAN_BROWN_ORDERS = ("per_split", "mean_r")
CORRECTED_TO = ("kept_repeats", "all_repeats")


def spearman_brown(r: np.ndarray, factor: float = 2.0) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    return factor * r / (1 + (factor - 1) * r)


def split_half_masks(valid: np.ndarray, n_splits: int, seed: int = 0,
                     halves: str = "equal") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(first, second) boolean masks over ``valid``'s repeats (last axis), one pair per split: disjoint random halves
    of each cell's valid repeats, of equal size when ``halves="equal"`` (module docstring)."""
    check_ceiling_options(halves, "per_split", "kept_repeats")
    return _random_halves(valid, n_splits, np.random.default_rng(seed), halves == "equal")


def _random_halves(valid: np.ndarray, n_splits: int, rng: np.random.Generator,
                   equal: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    half = valid.sum(-1, keepdims=True) // 2
    for _ in range(n_splits):
        # random order of each cell's valid repeats: rank of random keys, invalid repeats last
        keys = np.where(valid, rng.random(valid.shape), np.inf)
        rank = np.argsort(np.argsort(keys, axis=-1), axis=-1)
        first = valid & (rank < half)
        second = valid & (rank >= half)
        if equal:  # the odd repeat out (the one ranked last, a random one) belongs to neither half
            second &= rank < 2 * half
        yield first, second


def split_half_correlations(trials: Any, n_splits: int = 100, seed: int = 0, halves: str = "equal") -> np.ndarray:
    """(n_splits, n_neuroids) Pearson r across stimuli between the two half-means of each split (uncorrected).

    trials: (n_stimuli, n_neuroids, n_repetitions) with NaN for missing repeats (e.g. ``load_responses(...,
    trials=True)``). Every stimulus/neuroid needs >= 2 valid repeats.
    """
    data = np.asarray(getattr(trials, "values", trials), dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"trials must be (n_stimuli, n_neuroids, n_repetitions); got shape {data.shape}")
    valid = ~np.isnan(data)
    if (valid.sum(2) < 2).any():
        raise ValueError("split-half reliability needs >= 2 valid repeats of every stimulus for every neuroid")
    if data.shape[0] < 3:
        raise ValueError("split-half reliability needs at least 3 stimuli")
    filled = np.where(valid, data, 0.0)
    out = np.empty((n_splits, data.shape[1]))
    for split, (first, second) in enumerate(split_half_masks(valid, n_splits, seed, halves)):
        means = [(filled * mask).sum(2) / mask.sum(2) for mask in (first, second)]
        out[split] = pearson_per_column(*means)
    return out


def split_half_ceiling(trials: Any, n_splits: int = 100, seed: int = 0, halves: str = "equal",
                       spearman_brown_order: str = "per_split", corrected_to: str = "kept_repeats") -> np.ndarray:
    """Per-neuroid Spearman-Brown-corrected split-half reliability (module docstring for the options)."""
    check_ceiling_options(halves, spearman_brown_order, corrected_to)
    r = split_half_correlations(trials, n_splits, seed, halves)
    factor = spearman_brown_factor(trials, halves, corrected_to)
    if spearman_brown_order == "mean_r":
        return spearman_brown(r.mean(0), factor)
    return spearman_brown(r, factor).mean(0)


def spearman_brown_factor(trials: Any, halves: str = "equal", corrected_to: str = "kept_repeats") -> np.ndarray:
    """Per-neuroid Spearman-Brown factor from a half's reliability to the target's (module docstring)."""
    check_ceiling_options(halves, "per_split", corrected_to)
    data = np.asarray(getattr(trials, "values", trials), dtype=np.float64)
    if corrected_to == "kept_repeats":
        return np.full(data.shape[1], 2.0)
    counts = (~np.isnan(data)).sum(2)
    if (counts < 2).any():
        raise ValueError("split-half reliability needs >= 2 valid repeats of every stimulus for every neuroid")
    # noise variance of a half-mean over that of the all-repeat mean, averaged over stimuli
    return (1 / (counts // 2)).mean(0) / (1 / counts).mean(0)


def check_ceiling_options(halves: str, spearman_brown_order: str, corrected_to: str) -> None:
    """ValueError naming the allowed values for an unknown option or the one combination that is not defined."""
    for name, value, allowed in (("halves", halves, HALVES), ("spearman_brown_order", spearman_brown_order,
                                                              SPEARMAN_BROWN_ORDERS),
                                 ("corrected_to", corrected_to, CORRECTED_TO)):
        if value not in allowed:
            raise ValueError(f"unknown split-half ceiling option {name}={value!r}; use one of {', '.join(allowed)}")
    if corrected_to == "all_repeats" and halves != "equal":
        raise ValueError("corrected_to='all_repeats' needs halves='equal': its Spearman-Brown factor assumes halves "
                         "of equal size")


def ceiled_scores(r: np.ndarray, ceiling: np.ndarray) -> dict[str, Any]:
    """Per-neuroid ceiled scores and their medians; see the module docstring for the two conventions."""
    r, c = np.asarray(r, dtype=np.float64), np.asarray(ceiling, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2_over_c = np.where(c > 0, r ** 2 / c, np.nan)
        r_over_c_sq = np.where(c > 0, (r / c) ** 2, np.nan)
    return {"raw_r_median": float(np.nanmedian(r)), "ceiling_median": float(np.nanmedian(c)),
            "r2_over_c_median": float(np.nanmedian(r2_over_c)),
            "r_over_c_sq_median": float(np.nanmedian(r_over_c_sq)),
            "r2_over_c": r2_over_c, "r_over_c_sq": r_over_c_sq}
