"""The topographic hallmarks the literature measures, on a cortical sheet: plain numpy in, numbers out.

    grating_images(...)                     sine gratings (orientation x spatial frequency x phase) + their metadata
    orientation_tuning(responses, deg)      per unit: preferred orientation and orientation selectivity (OSI)
    orientation_map(pref, osi, positions)   the preference map on the sheet: z = OSI * exp(2i theta), per pixel
    find_pinwheels(z)                       pixels around which the preferred orientation turns by 180 degrees
    column_spacing(z, pixel_mm)             the map's dominant wavelength (peak of its radial power spectrum)
    pinwheel_density(n, area, spacing)      pinwheels per column spacing squared (macaque/cat/ferret ~ pi)
    morans_i(values, positions, radius)     spatial autocorrelation of a map; ``morans_i_test`` against shuffles

Orientation preference and OSI follow the vector-sum convention (Swindale 1998): OSI = |sum r e^{2 i theta}| /
sum r with responses shifted to be non-negative. Pinwheels are found as Kaschube et al. (2010) find them: the
doubled-angle field's phase winds by +-2 pi around a pinwheel, so a 2 x 2 plaquette of pixels whose phase steps sum
to +-2 pi holds one; the density is counted per Lambda^2, Lambda being the column spacing. Moran's I tells "no
organisation" (I ~ -1/(n-1), like shuffled positions) from "organised, but no patch passes a threshold".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["grating_images", "OrientationTuning", "orientation_tuning", "orientation_map", "find_pinwheels",
           "column_spacing", "pinwheel_density", "morans_i", "morans_i_test"]


def grating_images(size: int = 32, orientations: int = 8, cycles_per_image: tuple[float, ...] = (2.0, 4.0, 8.0),
                   phases: int = 4, contrast: float = 1.0) -> tuple[np.ndarray, pd.DataFrame]:
    """Full-field sine gratings, grey-scale in RGB: uint8 (n, size, size, 3) and a table with ``stimulus_id``,
    ``orientation_deg`` (0 = vertical bars, i.e. luminance varying along x), ``cycles_per_image`` and ``phase_deg``."""
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    y, x = np.mgrid[0:size, 0:size] / size
    images, rows = [], []
    for theta in np.arange(orientations) * 180.0 / orientations:
        t = np.deg2rad(theta)
        along = x * np.cos(t) + y * np.sin(t)
        for cycles in cycles_per_image:
            for phase in np.arange(phases) * 360.0 / phases:
                wave = np.sin(2 * np.pi * cycles * along + np.deg2rad(phase))
                grey = np.round(127.5 + 127.5 * contrast * wave).astype(np.uint8)
                images.append(np.repeat(grey[..., None], 3, axis=2))
                rows.append({"stimulus_id": f"grating_o{theta:g}_c{cycles:g}_p{phase:g}", "orientation_deg": theta,
                             "cycles_per_image": cycles, "phase_deg": phase})
    return np.stack(images), pd.DataFrame(rows)


@dataclass
class OrientationTuning:
    preference_deg: np.ndarray  # (n_units,) in [0, 180)
    osi: np.ndarray             # (n_units,) in [0, 1]; NaN for a unit that never responds
    curves: np.ndarray          # (n_orientations, n_units) mean response per orientation
    orientations_deg: np.ndarray


def orientation_tuning(responses: np.ndarray, orientation_deg: np.ndarray) -> OrientationTuning:
    """Preferred orientation and OSI per unit from responses (n_stimuli, n_units) to gratings of the given
    orientations (responses are first averaged over the other grating parameters)."""
    responses = np.asarray(responses, dtype=np.float64)
    orientation_deg = np.asarray(orientation_deg, dtype=np.float64)
    if responses.ndim != 2 or len(orientation_deg) != len(responses):
        raise ValueError(f"responses must be (n_stimuli, n_units) with one orientation per stimulus; got "
                         f"{responses.shape} and {orientation_deg.shape}")
    angles = np.unique(orientation_deg)
    if len(angles) < 3:
        raise ValueError(f"orientation tuning needs at least 3 orientations, got {angles.tolist()}")
    curves = np.stack([responses[orientation_deg == a].mean(0) for a in angles])
    shifted = curves - curves.min(0, keepdims=True)  # the vector sum needs non-negative responses
    phasors = np.exp(2j * np.deg2rad(angles))[:, None]
    total = shifted.sum(0)
    vector = (shifted * phasors).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = np.where(total > 0, np.abs(vector) / total, np.nan)
    preference = (np.rad2deg(np.angle(vector)) / 2) % 180
    return OrientationTuning(preference, osi, curves, angles)


def orientation_map(preference_deg: np.ndarray, osi: np.ndarray, positions: np.ndarray,
                    pixel_mm: float | None = None, smoothing_mm: float = 0.0) -> tuple[np.ndarray, tuple]:
    """The complex orientation map z = OSI * exp(2 i theta) averaged per pixel of the sheet (NaN where no unit),
    optionally smoothed, and its extent."""
    from workbench.models.topography import _smooth_nan, rasterize

    weights = np.nan_to_num(np.asarray(osi, dtype=np.float64))
    z = weights * np.exp(2j * np.deg2rad(np.asarray(preference_deg, dtype=np.float64)))
    real, extent, _ = rasterize(z.real, positions, pixel_mm)
    imag, _, _ = rasterize(z.imag, positions, pixel_mm, extent=extent)
    px = (extent[1] - extent[0]) / real.shape[1]
    if smoothing_mm > 0:
        real, imag = _smooth_nan(real, smoothing_mm / px), _smooth_nan(imag, smoothing_mm / px)
    return real + 1j * imag, extent


def _wrapped(steps: np.ndarray) -> np.ndarray:
    return (steps + np.pi) % (2 * np.pi) - np.pi


def find_pinwheels(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinwheels of a complex orientation map: (centres (k, 2) as (row, col) in pixels, charges (k,) of +-1/2).

    Each 2 x 2 plaquette whose four phase steps (each wrapped to (-pi, pi]) sum to +-2 pi holds a pinwheel at its
    centre; a plaquette touching an empty (NaN) pixel holds none."""
    phase = np.angle(z)
    corners = [phase[:-1, :-1], phase[:-1, 1:], phase[1:, 1:], phase[1:, :-1]]
    winding = sum(_wrapped(b - a) for a, b in zip(corners, corners[1:] + corners[:1]))
    valid = np.isfinite(z[:-1, :-1]) & np.isfinite(z[:-1, 1:]) & np.isfinite(z[1:, 1:]) & np.isfinite(z[1:, :-1])
    turns = np.where(valid, np.round(winding / (2 * np.pi)), 0).astype(int)
    rows, cols = np.nonzero(turns)
    return np.stack([rows + 0.5, cols + 0.5], axis=1), turns[rows, cols] / 2.0


def column_spacing(z: np.ndarray, pixel_mm: float) -> float:
    """The map's dominant wavelength in mm: the peak of the radially averaged power spectrum of z (mean removed,
    empty pixels set to 0), excluding the zero frequency."""
    field = np.nan_to_num(z - np.nanmean(z))
    power = np.abs(np.fft.fftshift(np.fft.fft2(field))) ** 2
    rows, cols = field.shape
    fy = np.fft.fftshift(np.fft.fftfreq(rows, d=pixel_mm))
    fx = np.fft.fftshift(np.fft.fftfreq(cols, d=pixel_mm))
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    step = 1.0 / (max(rows, cols) * pixel_mm)
    bins = np.round(radius / step).astype(int)
    spectrum = np.bincount(bins.ravel(), power.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    return float(1.0 / (peak * step)) if peak > 0 else float("nan")


def pinwheel_density(n_pinwheels: int, area_mm2: float, spacing_mm: float) -> float:
    """Pinwheels per hypercolumn area (spacing squared); pi for the common design of cat, ferret, tree shrew and
    galago maps (Kaschube et al. 2010), about 3.14 in macaque."""
    if not (area_mm2 > 0 and spacing_mm > 0):
        raise ValueError(f"area and spacing must be > 0, got {area_mm2} and {spacing_mm}")
    return float(n_pinwheels) / (area_mm2 / spacing_mm ** 2)


def morans_i(values: np.ndarray, positions: np.ndarray, radius_mm: float) -> float:
    """Moran's I of ``values`` on the sheet with weights 1 for unit pairs closer than ``radius_mm`` (0 otherwise):
    near 1 for a smooth map, -1/(n-1) in expectation for values unrelated to position. Complex values (an
    orientation map z = OSI exp(2i theta)) use the products Re(x_i conj x_j): the variance-weighted mean of Moran's
    I of the real and the imaginary part."""
    from scipy.spatial import cKDTree

    values = np.asarray(values)
    values = values.astype(np.complex128 if np.iscomplexobj(values) else np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    keep = np.isfinite(values)
    x, pos = values[keep] - values[keep].mean(), positions[keep]
    pairs = cKDTree(pos).query_pairs(radius_mm, output_type="ndarray")
    if len(pairs) == 0:
        raise ValueError(f"no two units are closer than {radius_mm} mm; use a larger radius")
    total = float((np.abs(x) ** 2).sum())
    if not total > 0:
        raise ValueError("Moran's I is undefined for a constant map")
    cross = np.real(x[pairs[:, 0]] * np.conj(x[pairs[:, 1]])).sum()  # each pair once: both directions are equal
    return float(len(x) / len(pairs) * cross / total)


def morans_i_test(values: np.ndarray, positions: np.ndarray, radius_mm: float, n_shuffles: int = 200,
                  seed: int = 0) -> dict:
    """Moran's I, its null distribution over shuffled positions, and the one-sided permutation p-value
    ((1 + #null >= I) / (1 + n))."""
    values, positions = np.asarray(values), np.asarray(positions, dtype=np.float64)
    keep = np.isfinite(values)  # shuffle the defined values among the defined units' positions only
    values, positions = values[keep], positions[keep]
    rng = np.random.default_rng(seed)
    observed = morans_i(values, positions, radius_mm)
    null = np.array([morans_i(values[rng.permutation(len(values))], positions, radius_mm)
                     for _ in range(n_shuffles)])
    nan = float("nan")
    return {"morans_i": observed, "null_mean": float(null.mean()) if n_shuffles else nan,
            "null_sd": float(null.std()) if n_shuffles else nan,
            "p_value": float((1 + np.sum(null >= observed)) / (1 + n_shuffles))}
