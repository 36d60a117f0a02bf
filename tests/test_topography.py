"""Topography metrics: smoothness, selectivity, patches, unit selections."""

import numpy as np
import pytest
from scipy import stats

from workbench.models import CorticalSheet
from workbench.models.topography import (detect_patches, rasterize, selectivity, smoothness_curve, top_units,
                                         units_in_disk)


def smooth_responses(positions, n_stimuli=60, length_mm=2.0, noise=0.3, seed=0):
    """Responses that are smooth functions of sheet position (random plane waves) plus independent noise."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(n_stimuli, 2)) / length_mm
    phase = rng.uniform(0, 2 * np.pi, size=(n_stimuli, 1))
    return np.cos(k @ positions.T + phase) + noise * rng.normal(size=(n_stimuli, len(positions)))


def test_smoothness_curve_decays_and_beats_shuffle():
    pos = CorticalSheet((16, 6, 6), size_mm=10).positions
    resp = smooth_responses(pos)
    curve = smoothness_curve(resp, pos, n_bins=8)
    assert curve.mean_correlation[0] > curve.mean_correlation[-1] + 0.2
    shuffled = smoothness_curve(resp, pos[np.random.default_rng(1).permutation(len(pos))], n_bins=8)
    assert curve.index > 0.3 and abs(shuffled.index) < 0.05
    # the index is computed from correlations that match numpy's
    z = resp[:, :2]
    assert np.isclose(np.corrcoef(z.T)[0, 1], np.mean(((z - z.mean(0)) / z.std(0)).prod(1)))


def test_smoothness_drops_dead_units_and_validates():
    pos = CorticalSheet((8, 4, 4)).positions
    resp = smooth_responses(pos)
    resp[:, :10] = 0.0  # dead ReLU units
    curve = smoothness_curve(resp, pos)
    assert np.isfinite(curve.index) and curve.fraction_responsive == pytest.approx(1 - 10 / len(pos))
    with pytest.raises(ValueError, match="follow the layer's flattened"):
        smoothness_curve(resp[:, :-1], pos)
    with pytest.raises(ValueError, match="NaN"):
        smoothness_curve(np.full_like(resp, np.nan), pos)


def test_selectivity_matches_scipy_welch_t_and_dprime():
    rng = np.random.default_rng(0)
    resp = rng.normal(size=(40, 7))
    target = np.arange(40) < 12
    resp[target, 0] += 2.0
    t = selectivity(resp, target, "t")
    ref = stats.ttest_ind(resp[target], resp[~target], equal_var=False).statistic
    assert np.allclose(t, ref)
    d = selectivity(resp, target, "dprime")
    a, b = resp[target], resp[~target]
    assert np.allclose(d, (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2))
    assert np.argmax(t) == 0
    const = np.zeros((40, 2))
    assert np.array_equal(selectivity(const, target), [0.0, 0.0])
    with pytest.raises(ValueError, match="length n_stimuli"):
        selectivity(resp, target[:-1])
    with pytest.raises(ValueError, match="unknown selectivity method"):
        selectivity(resp, target, "auc")


def test_patch_detection_finds_planted_disk():
    pos = CorticalSheet((16, 8, 8), size_mm=10, jitter=0.1).positions
    rng = np.random.default_rng(0)
    values = rng.normal(size=len(pos))
    centre, radius = np.array([3.0, 6.5]), 1.5
    inside = units_in_disk(pos, centre, radius)
    values[inside] += 8.0
    patches, smooth, extent = detect_patches(values, pos, threshold=4.0, smoothing_mm=0.3, min_units=20)
    assert len(patches) == 1
    found = set(patches[0].units)
    assert len(found & set(inside)) / len(inside) > 0.8 and len(found - set(inside)) / len(found) < 0.2
    assert np.allclose(patches[0].centroid_mm, centre, atol=0.3)
    assert patches[0].area_mm2 == pytest.approx(np.pi * radius ** 2, rel=0.35)
    none, _, _ = detect_patches(rng.normal(size=len(pos)), pos, threshold=4.0)
    assert none == []


def test_rasterize_and_unit_selections():
    pos = np.array([[0.0, 0.0], [0.05, 0.05], [1.0, 1.0]])
    grid, extent, pix = rasterize(np.array([1.0, 3.0, 5.0]), pos, pixel_mm=0.5)
    assert grid[0, 0] == 2.0 and grid[1, 1] == 5.0 and np.isnan(grid[0, 1])
    assert list(units_in_disk(pos, (0, 0), 0.1)) == [0, 1]
    assert list(top_units(np.array([0.1, 3.0, 2.0]), n=2)) == [1, 2]
    assert len(top_units(np.arange(10.0), fraction=0.3)) == 3
    with pytest.raises(ValueError, match="exactly one"):
        top_units(np.arange(3.0))
