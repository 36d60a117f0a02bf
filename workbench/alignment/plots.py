"""Figures of the align stage. Each function returns a matplotlib Figure; the stage saves it.

``layer_profile`` draws one panel per metric from the ``LayerProfile`` each metric describes (score against layer,
with intervals and ceilings), so a metric registered by a plugin gets its panel without plotting code of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


@dataclass
class ProfileSeries:
    """One line of a layer-profile panel: a value per layer, optional intervals and a ceiling."""

    label: str
    values: Sequence[float]
    intervals: Sequence[Sequence[float]] | None = None   # (lower, upper) per layer: drawn as error bars
    ceiling: float | tuple[float, float] | None = None   # a number: dashed line; (lower, upper): shaded band
    ceiling_label: str = ""


@dataclass
class LayerProfile:
    title: str
    ylabel: str
    series: list[ProfileSeries] = field(default_factory=list)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def layer_profile(layers: list[str], profiles: list[LayerProfile]):
    """One panel per profile, side by side, layers on the x axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(profiles), figsize=(6 * len(profiles), 4), squeeze=False)
    x = np.arange(len(layers))
    for ax, profile in zip(axes[0], profiles):
        for k, series in enumerate(profile.series):
            _draw_series(ax, x, k, series)
        ax.set_xticks(x, layers, rotation=45, ha="right")
        ax.set_ylabel(profile.ylabel)
        ax.set_title(profile.title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _draw_series(ax, x: np.ndarray, k: int, series: ProfileSeries) -> None:
    values = np.asarray(series.values, dtype=float)
    colour = f"C{k}"
    if series.intervals is not None:
        ci = np.asarray(series.intervals, dtype=float)
        # a percentile bootstrap CI need not contain the full-data estimate (few resamples, skewed statistics):
        # the bar then ends at the point rather than pointing the wrong way (matplotlib refuses negative errors)
        below, above = np.clip(values - ci[:, 0], 0, None), np.clip(ci[:, 1] - values, 0, None)
        # neighbouring series are shifted a little so that their error bars do not hide each other
        ax.errorbar(x + 0.08 * k, values, yerr=[below, above], marker="o", capsize=3, color=colour,
                    label=series.label)
    else:
        ax.plot(x, values, marker="o", color=colour, label=series.label)
    if isinstance(series.ceiling, tuple):
        ax.axhspan(*series.ceiling, color=colour, alpha=0.15, label=series.ceiling_label)
    elif series.ceiling is not None:
        ax.axhline(series.ceiling, color=colour, ls="--", label=series.ceiling_label)


def rdm_panels(rdms: Sequence[np.ndarray], titles: list[str], suptitle: str,
               categories: Sequence[str] | None = None):
    """RDMs side by side as percentile ranks of their dissimilarities (one colour scale, one colourbar); with
    ``categories`` (one label per stimulus, in RDM order), lines at the category boundaries and labelled blocks."""
    from scipy.stats import rankdata

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rdms), figsize=(3.2 * len(rdms) + 0.8, 3.6), layout="constrained")
    n = rdms[0].shape[0]
    upper = np.triu_indices(n, 1)
    image = None
    for i, (ax, mat, title) in enumerate(zip(np.atleast_1d(axes), rdms, titles)):
        ranked = np.zeros((n, n))
        ranked[upper] = rankdata(mat[upper]) / len(upper[0])
        ranked = ranked + ranked.T
        image = ax.imshow(ranked, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if categories is not None:
            _category_blocks(ax, categories, label=i == 0)
    fig.colorbar(image, ax=list(np.atleast_1d(axes)), shrink=0.8, label="dissimilarity (percentile)")
    fig.suptitle(suptitle)
    return fig


def _category_blocks(ax, categories: Sequence[str], label: bool) -> None:
    """White lines between runs of equal category labels; the first panel names each block on its y axis."""
    starts = [0] + [i for i in range(1, len(categories)) if categories[i] != categories[i - 1]]
    ends = starts[1:] + [len(categories)]
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="white", lw=0.8)
        ax.axvline(start - 0.5, color="white", lw=0.8)
    if label:
        ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, ends)], [categories[a] for a in starts], fontsize=7)


def best_neuroid_predictions(predictions: np.ndarray, actual: np.ndarray, r: np.ndarray, neuroid_ids: Sequence[str],
                             title: str, n_neuroids: int = 4, unit: str = "spikes / 100 ms"):
    """Held-out predictions against recorded responses for the ``n_neuroids`` best-predicted neuroids."""
    plt = _pyplot()
    top = np.argsort(-np.nan_to_num(r, nan=-2))[:n_neuroids]
    fig, axes = plt.subplots(1, len(top), figsize=(3.2 * len(top), 3.2), squeeze=False)
    for ax, j in zip(axes[0], top):
        ax.scatter(predictions[:, j], actual[:, j], s=4, alpha=0.5)
        lo = min(predictions[:, j].min(), actual[:, j].min())
        hi = max(predictions[:, j].max(), actual[:, j].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{neuroid_ids[j]}: r = {r[j]:.2f}", fontsize=9)
        ax.set_xlabel("predicted (held-out)")
        ax.set_ylabel(f"actual ({unit})" if unit else "actual")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ceiled_by_layer(layers: list[str], per_dataset: Mapping[str, Mapping[str, np.ndarray]], ylabel: str,
                    region: str = "neural"):
    """One panel per data set (session): per layer, a box of the per-neuroid ceiled scores (median line, box =
    interquartile range, whiskers 5th-95th percentile) so the spread across neuroids shows beside the median; a
    dashed line at 1, the ceiling. Sessions get their own panels: their neuroids and ceilings differ, so their boxes
    are not comparable side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(per_dataset), figsize=(max(4.5, 0.8 * len(layers) + 1.5) * len(per_dataset), 4),
                             squeeze=False, sharey=True)
    for ax, (dataset, per_layer) in zip(axes[0], per_dataset.items()):
        values = [_finite(per_layer[layer]) for layer in layers]
        ax.boxplot(values, whis=(5, 95), showfliers=False, medianprops={"color": "C1", "lw": 2})
        ax.set_xticks(np.arange(1, len(layers) + 1), layers, rotation=45, ha="right")
        ax.axhline(1.0, color="k", ls="--", lw=0.8, label="ceiling")
        n = max((len(v) for v in values), default=0)
        ax.set_title(f"{region}, {dataset} ({n} neuroids)", fontsize=9)
        ax.set_xlabel("layer")
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel(ylabel)
    fig.suptitle("Ceiled predictivity per layer: median, IQR box, 5-95% whiskers over neuroids", fontsize=10)
    fig.tight_layout()
    return fig


def _finite(values) -> np.ndarray:
    """Per-neuroid scores without the NaNs of neuroids with no positive ceiling (matplotlib boxes would break)."""
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def layer_differences(layers: list[str], differences: Mapping[str, Mapping], title: str, unit: str,
                      ci_level: float = 0.95):
    """Layers x layers heatmap of bootstrap score differences, cell (row, column) = score(row) - score(column);
    ``differences`` maps "a - b" to {diff, ci[, p]} (either order; the mirror cell is the negated difference). A
    star marks a difference whose CI excludes 0; pairs without an entry stay grey (not computed)."""
    plt = _pyplot()
    estimate, significant = _difference_matrix(layers, differences)
    lim = float(np.nanmax(np.abs(estimate))) if np.isfinite(estimate).any() else 1.0
    size = 1.2 + 0.6 * len(layers)
    fig, ax = plt.subplots(figsize=(size + 1.4, size), layout="constrained")
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")  # grey: pairs the stage did not keep
    image = ax.imshow(np.ma.masked_invalid(estimate), cmap=cmap, vmin=-(lim or 1.0), vmax=lim or 1.0)
    for i, j in zip(*np.nonzero(significant)):
        # white on the dark ends of the colour scale, where a black star would disappear
        colour = "white" if abs(estimate[i, j]) > 0.6 * lim else "black"
        ax.text(j, i, "*", ha="center", va="center", fontsize=14, fontweight="bold", color=colour)
    ticks = np.arange(len(layers))
    ax.set_xticks(ticks, layers, rotation=45, ha="right")
    ax.set_yticks(ticks, layers)
    ax.set_xlabel("layer b")
    ax.set_ylabel("layer a")
    ax.set_title(f"{title}\n* = {100 * ci_level:.0f}% CI of a - b excludes 0; grey = not computed", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"score(a) - score(b) ({unit})")
    return fig


def _difference_matrix(layers: list[str], differences: Mapping[str, Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, significant) layers x layers from the "a - b" entries, each pair filled in both orders."""
    index = {layer: i for i, layer in enumerate(layers)}
    estimate = np.full((len(layers), len(layers)), np.nan)
    significant = np.zeros_like(estimate, dtype=bool)
    for pair, entry in differences.items():
        a, _, b = pair.partition(" - ")
        if a not in index or b not in index:
            continue
        lo, hi = entry["ci"]
        for (i, j), sign in (((index[a], index[b]), 1.0), ((index[b], index[a]), -1.0)):
            estimate[i, j] = sign * entry["diff"]
            significant[i, j] = lo > 0 or hi < 0
    return estimate, significant

