"""Noise ceilings for encoding models from trial-level data.

``split_half_ceiling``: for each split, the repeats of every stimulus are shuffled and halved (each stimulus keeps
its own number of valid repeats; NaN marks a repeat that was not shown), each half is averaged, and the per-neuroid
Pearson r between the two half-means across stimuli is corrected to the full number of repeats with the
Spearman-Brown formula c = 2r / (1 + r). The ceiling is the mean of c over splits.

Ceiled scores (both are reported because Brain-Score changed its convention):
* ``r2_over_c`` = r^2 / c: explained variance relative to the explainable variance. c estimates the squared
  correlation of the data with its noise-free signal, so r^2 / c is the fraction of explainable variance.
* ``r_over_c_sq`` = (r / c)^2: the square of the classic Brain-Score ceiled correlation r / c.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.alignment.regression import pearson_per_column


def spearman_brown(r: np.ndarray, factor: float = 2.0) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    return factor * r / (1 + (factor - 1) * r)


def split_half_ceiling(trials: Any, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """Per-neuroid Spearman-Brown-corrected split-half reliability.

    trials: (n_stimuli, n_neuroids, n_repetitions) with NaN for missing repeats (e.g. ``load_responses(...,
    trials=True)``). Every stimulus/neuroid needs >= 2 valid repeats.
    """
    data = np.asarray(getattr(trials, "values", trials), dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"trials must be (n_stimuli, n_neuroids, n_repetitions); got shape {data.shape}")
    valid = ~np.isnan(data)
    counts = valid.sum(2)
    if (counts < 2).any():
        raise ValueError("split-half reliability needs >= 2 valid repeats of every stimulus for every neuroid")
    if data.shape[0] < 3:
        raise ValueError("split-half reliability needs at least 3 stimuli")
    rng = np.random.default_rng(seed)
    filled = np.where(valid, data, 0.0)
    out = np.zeros(data.shape[1])
    for _ in range(n_splits):
        # random order of the valid repeats of each (stimulus, neuroid): sort random keys, invalid ones last
        keys = np.where(valid, rng.random(data.shape), np.inf)
        order = np.argsort(keys, axis=2)
        pos = np.empty_like(order)
        np.put_along_axis(pos, order, np.arange(data.shape[2])[None, None, :].repeat(data.shape[0], 0)
                          .repeat(data.shape[1], 1), axis=2)
        half = counts[:, :, None] // 2
        first = valid & (pos < half)
        second = valid & (pos >= half)
        m1 = (filled * first).sum(2) / first.sum(2)
        m2 = (filled * second).sum(2) / second.sum(2)
        out += spearman_brown(pearson_per_column(m1, m2))
    return out / n_splits


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
