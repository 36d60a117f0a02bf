"""TDANN's position pre-optimisation on known answers: responses whose correlations follow a hidden 2-D layout,
shuffled on the sheet, are put back into a smooth layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.models.hallmarks import morans_i
from workbench.models.preoptimise import (_swap_gains, neighbour_correlation, preoptimise_positions,
                                          preoptimise_sheet, response_correlations)
from workbench.models.sheet import CorticalSheet


def planted_responses(side: int = 12, n_stimuli: int = 150, seed: int = 0):
    """Units on a side x side lattice whose responses are smooth in their (hidden) lattice position: sums of
    Gaussian bumps with random amplitudes per stimulus, plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    centres = rng.uniform(0, side, size=(30, 2))
    bumps = np.exp(-((grid[:, None] - centres[None]) ** 2).sum(-1) / (2 * 2.0 ** 2))
    responses = rng.normal(size=(n_stimuli, 30)) @ bumps.T + 0.3 * rng.normal(size=(n_stimuli, len(grid)))
    return grid, responses


def test_swap_gain_equals_the_objective_change_computed_directly():
    rng = np.random.default_rng(1)
    r = response_correlations(rng.normal(size=(20, 7)))
    pos = rng.uniform(0, 3, size=(7, 2))
    target = 1 / (np.linalg.norm(pos[:, None] - pos[None], axis=-1) + 1)
    np.fill_diagonal(target, 0)
    gains = _swap_gains(r, target)
    for a, b in [(0, 1), (2, 6), (3, 4)]:
        order = np.arange(7)
        order[[a, b]] = order[[b, a]]
        assert gains[a, b] == pytest.approx((r[np.ix_(order, order)] * target).sum() - (r * target).sum(), abs=1e-12)


def test_preoptimisation_restores_a_shuffled_planted_layout():
    grid, responses = planted_responses()
    perm = np.random.default_rng(2).permutation(len(grid))
    shuffled = responses[:, perm]              # unit u's hidden position is grid[perm[u]]; it sits at grid[u]
    hidden_x = grid[perm, 0]
    r = response_correlations(shuffled)
    result = preoptimise_positions(shuffled, grid, iterations=600, neighbourhood_size=25, seed=0)
    new_positions = grid[result.assignment]
    assert sorted(result.assignment.tolist()) == list(range(len(grid)))   # a permutation of the positions
    assert result.neighbour_correlation_before == pytest.approx(neighbour_correlation(r, grid))
    true_level = neighbour_correlation(response_correlations(responses), grid)
    # the shuffled sheet sits near the mean pair correlation; the pre-optimised one most of the way to the truth
    assert result.neighbour_correlation_before < 0.3 * true_level
    assert result.neighbour_correlation_after > 0.6 * true_level
    assert abs(morans_i(hidden_x, grid, 1.01)) < 0.1
    assert morans_i(hidden_x, new_positions, 1.01) > 0.5
    again = preoptimise_positions(shuffled, grid, iterations=600, neighbourhood_size=25, seed=0)
    assert np.array_equal(again.assignment, result.assignment)             # deterministic from the seed


def test_no_iterations_keep_the_layout_and_bad_input_is_named():
    grid, responses = planted_responses(side=5)
    assert np.array_equal(preoptimise_positions(responses, grid, iterations=0).assignment, np.arange(25))
    with pytest.raises(ValueError, match="same order"):
        preoptimise_positions(responses[:, :10], grid)
    with pytest.raises(ValueError, match="neighbourhood_size"):
        preoptimise_positions(responses, grid, neighbourhood_size=2)


def test_preoptimised_sheet_groups_correlated_channels_and_survives_a_checkpoint():
    # 16 channels in four correlated families, interleaved so that the default tile (4 x 4) mixes them
    rng = np.random.default_rng(3)
    family = np.arange(16) % 4
    drive = rng.normal(size=(40, 4, 3, 3))
    acts = drive[:, family] + 0.2 * rng.normal(size=(40, 16, 3, 3))
    sheet = CorticalSheet((16, 3, 3), layer="conv", jitter=0.1, seed=4)
    new, result = preoptimise_sheet(sheet, acts, iterations=200, neighbourhood_size=9, seed=0)
    assert result.neighbour_correlation_after > result.neighbour_correlation_before + 0.2
    assert sorted(new.slot_of_channel.tolist()) == list(range(16))
    tile_rows, tile_cols = np.divmod(new.slot_of_channel, 4)
    # the nearest slot of each channel holds a channel of its family more often than chance (3 of 15)
    same = [family[c] == family[np.argmin(np.hypot(tile_rows - tile_rows[c], tile_cols - tile_cols[c])
                                          + 99 * (np.arange(16) == c))] for c in range(16)]
    assert np.mean(same) > 0.5
    restored = CorticalSheet.from_dict({k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v)
                                        for k, v in new.to_dict().items()})
    assert np.array_equal(restored.slot_of_channel, new.slot_of_channel)
    assert np.array_equal(restored.positions, new.positions)
    with pytest.raises(ValueError, match="distinct tile slot"):
        CorticalSheet((16, 3, 3), slot_of_channel=[0] * 16)


def test_training_setup_preoptimises_the_sheets_from_the_config():
    from workbench.config import ConfigError
    from workbench.models import build_model
    from workbench.training.module import TopographicModule
    from workbench.training.preoptimise import preoptimise_for_training

    torch.manual_seed(0)
    cfg = {"name": "small_cnn", "width": 4, "topography": {
        "layers": ["conv2", "conv3"], "weight": 0.5,
        "spatial_correlation": {"pool_size": 16},
        "preoptimise": {"enabled": True, "iterations": 50, "n_stimuli": 12, "stimuli": "data"}}}
    model = build_model(cfg)
    before = {k: s.positions.copy() for k, s in model.cortical_sheets.items()}
    images = torch.randn(12, 3, 32, 32)
    record = preoptimise_for_training(model, cfg, datamodule_fn=None, preprocess=None, images=images)
    assert set(record["layers"]) == {"conv2", "conv3"} and record["n_stimuli"] == 12
    for layer, sheet in model.cortical_sheets.items():
        info = record["layers"][layer]
        assert info["neighbour_correlation_after"] >= info["neighbour_correlation_before"]
        assert sorted(sheet.positions[:, 0].tolist()) == pytest.approx(sorted(before[layer][:, 0].tolist()), abs=0.2)
    assert any(not np.array_equal(before[k], s.positions) for k, s in model.cortical_sheets.items())
    module = TopographicModule(model, cfg)          # the losses are built on the new positions
    assert np.array_equal(module.topo_losses[0].positions.numpy(), model.cortical_sheets["conv2"].positions)
    off = {**cfg, "topography": {**cfg["topography"], "preoptimise": {"enabled": False}}}
    assert preoptimise_for_training(build_model(off), off, None, None) is None
    bad = {**cfg, "topography": {**cfg["topography"], "preoptimise": {"iteration": 5}}}
    with pytest.raises(ConfigError, match="iterations"):
        preoptimise_for_training(build_model(off), bad, None, None)


def test_orientation_map_morans_i_tells_a_smooth_map_from_a_shuffled_one():
    from types import SimpleNamespace

    from workbench.training.stage import _orientation_morans_i

    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2).astype(float)
    preference = (grid[:, 0] * 9.0) % 180          # turns through 180 degrees every 20 columns
    osi = np.full(len(grid), 0.5)
    osi[0] = np.nan                                # an untuned unit is left out
    opts = SimpleNamespace(morans_radius_mm=1.01, morans_shuffles=20, seed=0)
    smooth = _orientation_morans_i(preference, osi, grid, opts)
    shuffled = _orientation_morans_i(np.random.default_rng(0).permutation(preference), osi, grid, opts)
    assert smooth["n_units"] == 399 and smooth["morans_i"] > 0.8 and smooth["p_value"] < 0.1
    assert abs(shuffled["morans_i"]) < 0.15 and abs(smooth["null_mean"]) < 0.05
    assert _orientation_morans_i(np.zeros(len(grid)), osi, grid, opts) is None   # one orientation: undefined
