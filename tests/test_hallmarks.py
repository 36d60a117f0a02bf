"""Topographic hallmarks measured as published, on known answers (issue 16)."""

import numpy as np
import pytest

from workbench.models.hallmarks import (column_spacing, find_pinwheels, grating_images, morans_i, morans_i_test,
                                        orientation_map, orientation_tuning, pinwheel_density)


def test_gratings_vary_along_their_orientation():
    images, meta = grating_images(size=32, orientations=4, cycles_per_image=(4.0,), phases=2)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8 and len(meta) == 8
    for image, row in zip(images, meta.itertuples()):
        power = np.abs(np.fft.fft2(image[..., 0] - image[..., 0].mean()))
        fy, fx = np.unravel_index(np.argmax(power), power.shape)
        fy, fx = (fy + 16) % 32 - 16, (fx + 16) % 32 - 16
        angle = np.rad2deg(np.arctan2(fy, fx)) % 180
        assert min(abs(angle - row.orientation_deg), 180 - abs(angle - row.orientation_deg)) < 1e-6
        assert abs(np.hypot(fy, fx) - 4.0) < 0.5  # the nearest FFT bin to 4 cycles along that direction


def test_tuning_recovers_preference_and_osi_of_cosine_units():
    angles = np.repeat(np.arange(8) * 22.5, 3)
    preferred = np.array([0.0, 45.0, 112.5, 157.5, 170.0])  # the last between sampled orientations
    responses = 1 + np.cos(2 * np.deg2rad(angles[:, None] - preferred[None, :]))
    tuning = orientation_tuning(responses, angles)
    assert np.allclose(np.minimum(abs(tuning.preference_deg - preferred), 180 - abs(tuning.preference_deg - preferred)),
                       0, atol=1e-9)
    # |sum (1 + cos) e^2i| / sum (1 + cos) = (N/2) / N where the minimum is sampled (the shift is then 0)
    np.testing.assert_allclose(tuning.osi[:4], 0.5, atol=1e-12)
    assert 0.5 < tuning.osi[4] < 0.6
    flat = orientation_tuning(np.ones((24, 1)), angles)
    assert np.isnan(flat.osi[0])
    with pytest.raises(ValueError, match="at least 3 orientations"):
        orientation_tuning(responses[:6], angles[:6])


def _sheet(n=40):
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    return np.stack([xs.ravel(), ys.ravel()], axis=1) * 0.1  # 0.1 mm apart


def test_one_pinwheel_is_found_where_the_map_winds():
    positions = _sheet()
    centre = np.array([2.02, 1.57])  # between units: the singularity lies inside a plaquette
    theta = (np.rad2deg(np.arctan2(*(positions - centre).T[::-1])) / 2) % 180  # half a turn around the centre
    z, extent = orientation_map(theta, np.ones(len(theta)), positions, pixel_mm=0.1)
    centres, charges = find_pinwheels(z)
    assert len(centres) == 1 and abs(charges[0]) == 0.5
    found = np.array([extent[0] + centres[0][1] * 0.1, extent[2] + centres[0][0] * 0.1])
    assert np.abs(found - centre).max() <= 0.1


def test_a_plane_wave_map_has_its_wavelength_and_no_pinwheels():
    positions = _sheet(64)
    theta = (positions[:, 0] / 0.8 * 180) % 180  # the preference turns once every 0.8 mm along x
    z, _ = orientation_map(theta, np.ones(len(theta)), positions, pixel_mm=0.1)
    assert column_spacing(z, 0.1) == pytest.approx(0.8, rel=0.05)
    assert len(find_pinwheels(z)[0]) == 0
    assert pinwheel_density(6, area_mm2=4.0, spacing_mm=0.8) == pytest.approx(6 / (4.0 / 0.64))


def test_morans_i_tells_organisation_from_none():
    positions = _sheet(30)
    smooth = np.sin(positions[:, 0] * 2) + np.cos(positions[:, 1] * 2)
    noise = np.random.default_rng(0).standard_normal(len(positions))
    organised = morans_i_test(smooth, positions, radius_mm=0.15, n_shuffles=50)
    unorganised = morans_i_test(noise, positions, radius_mm=0.15, n_shuffles=50)
    assert organised["morans_i"] > 0.9 and organised["p_value"] == pytest.approx(1 / 51)
    assert abs(unorganised["morans_i"]) < 0.1 and unorganised["p_value"] > 0.05
    assert abs(organised["null_mean"] + 1 / (len(positions) - 1)) < 0.02
    with pytest.raises(ValueError, match="constant map"):
        morans_i(np.ones(len(positions)), positions, 0.15)


def test_morans_i_of_a_complex_map_and_undefined_units():
    """A complex map's I is the variance-weighted mean of its parts' (Re(x_i conj x_j) = re*re + im*im); NaN units
    are left out of the statistic and of the shuffles alike."""
    grid = np.stack(np.meshgrid(np.arange(15), np.arange(15)), -1).reshape(-1, 2).astype(float)
    rng = np.random.default_rng(1)
    z = np.exp(1j * grid[:, 0] / 3) + 0.3 * (rng.standard_normal(len(grid)) + 1j * rng.standard_normal(len(grid)))
    re, im = z.real - z.real.mean(), z.imag - z.imag.mean()
    weighted = (morans_i(re, grid, 1.01) * (re ** 2).sum() + morans_i(im, grid, 1.01) * (im ** 2).sum()) / (
        (re ** 2).sum() + (im ** 2).sum())
    assert morans_i(z, grid, 1.01) == pytest.approx(weighted, rel=1e-12)
    holes = z.copy()
    holes[::7] = np.nan
    kept = np.isfinite(holes)
    assert morans_i_test(holes, grid, 1.01, n_shuffles=9, seed=4) == pytest.approx(
        morans_i_test(z[kept], grid[kept], 1.01, n_shuffles=9, seed=4), nan_ok=True)
