"""Topography metrics on a cortical sheet: plain numpy in, numpy / dataclasses out.

    smoothness_curve(responses, positions)        response correlation of unit pairs vs cortical distance
    smoothness_index(curve) / .index              near-pair correlation minus the position-shuffled expectation
    selectivity(responses, is_target, method)     per-unit Welch t or d' (target vs rest)
    rasterize(values, positions, pixel_mm)        sheet map (NaN where no unit)
    detect_patches(values, positions, ...)        smoothed map above threshold, contiguous, >= min size
    units_in_disk(positions, centre, radius_mm)   unit indices of a disk (for lesions)
    top_units(values, n)                           most selective units (for selectivity-ranked lesions)

``responses`` are (n_stimuli, n_units) with units in the sheet's flattened (C, H, W) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SmoothnessCurve", "smoothness_curve", "smoothness_index", "selectivity", "rasterize", "Patch",
    "detect_patches", "units_in_disk", "top_units", "responsive_units",
]


def _check(responses: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    responses = np.asarray(responses, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if responses.ndim != 2:
        raise ValueError(f"responses must be (n_stimuli, n_units), got shape {responses.shape}")
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be (n_units, 2), got shape {positions.shape}")
    if responses.shape[1] != positions.shape[0]:
        raise ValueError(f"responses have {responses.shape[1]} units but positions {positions.shape[0]}: both must "
                         "follow the layer's flattened (C, H, W) unit order")
    if not np.isfinite(responses).all():
        raise ValueError("responses contain NaN or infinite values")
    return responses, positions


def responsive_units(responses: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Boolean mask of units whose response varies over stimuli (dead ReLU units have no correlation)."""
    return np.asarray(responses).std(0) > tol


@dataclass
class SmoothnessCurve:
    bin_edges: np.ndarray          # (n_bins + 1,) mm
    mean_correlation: np.ndarray   # (n_bins,) mean pairwise response correlation per distance bin (NaN if empty)
    sem: np.ndarray                # (n_bins,)
    counts: np.ndarray             # (n_bins,) pairs per bin
    chance: float                  # mean correlation of random unit pairs (= the curve with shuffled positions)
    n_units_used: int
    fraction_responsive: float

    @property
    def bin_centres(self) -> np.ndarray:
        return (self.bin_edges[:-1] + self.bin_edges[1:]) / 2

    @property
    def index(self) -> float:
        return smoothness_index(self)

    def to_dict(self) -> dict:
        return {"bin_centres_mm": self.bin_centres.tolist(), "mean_correlation": self.mean_correlation.tolist(),
                "sem": self.sem.tolist(), "counts": self.counts.tolist(), "chance": self.chance,
                "index": self.index, "n_units_used": self.n_units_used,
                "fraction_responsive": self.fraction_responsive}


def smoothness_curve(responses: np.ndarray, positions: np.ndarray, n_bins: int = 10,
                     max_distance_mm: float | None = None, max_units: int = 4000, max_pairs: int = 200_000,
                     seed: int = 0) -> SmoothnessCurve:
    """Pairwise response correlation (over stimuli) of unit pairs, binned by cortical distance.

    Units that never vary are dropped (reported as ``fraction_responsive``); at most ``max_units`` random units and
    ``max_pairs`` random pairs within ``max_distance_mm`` (default: half the sheet's extent) enter the curve.
    ``chance`` is the mean correlation of uniformly random unit pairs: what every bin would show with shuffled
    positions.
    """
    from scipy.spatial import cKDTree

    responses, positions = _check(responses, positions)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if responses.shape[0] < 3:
        raise ValueError("correlations over stimuli need at least 3 stimuli")
    rng = np.random.default_rng(seed)
    alive = np.flatnonzero(responsive_units(responses))
    if len(alive) < 3:
        raise ValueError(f"only {len(alive)} units vary over the stimuli: no correlation structure to measure")
    use = np.sort(rng.choice(alive, size=min(max_units, len(alive)), replace=False))
    z = responses[:, use]
    z = (z - z.mean(0)) / z.std(0)
    pos = positions[use]
    extent = float(np.max(pos.max(0) - pos.min(0)))
    if max_distance_mm is None:
        max_distance_mm = extent / 2
    if not max_distance_mm > 0:
        raise ValueError(f"max_distance_mm must be > 0, got {max_distance_mm}")
    pairs = cKDTree(pos).query_pairs(r=max_distance_mm, output_type="ndarray")
    if len(pairs) > max_pairs:
        pairs = pairs[rng.choice(len(pairs), size=max_pairs, replace=False)]
    n_stim = z.shape[0]
    r = np.einsum("si,si->i", z[:, pairs[:, 0]], z[:, pairs[:, 1]]) / n_stim
    d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
    edges = np.linspace(0.0, max_distance_mm, n_bins + 1)
    which = np.clip(np.digitize(d, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, weights=r, minlength=n_bins)
    sq = np.bincount(which, weights=r * r, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
        var = sq / counts - mean ** 2
        sem = np.sqrt(np.maximum(var, 0) / np.maximum(counts - 1, 1))
    # chance: random pairs regardless of distance
    n_rand = min(max_pairs, 50_000)
    i, j = rng.integers(0, len(use), size=(2, n_rand))
    keep = i != j
    chance = float(np.mean(np.einsum("si,si->i", z[:, i[keep]], z[:, j[keep]]) / n_stim))
    return SmoothnessCurve(edges, mean, sem, counts, chance, len(use), len(alive) / responses.shape[1])


def smoothness_index(curve: SmoothnessCurve) -> float:
    """Correlation of the nearest occupied distance bin minus chance (random pairs): 0 = no topography.

    In correlation units, so models with different overall correlation levels stay comparable to their own
    shuffled-position baseline.
    """
    occupied = np.flatnonzero(curve.counts > 0)
    if len(occupied) == 0:
        return float("nan")
    return float(curve.mean_correlation[occupied[0]] - curve.chance)


def selectivity(responses: np.ndarray, is_target: np.ndarray, method: str = "t", *, eps: float = 1e-12) -> np.ndarray:
    """Per-unit selectivity for target vs other stimuli: Welch ``t`` or ``dprime`` = (m1 - m0) / sqrt((v1 + v0) / 2).

    Units whose denominator is not above ``eps`` (no variance in either group) get 0 (no evidence), not NaN.
    """
    responses = np.asarray(responses, dtype=np.float64)
    is_target = np.asarray(is_target).astype(bool)
    if responses.ndim != 2:
        raise ValueError(f"responses must be (n_stimuli, n_units), got shape {responses.shape}")
    if is_target.shape != (responses.shape[0],):
        raise ValueError(f"is_target must be a boolean vector of length n_stimuli={responses.shape[0]}, "
                         f"got shape {is_target.shape}")
    n1, n0 = int(is_target.sum()), int((~is_target).sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"selectivity needs at least 2 target and 2 other stimuli, got {n1} and {n0}")
    a, b = responses[is_target], responses[~is_target]
    m1, m0 = a.mean(0), b.mean(0)
    v1, v0 = a.var(0, ddof=1), b.var(0, ddof=1)
    if method == "t":
        den = np.sqrt(v1 / n1 + v0 / n0)
    elif method in ("dprime", "d'"):
        den = np.sqrt((v1 + v0) / 2)
    else:
        raise ValueError(f"unknown selectivity method {method!r}; use 't' or 'dprime'")
    out = np.zeros(responses.shape[1])
    ok = den > eps
    out[ok] = (m1 - m0)[ok] / den[ok]
    return out


def rasterize(values: np.ndarray, positions: np.ndarray, pixel_mm: float | None = None,
              extent: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Mean of ``values`` per pixel of the sheet -> (map (rows, cols) with NaN where empty, extent, pixel of unit).

    extent = (x0, x1, y0, y1) in mm; ``pixel_of_unit`` (n_units, 2) gives each unit's (row, col).
    """
    values = np.asarray(values, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if values.shape != (positions.shape[0],):
        raise ValueError(f"values must have one entry per unit ({positions.shape[0]}), got shape {values.shape}")
    if extent is None:
        lo, hi = positions.min(0), positions.max(0)
        extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    x0, x1, y0, y1 = extent
    if pixel_mm is None:
        pixel_mm = max(x1 - x0, y1 - y0) / 64
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm}")
    cols = max(1, int(np.ceil((x1 - x0) / pixel_mm)))  # units on the far edge are clipped into the last pixel
    rows = max(1, int(np.ceil((y1 - y0) / pixel_mm)))
    c = np.clip(((positions[:, 0] - x0) / pixel_mm).astype(int), 0, cols - 1)
    r = np.clip(((positions[:, 1] - y0) / pixel_mm).astype(int), 0, rows - 1)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    np.add.at(total, (r, c), values)
    np.add.at(count, (r, c), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = total / count
    return grid, (x0, x0 + cols * pixel_mm, y0, y0 + rows * pixel_mm), np.stack([r, c], axis=1)


def _smooth_nan(grid: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing that ignores empty (NaN) pixels (normalised convolution)."""
    from scipy.ndimage import gaussian_filter

    if sigma_px <= 0:
        return grid.copy()
    valid = np.isfinite(grid)
    num = gaussian_filter(np.where(valid, grid, 0.0), sigma_px, mode="constant")
    den = gaussian_filter(valid.astype(float), sigma_px, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den < 1e-3] = np.nan
    return out


@dataclass
class Patch:
    label: int
    units: np.ndarray = field(repr=False)   # unit indices inside the patch
    n_units: int = 0
    area_mm2: float = 0.0
    centroid_mm: tuple[float, float] = (0.0, 0.0)
    peak: float = 0.0                       # max smoothed selectivity in the patch
    mean_selectivity: float = 0.0           # mean raw selectivity of its units

    def to_dict(self) -> dict:
        return {"label": self.label, "n_units": self.n_units, "area_mm2": self.area_mm2,
                "centroid_mm": list(self.centroid_mm), "peak": self.peak, "mean_selectivity": self.mean_selectivity}


def detect_patches(values: np.ndarray, positions: np.ndarray, threshold: float = 4.0, smoothing_mm: float = 0.5,
                   min_units: int = 20, pixel_mm: float | None = None) -> tuple[list[Patch], np.ndarray, tuple]:
    """Patches: contiguous regions of the smoothed selectivity map above ``threshold`` holding >= ``min_units``.

    Returns (patches sorted by size, smoothed map, extent). Contiguity is 8-connected on the map's pixels.
    """
    from scipy.ndimage import label

    grid, extent, pix = rasterize(values, positions, pixel_mm)
    px = (extent[1] - extent[0]) / grid.shape[1]
    smooth = _smooth_nan(grid, smoothing_mm / px)
    above = np.nan_to_num(smooth, nan=-np.inf) > threshold
    labels, n = label(above, structure=np.ones((3, 3), dtype=int))
    unit_label = labels[pix[:, 0], pix[:, 1]]
    values = np.asarray(values, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    patches = []
    for k in range(1, n + 1):
        units = np.flatnonzero(unit_label == k)
        if len(units) < min_units:
            continue
        patches.append(Patch(label=k, units=units, n_units=len(units), area_mm2=float((labels == k).sum() * px * px),
                             centroid_mm=tuple(float(v) for v in positions[units].mean(0)),
                             peak=float(np.nanmax(smooth[labels == k])),
                             mean_selectivity=float(values[units].mean())))
    patches.sort(key=lambda p: -p.n_units)
    return patches, smooth, extent


def units_in_disk(positions: np.ndarray, centre: tuple[float, float] | np.ndarray, radius_mm: float) -> np.ndarray:
    """Indices of units within ``radius_mm`` of ``centre`` on the sheet (a cortical lesion)."""
    positions = np.asarray(positions, dtype=np.float64)
    if not radius_mm >= 0:
        raise ValueError(f"radius_mm must be >= 0, got {radius_mm}")
    return np.flatnonzero(np.linalg.norm(positions - np.asarray(centre, dtype=np.float64), axis=1) <= radius_mm)


def top_units(values: np.ndarray, n: int | None = None, fraction: float | None = None) -> np.ndarray:
    """Indices of the most selective units (largest ``values`` first): give ``n`` or ``fraction``."""
    values = np.asarray(values, dtype=np.float64)
    if (n is None) == (fraction is None):
        raise ValueError("give exactly one of n (number of units) or fraction (of all units)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n = int(round(fraction * len(values)))
    if not 0 <= n <= len(values):
        raise ValueError(f"n must be in [0, {len(values)}], got {n}")
    return np.argsort(-values, kind="stable")[:n]
