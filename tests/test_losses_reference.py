"""The topographic losses against small ports of the published code, written here from the reference sources:
TopoLoss's ``laplacian_pyramid_loss`` and cortical sheet (toponets/topoloss, read as murtylab/topoloss:
``topoloss/losses/laplacian_pyramid.py``, ``topoloss/cortical_sheet``) and TDANN's spatial correlation loss and
neighbourhoods (neuroailab/TDANN: ``spacetorch/losses/losses_torch.py``, ``spacetorch/utils/torch_utils.py``,
``spacetorch/utils/spatial_utils.py``). Each comparison also shows the earlier form of the package differing, so
the test can fail."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.models import CorticalSheet, build_model
from workbench.training.losses import (SpatialCorrelationLoss, WeightSmoothnessLoss, parse_topography,
                                       sample_neighbourhoods, spatial_correlation_loss, window_members,
                                       window_neighbourhoods)


# -- port of TopoLoss ----------------------------------------------------------------------------------------------
def ref_sheet_size(area: int) -> tuple[int, int]:
    """find_cortical_sheet_size: (height, width)."""
    length = int(math.sqrt(area))
    while area % length != 0:
        length -= 1
    return length, area // length


def ref_cortical_sheet(weight: torch.Tensor) -> torch.Tensor:
    """get_cortical_sheet_conv / _linear: '(height width) ... -> height width (...)'."""
    height, width = ref_sheet_size(weight.shape[0])
    return weight.reshape(height, width, -1)


def ref_laplacian_pyramid_loss(sheet: torch.Tensor, factor_w: float, factor_h: float) -> torch.Tensor:
    grid = sheet.permute(2, 0, 1).unsqueeze(0)                              # 'h w e -> e h w', batch of 1
    down = F.interpolate(grid, scale_factor=(1 / factor_h, 1 / factor_w), mode="bilinear")
    up = F.interpolate(down, size=grid.shape[2:], mode="bilinear")
    grid = grid.squeeze(0).permute(1, 2, 0).reshape(-1, grid.shape[1])     # 'e h w -> (h w) e'
    up = up.squeeze(0).permute(1, 2, 0).reshape(-1, grid.shape[1])
    return 1 - F.cosine_similarity(grid, up, dim=-1).mean()


def earlier_weight_smoothness(grid: torch.Tensor, factor: float) -> torch.Tensor:
    """This package's earlier form: size round(h / f) and zero-filled slots in the blur (for the 'can fail' checks);
    grid is (fan_in, rows, cols), every slot averaged."""
    rows, cols = grid.shape[1:]
    small = (max(1, round(rows / factor)), max(1, round(cols / factor)))
    blurred = F.interpolate(F.interpolate(grid[None], size=small, mode="bilinear"), size=(rows, cols),
                            mode="bilinear")[0]
    return 1 - F.cosine_similarity(grid.flatten(1), blurred.flatten(1), dim=0).mean()


CHANNELS = [6, 10, 12, 14, 16, 24, 30, 36, 64, 96]
FACTORS = [1.5, 2.0, 2.5, 3.0, 4.0]


def _conv(c: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, c, 3))


def test_weight_smoothness_equals_topoloss_for_every_channel_count_and_factor():
    tested = 0
    for c in CHANNELS:
        rows, _ = ref_sheet_size(c)
        sheet = CorticalSheet((c, 5, 5), layer="0")
        assert sheet.tile_shape == ref_sheet_size(c)  # the sheet's tile is TopoLoss's sheet
        for factor in FACTORS:
            if factor > rows:  # TopoLoss asserts the factor fits the sheet; so do we (see the error test)
                continue
            model = _conv(c, seed=c)
            ours = WeightSmoothnessLoss(sheet, factor=factor, model=model)()
            ours.backward()
            grad_ours = model[0].weight.grad.clone()
            model[0].weight.grad = None
            ref = ref_laplacian_pyramid_loss(ref_cortical_sheet(model[0].weight), factor, factor)
            ref.backward()
            assert abs(float(ours) - float(ref)) <= 1e-6, (c, factor, float(ours), float(ref))
            assert torch.allclose(grad_ours, model[0].weight.grad, atol=1e-7, rtol=1e-5), (c, factor)
            tested += 1
    assert tested >= 25


def test_weight_smoothness_equals_topoloss_on_linear_layers():
    for c, factor in [(12, 2.0), (20, 1.5), (64, 3.0)]:
        torch.manual_seed(c)
        model = nn.Sequential(nn.Linear(20, c))
        ours = WeightSmoothnessLoss(CorticalSheet((c,), layer="0"), factor=factor, model=model)()
        ref = ref_laplacian_pyramid_loss(ref_cortical_sheet(model[0].weight), factor, factor)
        assert abs(float(ours) - float(ref)) <= 1e-6


def test_issue_reproduction_and_the_earlier_form_differs():
    """The issue's case: C = 64 on an 8 x 8 tile, factor 3 (TopoLoss: 2 x 2 samples every 3 slots)."""
    model = _conv(64, seed=0)
    sheet = CorticalSheet((64, 5, 5), layer="0")
    ours = float(WeightSmoothnessLoss(sheet, factor=3.0, model=model)())
    ref = float(ref_laplacian_pyramid_loss(ref_cortical_sheet(model[0].weight), 3.0, 3.0))
    earlier = float(earlier_weight_smoothness(model[0].weight.reshape(8, 8, -1).permute(2, 0, 1), 3.0))
    assert abs(ours - ref) <= 1e-6
    assert abs(earlier - ref) > 0.05, (earlier, ref)


def test_weight_smoothness_follows_shuffled_slots():
    model = _conv(16, seed=1)
    sheet = CorticalSheet((16, 5, 5), layer="0", shuffle_channels=True, seed=3)
    weight = model[0].weight
    in_slot_order = torch.empty_like(weight).index_copy(0, torch.as_tensor(sheet.slot_of_channel), weight)
    ours = float(WeightSmoothnessLoss(sheet, factor=2.0, model=model)())
    assert abs(ours - float(ref_laplacian_pyramid_loss(ref_cortical_sheet(in_slot_order), 2.0, 2.0))) <= 1e-6


def _interpolation_matrix(shape_in, **interpolate_args) -> torch.Tensor:
    """Bilinear interpolation as a matrix (out slots x in slots), from the images of unit impulses."""
    impulses = torch.eye(shape_in[0] * shape_in[1], dtype=torch.float64).reshape(-1, 1, *shape_in)
    out = F.interpolate(impulses, mode="bilinear", **interpolate_args)
    return out.reshape(len(impulses), -1).T


def test_empty_slots_of_a_chosen_grid_take_no_part_in_the_blur():
    """TopoLoss's sheet has no empty slots; a user grid may. Then every down-sampled value is the weighted mean of
    the occupied slots of its bilinear footprint (weights renormalised over them), and only occupied slots count in
    the mean cosine. Written here as matrices; the earlier form (zero-filled slots in the blur) differs."""
    sheet = CorticalSheet((10, 2, 2), grid=(6, 8), layer="0")                # 3 x 4 tiles, 2 empty slots
    assert sheet.tile_shape == (3, 4)
    model = _conv(10, seed=2)
    with torch.no_grad():  # weights turning with the slot's column: blurring mixes directions
        angle = torch.arange(10, dtype=torch.float32)[:, None] % 4 * 0.6
        base = torch.randn(2, 27)
        model[0].weight.copy_((torch.cos(angle) * base[0] + torch.sin(angle) * base[1]).reshape(10, 3, 3, 3))
    ours = float(WeightSmoothnessLoss(sheet, factor=1.5, model=model)())
    occupied = torch.zeros(12, dtype=torch.bool)
    occupied[:10] = True
    weights = model[0].weight.detach().double().reshape(10, -1)               # channel c in slot c
    down = _interpolation_matrix((3, 4), scale_factor=(1 / 1.5, 1 / 1.5))[:, occupied]  # samples rows 0.25, 1.75
    up = _interpolation_matrix((2, 2), size=(3, 4))[occupied]             # floor(size / factor) samples
    blurred = up @ ((down / down.sum(1, keepdim=True)) @ weights)
    expected = 1 - F.cosine_similarity(weights, blurred, dim=1).mean()
    assert ours == pytest.approx(float(expected), abs=1e-6)
    zero_filled = up @ (down @ weights)
    earlier = 1 - F.cosine_similarity(weights, zero_filled, dim=1).mean()
    assert abs(float(earlier) - float(expected)) > 1e-3, (float(earlier), float(expected))


def test_weight_smoothness_factor_must_fit_the_tile():
    with pytest.raises(ValueError, match="2 x 5 tile of 10 channels; use factor <= 2"):
        WeightSmoothnessLoss(CorticalSheet((10, 5, 5), layer="0"), factor=3.0, model=_conv(10, 0))
    with pytest.raises(ValueError, match="factor must be > 1"):
        WeightSmoothnessLoss(CorticalSheet((10, 5, 5), layer="0"), factor=1.0, model=_conv(10, 0))


# -- port of TDANN -------------------------------------------------------------------------------------------------
def ref_corrcoef(x: torch.Tensor) -> torch.Tensor:
    """spacetorch.utils.torch_utils.corrcoef (rows are variables; a zero std is set to 1; clamped)."""
    xm = x - x.mean(1, keepdim=True)
    c = xm.mm(xm.t()) / (x.size(1) - 1)
    stddev = torch.pow(torch.diag(c), 0.5)
    stddev[stddev == 0] = 1
    c = c / stddev[:, None]
    c = c / stddev[None, :]
    return torch.clamp(c, -1.0, 1.0)


def ref_pearsonr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xm, ym = x - x.mean(), y - y.mean()
    return xm.dot(ym) / (torch.norm(xm, 2) * torch.norm(ym, 2))


def ref_lower_tri(mat: torch.Tensor) -> torch.Tensor:
    n = mat.shape[0]
    return mat[torch.tril_indices(n, n, offset=-1).unbind()]


def ref_spatial_correlation_loss(features: torch.Tensor, positions: torch.Tensor, indices: torch.Tensor):
    """losses_torch.spatial_correlation_loss for one given neighbourhood (the reference draws it at random)."""
    feats = torch.flatten(features, start_dim=1)[:, indices]
    pos = positions[indices]
    distance_similarity = 1 / (torch.norm(pos[:, None] - pos, dim=2, p=2) + 1)
    response_similarity = ref_corrcoef(feats.t())
    r = ref_pearsonr(ref_lower_tri(response_similarity), ref_lower_tri(distance_similarity))
    return (1 - r) / 2.0


def ref_loss_batch(features, positions, neighbourhoods):
    """spatial_loss_batch with agg_func = torch.mean, one run per neighbourhood."""
    return torch.stack([ref_spatial_correlation_loss(features, positions, n) for n in neighbourhoods]).mean()


def smooth_responses(positions: np.ndarray, batch: int, rng: np.random.Generator, dead_every: int = 0):
    """ReLU of random plane waves over the sheet plus noise (correlations far from 0, a positive mean)."""
    k = rng.normal(size=(batch, 2)) / 1.5
    resp = np.cos(positions @ k.T + rng.uniform(0, 6.3, size=batch)).T + 0.3 * rng.normal(size=(batch, len(positions)))
    resp = np.maximum(resp + 0.3, 0.0)
    if dead_every:
        resp[:, ::dead_every] = 0.0
    return resp


@pytest.mark.parametrize("unit_shape, size, batch", [((8, 6, 6), 10, 4), ((16, 8, 8), 60, 32),
                                                      ((32, 4, 4), 200, 128), ((64, 8, 8), 256, 64)])
def test_spatial_loss_equals_tdann_on_random_inputs(unit_shape, size, batch):
    rng = np.random.default_rng(sum(unit_shape) + size)
    sheet = CorticalSheet(unit_shape, size_mm=6.0)
    pos64 = torch.tensor(sheet.positions, dtype=torch.float64)
    hoods = torch.as_tensor(window_neighbourhoods(sheet.positions, size, 6, seed=1))
    for responses in (rng.normal(size=(batch, sheet.n_units)), smooth_responses(sheet.positions, batch, rng, 7)):
        for scale in (1.0, 1e-3, 1e-4):
            x = torch.tensor(responses * scale)
            ref = float(ref_loss_batch(x, pos64, hoods))
            ours32 = float(spatial_correlation_loss(x.float(), pos64.float(), hoods))
            ours64 = float(spatial_correlation_loss(x, pos64, hoods))
            assert abs(ours32 - ref) <= 1e-6 and abs(ours64 - ref) <= 1e-10, (scale, ours32, ours64, ref)


def test_spatial_loss_gradient_equals_tdann():
    rng = np.random.default_rng(0)
    sheet = CorticalSheet((16, 8, 8), size_mm=6.0)
    pos = torch.tensor(sheet.positions, dtype=torch.float64)
    hoods = torch.as_tensor(window_neighbourhoods(sheet.positions, 80, 4, seed=2))
    # no constant units: the reference's gradient is NaN for them (pow(0, 0.5)); ours is 0 (tested in test_training)
    x = torch.tensor(smooth_responses(sheet.positions, 32, rng) + 1e-3 * rng.normal(size=(32, sheet.n_units)))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref_loss_batch(a, pos, hoods).backward()
    spatial_correlation_loss(b, pos, hoods).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12 * float(a.grad.abs().max()))
    c = x.float().requires_grad_()
    spatial_correlation_loss(c, pos.float(), hoods).backward()
    assert torch.allclose(c.grad.double(), a.grad, rtol=1e-3, atol=1e-4 * float(a.grad.abs().max()))


def test_spatial_loss_is_scale_free_and_the_earlier_eps_form_is_not():
    rng = np.random.default_rng(1)
    sheet = CorticalSheet((16, 8, 8), size_mm=6.0)
    pos = torch.tensor(sheet.positions)
    hoods = torch.as_tensor(window_neighbourhoods(sheet.positions, 100, 8, seed=0))
    x = torch.tensor(smooth_responses(sheet.positions, 64, rng), dtype=torch.float32)
    base = float(spatial_correlation_loss(x, pos, hoods))
    ref = float(ref_loss_batch(x.double() * 1e-4, pos.double(), hoods))
    assert float(spatial_correlation_loss(x * 1e-4, pos, hoods)) == pytest.approx(base, abs=1e-6)
    assert abs(float(spatial_correlation_loss(x * 1e-4, pos, hoods, eps=1e-6)) - ref) > 1e-5


# -- TDANN's neighbourhoods -----------------------------------------------------------------------------------------
def ref_indices_within_limits(positions, limits):
    return np.where((positions[:, 0] >= limits[0][0]) & (positions[:, 0] <= limits[0][1])
                    & (positions[:, 1] >= limits[1][0]) & (positions[:, 1] <= limits[1][1]))[0]


def ref_precompute_neighbourhoods(positions, radius, n_neighbourhoods, rng):
    """precompute_neighborhoods, with np.random swapped for a seeded Generator."""
    start_xs = rng.uniform(low=np.min(positions[:, 0]) + radius, high=np.max(positions[:, 0]) - radius,
                           size=(n_neighbourhoods,))
    start_ys = rng.uniform(low=np.min(positions[:, 1]) + radius, high=np.max(positions[:, 1]) - radius,
                           size=(n_neighbourhoods,))
    return [ref_indices_within_limits(positions, [[x - radius, x + radius], [y - radius, y + radius]])
            for x, y in zip(start_xs, start_ys)]


def ref_collapse_and_trim(nb_list, rng, keep_fraction=0.95, min_nb_size=25, keep_limit=None):
    """collapse_and_trim_neighborhoods (target_shape None), np.random swapped for a seeded Generator."""
    sizes = np.array([len(n) for n in nb_list])
    n_size = max(int(scipy.stats.scoreatpercentile(sizes, (1 - keep_fraction) * 100)), min_nb_size)
    final_limit = n_size if keep_limit is None else np.min([n_size, keep_limit])
    kept = [rng.choice(indices, size=(final_limit,), replace=False) for indices in nb_list
            if len(indices) >= final_limit]
    return np.stack(kept)


@pytest.mark.parametrize("layout, width_mm, limit", [("sheet", 1.5, 500), ("sheet", 2.5, 60), ("sheet", 2.0, 30),
                                                      ("scattered", 2.0, 500), ("scattered", 3.0, 100)])
def test_window_neighbourhoods_equal_tdann(layout, width_mm, limit):
    if layout == "sheet":
        positions = CorticalSheet((16, 8, 8), size_mm=10.0).positions.astype(np.float64)
    else:  # window counts vary continuously: the 5th-percentile size rule decides the size
        positions = np.random.default_rng(7).uniform(0, 10, size=(2000, 2))
    ours = window_neighbourhoods(positions, limit, 300, width_mm=width_mm, seed=4)
    rng = np.random.default_rng(4)
    ref = ref_collapse_and_trim(ref_precompute_neighbourhoods(positions, width_mm / 2, 300, rng), rng,
                                keep_limit=limit)
    assert np.array_equal(ours, ref) and len(ours) > 100  # (windows under TDANN's 25-unit minimum are dropped)
    spans = np.ptp(positions[ours], axis=1)                                  # (n, 2): every hood inside a window
    assert (spans <= width_mm + 1e-9).all()


def test_window_width_by_default_fits_the_neighbourhood_size():
    positions = CorticalSheet((16, 8, 8), size_mm=10.0).positions
    for size in (10, 100, 256):
        hoods = window_neighbourhoods(positions, size, 200, seed=0)
        assert hoods.shape[1] == size and len(hoods) >= 0.9 * 200
        assert all(len(np.unique(h)) == size for h in hoods)


def test_window_members_are_the_units_inside_each_square():
    positions = np.random.default_rng(0).uniform(0, 5, size=(400, 2))
    centres = np.random.default_rng(1).uniform(1, 4, size=(20, 2))
    ours = window_members(positions, centres, 1.2)
    for c, members in zip(centres, ours):
        expected = ref_indices_within_limits(positions, [[c[0] - 0.6, c[0] + 0.6], [c[1] - 0.6, c[1] + 0.6]])
        assert np.array_equal(members, expected)


def test_loss_module_defaults_to_tdann_and_keeps_the_earlier_form():
    sheet = CorticalSheet((32, 8, 8), size_mm=10.0)
    activation = torch.tensor(smooth_responses(sheet.positions, 32, np.random.default_rng(2)),
                              dtype=torch.float32).reshape(32, 32, 8, 8)
    loss = SpatialCorrelationLoss(sheet, neighbourhood_size=128, n_neighbourhoods=4, pool_size=64, seed=5)
    assert np.array_equal(loss.pool.numpy(), window_neighbourhoods(sheet.positions, 128, 64, seed=5))
    pick = torch.randint(len(loss.pool), (4,), generator=torch.Generator().manual_seed(5))
    expected = ref_loss_batch(activation.double(), torch.tensor(sheet.positions, dtype=torch.float64),
                              loss.pool[pick])
    assert float(loss(activation)) == pytest.approx(float(expected), abs=1e-6)
    knn = SpatialCorrelationLoss(sheet, neighbourhood="knn", eps=1e-6, neighbourhood_size=128, pool_size=64, seed=5)
    assert np.array_equal(knn.pool.numpy(), sample_neighbourhoods(sheet.positions, 128, 64, seed=5))
    assert knn.eps == 1e-6 and loss.eps == 0.0


def test_spatial_loss_option_errors():
    sheet = CorticalSheet((8, 4, 4), size_mm=4.0)
    with pytest.raises(ValueError, match="wider than the sheet"):
        SpatialCorrelationLoss(sheet, window_mm=50.0)
    with pytest.raises(ValueError, match="window_mm applies to neighbourhood: window"):
        SpatialCorrelationLoss(sheet, neighbourhood="knn", window_mm=1.0)
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        SpatialCorrelationLoss(sheet, eps=-1.0)
    with pytest.raises(ValueError, match="too few for neighbourhoods"):
        SpatialCorrelationLoss(sheet, window_mm=0.01)
    cfg = {"name": "small_cnn", "num_classes": 10, "width": 4,
           "topography": {"layers": ["conv3"], "weight": 1.0, "spatial_correlation": {"neighbourhood": "hex"}}}
    with pytest.raises(ConfigError, match="neighbourhood"):
        parse_topography(cfg, build_model(cfg))


def test_cached_pool_targets_give_the_loss_and_gradient_of_targets_computed_each_step(monkeypatch):
    from workbench.training import losses

    sheet = CorticalSheet((32, 8, 8), size_mm=10.0)
    activation = torch.tensor(smooth_responses(sheet.positions, 32, np.random.default_rng(3)),
                              dtype=torch.float32).reshape(32, 32, 8, 8)
    cached = SpatialCorrelationLoss(sheet, neighbourhood_size=96, n_neighbourhoods=4, pool_size=40, seed=2)
    monkeypatch.setattr(losses, "_TARGET_CACHE_BYTES", 0)
    uncached = SpatialCorrelationLoss(sheet, neighbourhood_size=96, n_neighbourhoods=4, pool_size=40, seed=2)
    assert cached.cache_targets and not uncached.cache_targets
    for _ in range(3):   # the same draws from both modules' generators
        a, b = activation.clone().requires_grad_(), activation.clone().requires_grad_()
        la, lb = cached(a), uncached(b)
        la.backward()
        lb.backward()
        assert float(la) == float(lb)
        assert torch.equal(a.grad, b.grad)
    assert cached.pool_targets.shape == (40, 96, 96) and uncached.pool_targets is None
