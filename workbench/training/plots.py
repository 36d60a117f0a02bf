"""Figures of the train and topography stages: each function returns a matplotlib Figure (the stage saves it)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["train_curves_figure", "smoothness_figure", "selectivity_maps_figure"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def train_curves_figure(epochs: Sequence[Mapping[str, float]]):
    """Task loss, accuracy and the (unweighted) topographic losses per epoch, train and validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = [row["epoch"] + 1 for row in epochs]

    def series(key):
        return [row.get(key, math.nan) for row in epochs]

    for key, label in (("train/ce", "train"), ("val/ce", "val")):
        axes[0].plot(x, series(key), marker="o", label=label)
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="task loss")
    for key, label in (("train/acc", "train"), ("val/acc", "val")):
        axes[1].plot(x, series(key), marker="o", label=label)
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    topo_keys = sorted({k for row in epochs for k in row if k.startswith("train/topo_")})
    for key in topo_keys:
        axes[2].plot(x, series(key), marker="o", label=key.removeprefix("train/topo_"))
    axes[2].set(xlabel="epoch", ylabel="loss (unweighted)", title="topographic losses")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not topo_keys:
        axes[2].text(0.5, 0.5, "no topographic layers", ha="center", va="center", transform=axes[2].transAxes)
    fig.tight_layout()
    return fig


def smoothness_figure(curves: Mapping[str, tuple], stimulus_set: str):
    """Response correlation of unit pairs vs cortical distance per layer, with the position-shuffled curve.

    ``curves``: layer -> (SmoothnessCurve, SmoothnessCurve with shuffled positions)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for layer, (curve, shuffled) in curves.items():
        line = ax.errorbar(curve.bin_centres, curve.mean_correlation, yerr=curve.sem, marker="o", ms=3,
                           label=f"{layer} (SI {curve.index:.3f})")
        ax.plot(shuffled.bin_centres, shuffled.mean_correlation, ls=":", color=line[0].get_color(),
                label=f"{layer} shuffled")
    ax.set(xlabel="cortical distance (mm)", ylabel="response correlation", title=f"smoothness ({stimulus_set})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def selectivity_maps_figure(maps: Mapping[tuple[str, str], tuple], layers: Sequence[str],
                            contrasts: Sequence[str], threshold: float, statistic: str):
    """One sheet map per (layer, contrast): raw selectivity, with the patch outline (smoothed map at ``threshold``).
    Every panel shares one symmetric colour scale and one colourbar, so equal colours mean equal selectivity across
    layers and contrasts (a per-panel scale would make a weak map look as strong as a strong one).

    ``maps``: (layer, contrast) -> (raw grid, smoothed grid, extent, patches), as from ``models.topography``."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(layers), len(contrasts), figsize=(3.2 * len(contrasts) + 0.8, 3.0 * len(layers)),
                             squeeze=False, layout="constrained")
    lim = _shared_limit(raw for raw, *_ in maps.values())
    image = None
    for i, layer in enumerate(layers):
        for j, name in enumerate(contrasts):
            raw, smooth, extent, patches = maps[(layer, name)]
            ax = axes[i, j]
            image = ax.imshow(raw, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
            if np.isfinite(smooth).any() and np.nanmax(smooth) > threshold:
                ys = np.linspace(extent[2], extent[3], smooth.shape[0])
                xs = np.linspace(extent[0], extent[1], smooth.shape[1])
                ax.contour(xs, ys, np.nan_to_num(smooth, nan=-np.inf), levels=[threshold], colors="k",
                           linewidths=0.8)
            ax.set_title(f"{layer}: {name} ({len(patches)} patches)", fontsize=8)
            ax.set_xlabel("mm", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"selectivity ({statistic})")
    return fig


def _shared_limit(grids) -> float:
    """The largest |value| over all grids (NaN cells off the sheet ignored): one symmetric scale for every panel;
    1.0 when every grid is empty or zero."""
    peaks = [float(np.nanmax(np.abs(g))) for g in grids if np.isfinite(g).any()]
    return max(peaks, default=0.0) or 1.0


def orientation_maps_figure(maps: Mapping[str, tuple], results: Mapping[str, Mapping]):
    """Per layer: preferred orientation on the sheet (hue; brightness = selectivity), pinwheels marked."""
    from matplotlib.colors import hsv_to_rgb

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.2), squeeze=False)
    for ax, (layer, (z, extent, centres)) in zip(axes[0], maps.items()):
        hue = (np.angle(z) / (2 * np.pi)) % 1.0
        value = np.nan_to_num(np.abs(z) / max(np.nanmax(np.abs(z)), 1e-12))
        rgb = hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))
        ax.imshow(rgb, origin="lower", extent=extent, interpolation="nearest")
        pixel = (extent[1] - extent[0]) / z.shape[1]
        if len(centres):
            ax.plot(extent[0] + centres[:, 1] * pixel, extent[2] + centres[:, 0] * pixel, "wo", ms=3, mfc="none")
        result = results[layer]
        ax.set_title(f"{layer}: {result['n_pinwheels']} pinwheels, density {result['pinwheel_density']:.2f}\n"
                     f"(spacing {result['column_spacing_mm']:.2f} mm; mean OSI {result['mean_osi']:.2f})", fontsize=9)
        ax.set_xlabel("mm")
        ax.set_ylabel("mm")
    fig.suptitle("Orientation preference maps (hue: preferred orientation; brightness: selectivity)", fontsize=10)
    fig.tight_layout()
    return fig
