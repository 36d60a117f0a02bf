"""Topographic losses: push simulated neighbours on a cortical sheet to behave alike.

1. ``spatial_correlation`` (TDANN form; Lee et al. 2020, Margalit et al. 2024; ``neuroailab/TDANN``): in square
   windows of the sheet at uniform random centres, trimmed to one size, the pairwise Pearson correlations of unit
   responses over the batch should follow 1/(d + 1) of their cortical distance d (mm).
   Loss = (1 - Pearson(response correlations, 1/(d + 1))) / 2, in [0, 1]; scale-free, as TDANN's.
   The earlier form of this package (k nearest units, absolute eps) stays available: ``neighbourhood: knn``,
   ``eps: 1.0e-6``.
2. ``weight_smoothness`` (TopoLoss; Deb et al. 2025; ``toponets/topoloss`` ``laplacian_pyramid_loss``): the sheet
   of incoming-weight vectors of a layer's channels (laid out as the channel tile of the cortical sheet) should be
   close to its blurred self; blur = bilinear down-sampling by ``scale_factor = 1/factor`` and up-sampling back.
   Loss = 1 - mean cosine similarity(W, blur(W)), in [0, 2].

3. ``wiring_cost`` (ITN; Blauch et al. 2022): the connections into a sheet layer from the sheet before it, each
   weighted by its length on the overlaid sheets: sum of w^2 * d (``power: 2``) over the connections.

All compute in float32 whatever the autocast dtype (float64 for float64 inputs), finite with finite gradients on
constant responses or weights.

A loss is a registered ``nn.Module`` class ``Loss(sheet, <options>, model=None)`` with a ``needs_activations``
flag; its options are its constructor's keyword arguments, set under ``model.topography.<loss name>`` and checked
against the signature (``workbench.models.config.loss_options_schema``), so a plugin loss needs no other wiring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from workbench.models.sheet import CorticalSheet
from workbench.registry import Registry

__all__ = [
    "LOSSES", "spatial_correlation_loss", "pearson_rows", "SpatialCorrelationLoss", "WeightSmoothnessLoss",
    "sample_neighbourhoods", "window_neighbourhoods", "window_members", "trim_neighbourhoods", "TopographyObjective",
    "parse_topography", "weight_sheet", "topoloss_blur", "target_stats", "WiringCostLoss", "connection_distances",
]

_KNN_EPS = 1e-6  # the absolute eps of the earlier form (``eps`` option); 0 = TDANN's scale-free correlation
_TDANN_MIN_UNITS = 25  # collapse_and_trim_neighborhoods' min_nb_size
_TDANN_KEEP_FRACTION = 0.95  # ... and its keep_fraction: trim to the 5th-percentile window count
# A loss module keeps its pool's float32 targets (pool x k x k) when they take at most this much memory (the
# defaults, 512 x 256 x 256, take 128 MiB); larger pools compute the drawn neighbourhoods' targets every step.
_TARGET_CACHE_BYTES = 256 * 2**20
LOSSES: Registry[type] = Registry("topographic loss")


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = _KNN_EPS) -> torch.Tensor:
    """Pearson correlation of matching rows of a and b (..., P); eps keeps constant rows at r = 0, finite grads."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1) + eps)
    return num / den


def _safe_rsqrt(sum_sq: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(sum_sq + eps); with eps = 0 a zero sum gives 0 (TDANN's corrcoef sets a zero std to 1, so a
    constant unit correlates 0 with everything) with a zero, not NaN, gradient, and nothing depends on scale."""
    if eps > 0:
        return torch.rsqrt(sum_sq + eps)
    positive = sum_sq > 0
    return torch.where(positive, torch.rsqrt(torch.where(positive, sum_sq, torch.ones_like(sum_sq))), 0.0)


class _SpatialCorrelation(torch.autograd.Function):
    """Per neighbourhood, Pearson r between the response correlations of its units and its centred target, over
    the off-diagonal pairs. x: (m, k, B) responses of the m neighbourhoods' k units to the batch (each unit's
    responses contiguous); target: (m, k, k) from ``_centred_target``. The backward is written out because it is
    most of the loss's cost: with z = normalised x and C = z z^T, dr/dC = inv * target - r * inv^2 * (C - mean C)
    off the diagonal (symmetric), so dr/dz = 2 dr/dC z, one matmul where autograd runs two plus a dozen passes
    over the (m, k, k) pairs. Few, large operations throughout: on a busy CPU every parallel operation waits for
    its threads' turn, so the off-diagonal mean comes from (m, B) numbers and is subtracted inside the matmul."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
        k = x.shape[1]
        z = torch.sub(x, x.mean(2, keepdim=True))                             # centred over the batch
        sum_sq = torch.linalg.vector_norm(z, dim=2, keepdim=True) ** 2       # (two passes: var_mean is 10x slower)
        scale = _safe_rsqrt(sum_sq, eps)                                      # (m, k, 1); 0 for constant units
        z.mul_(scale)                                                         # unit norm
        # sum of all C_ij = |sum_i z_i|^2 and C_ii = |z_i|^2 = sum_sq * scale^2: the off-diagonal mean from (m, B)
        # and (m, k) numbers, not a pass over the pairs
        total = torch.linalg.vector_norm(z.sum(1), dim=1) ** 2
        mean = (total - (sum_sq * scale * scale).sum((1, 2))) / (k * (k - 1))
        centred = torch.baddbmm(-mean[:, None, None], z, z.transpose(1, 2))  # (m, k, k) correlations - mean
        diag = torch.diagonal(centred, dim1=1, dim2=2)
        # The target is centred with a zero diagonal: sum(C * target) is already the off-diagonal covariance.
        cross = (centred * target).sum((1, 2))
        ss = torch.linalg.vector_norm(centred.flatten(1), dim=1) ** 2 - (diag * diag).sum(1)
        inv = _safe_rsqrt(ss.clamp_min(0.0), eps)
        r = cross * inv
        ctx.save_for_backward(z, scale, target, centred, inv, r)
        return r

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_r: torch.Tensor):
        z, scale, target, centred, inv, r = ctx.saved_tensors
        # full precision like the forward, also when backward() is called inside an autocast region
        with torch.autocast(device_type=z.device.type, enabled=False):
            # dr/dC = a * (target - r * inv * centred): one pass over the pairs, the factor a goes on (m, k, B)
            a = (2.0 * grad_r.to(z.dtype) * inv)[:, None, None]
            grad_corr = torch.addcmul(target, centred, (-r * inv)[:, None, None])
            torch.diagonal(grad_corr, dim1=1, dim2=2).zero_()
            grad_z = torch.bmm(grad_corr, z)                                  # (m, k, B), without the factor a
            # Through z = x * scale (scale = 1/|x|): dx = scale * (dz - z <z, dz>). The centring needs no step:
            # z has zero batch mean, so dz = (dL/dC) z and z <z, dz> have too.
            along = (z * grad_z).sum(2, keepdim=True)
            return grad_z.addcmul_(z, along, value=-1.0).mul_(scale * a), None, None


def _target_with_diagonal(pos: torch.Tensor) -> torch.Tensor:
    """1/(d + 1) of every pair of each neighbourhood (m, k, 2) -> (m, k, k); the diagonal is 1."""
    # Differences, not the matmul form of cdist, which loses ~1e-3 mm on near pairs in float32.
    return torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist").add_(1.0).reciprocal_()


def target_stats(pos: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Off-diagonal mean of 1/(d + 1) and 1 / the norm of its centred off-diagonal entries, per neighbourhood
    (m, k, 2) -> (m,), (m,). They depend on positions only, so a loss module computes them once per neighbourhood."""
    k = pos.shape[1]
    target = _target_with_diagonal(pos)
    target.diagonal(dim1=1, dim2=2).zero_()
    mean = target.sum((1, 2)) / (k * (k - 1))
    target.sub_(mean[:, None, None]).diagonal(dim1=1, dim2=2).zero_()
    return mean, _safe_rsqrt((target * target).sum((1, 2)), eps)


def _pool_target_stats(positions: np.ndarray, pool: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``target_stats`` of every neighbourhood of a pool (n, k), in float64 over each pair once (scipy's pdist):
    the symmetric matrix holds every pair twice, hence the 2 in its squared norm."""
    from scipy.spatial.distance import pdist

    positions = np.asarray(positions, dtype=np.float64)
    mean, scale = np.empty(len(pool)), np.empty(len(pool))
    for i, hood in enumerate(pool):
        target = 1.0 / (pdist(positions[hood]) + 1.0)
        mean[i] = target.mean()
        sum_sq = 2.0 * float(((target - mean[i]) ** 2).sum()) + eps
        scale[i] = 1.0 / np.sqrt(sum_sq) if sum_sq > 0 else 0.0
    return mean, scale


def _centred_target(pos: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(1/(d + 1) - mean) * scale off the diagonal, 0 on it: the target centred over the off-diagonal pairs with
    unit norm. Each pair appears twice in the symmetric matrix, which leaves the Pearson correlation unchanged
    and spares gathering (and scattering back) a triangle."""
    distance = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist").add_(1.0)
    target = torch.addcdiv((-mean * scale)[:, None, None], scale[:, None, None], distance)   # one pass
    target.diagonal(dim1=1, dim2=2).zero_()
    return target


def spatial_correlation_loss(responses: torch.Tensor, positions: torch.Tensor, neighbourhoods: torch.Tensor,
                             eps: float = 0.0, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
                             targets: torch.Tensor | None = None) -> torch.Tensor:
    """TDANN spatial correlation loss (``spacetorch.losses.losses_torch.spatial_correlation_loss``), averaged over
    neighbourhoods: (1 - Pearson(unit response correlations, 1/(d + 1))) / 2 over the pairs of each neighbourhood.

    responses: (batch, n_units) of one layer; positions: (n_units, 2) in mm; neighbourhoods: (m, k) unit indices.
    eps: 0 is TDANN's form (scale-free: only the response correlations matter); > 0 adds it under every square
    root, the earlier form of this package (1e-6), which makes the loss depend on the response scale.
    stats: ``target_stats`` of the neighbourhoods' positions (with the same eps), if already known.
    targets: the neighbourhoods' centred targets (``_centred_target``, (m, k, k)), if already known.
    """
    if responses.ndim != 2 or responses.shape[1] != positions.shape[0]:
        raise ValueError(f"responses must be (batch, n_units={positions.shape[0]}), got {tuple(responses.shape)}")
    if responses.shape[0] < 2:
        raise ValueError("the spatial correlation loss needs a batch of at least 2 (correlations are over the batch)")
    if neighbourhoods.ndim != 2 or neighbourhoods.shape[1] < 3:
        raise ValueError(f"neighbourhoods must be (m, k >= 3) unit indices, got {tuple(neighbourhoods.shape)}")
    # float32 even inside a bf16/fp16 autocast region: correlations of near-identical units need the mantissa.
    with torch.autocast(device_type=responses.device.type, enabled=False):
        dtype = torch.float64 if responses.dtype == torch.float64 else torch.float32
        m, k = neighbourhoods.shape
        # (m, k, B): each unit's responses contiguous, for the normalisation and the matmuls
        x = responses.to(dtype).index_select(1, neighbourhoods.reshape(-1)).t().contiguous().view(m, k, -1)
        if targets is None:
            with torch.no_grad():
                pos = positions.to(dtype)[neighbourhoods]
                mean, scale = target_stats(pos, eps) if stats is None else (s.to(dtype) for s in stats)
                targets = _centred_target(pos, mean, scale)
        r = _SpatialCorrelation.apply(x, targets.to(dtype), eps)
        return ((1.0 - r) / 2.0).mean()


def sample_neighbourhoods(positions: np.ndarray, size: int, n: int, seed: int = 0) -> np.ndarray:
    """n neighbourhoods of the ``size`` units nearest to random centre units (seeded), as an (n, size) index array.

    The earlier form of this package (``neighbourhood: knn``); TDANN's is ``window_neighbourhoods``."""
    from scipy.spatial import cKDTree

    n_units = len(positions)
    size = min(int(size), n_units)
    if size < 3:
        raise ValueError(f"a neighbourhood needs at least 3 units to correlate correlations with distance, got {size}")
    rng = np.random.default_rng(seed)
    centres = rng.choice(n_units, size=min(int(n), n_units), replace=False)
    _, idx = cKDTree(positions).query(positions[centres], k=size)
    return np.asarray(idx, dtype=np.int64).reshape(len(centres), size)


def window_members(positions: np.ndarray, centres: np.ndarray, width_mm: float) -> list[np.ndarray]:
    """Indices of the units inside each square window of side ``width_mm`` centred at ``centres`` (n, 2), edges
    included (TDANN's ``indices_within_limits``)."""
    half = width_mm / 2.0
    members = []
    for chunk in np.array_split(np.asarray(centres), max(1, len(centres) // 256)):
        lo, hi = chunk[:, None, :] - half, chunk[:, None, :] + half
        inside = ((positions[None] >= lo) & (positions[None] <= hi)).all(-1)
        members.extend(np.flatnonzero(row) for row in inside)
    return members


def trim_neighbourhoods(members: list[np.ndarray], max_units: int, rng: np.random.Generator) -> np.ndarray:
    """TDANN's ``collapse_and_trim_neighborhoods`` (keep_fraction 0.95, min_nb_size 25, keep_limit = max_units):
    one size k = min(max(5th percentile of the window counts, 25), max_units); windows with fewer units are
    dropped, the others subsampled to k without replacement. Returns (n_kept, k)."""
    sizes = np.array([len(m) for m in members])
    # scipy.stats.scoreatpercentile interpolates linearly, as np.percentile does; TDANN truncates it to an int.
    size = min(max(int(np.percentile(sizes, (1 - _TDANN_KEEP_FRACTION) * 100)), _TDANN_MIN_UNITS), int(max_units))
    kept = [rng.choice(m, size=size, replace=False) for m in members if len(m) >= size]
    if size < 3 or not kept:
        raise ValueError(f"square windows hold {sizes.min()}-{sizes.max()} units, too few for neighbourhoods of "
                         f"{max(size, 3)}; use a larger window_mm (or neighbourhood_size for window_mm: null)")
    return np.stack(kept).astype(np.int64)


def _window_centres(lo: np.ndarray, hi: np.ndarray, width_mm: float, n: int, seed: int):
    """TDANN's uniform window centres, kept width/2 inside the sheet; returns them and the generator, which goes on
    to subsample the windows."""
    rng = np.random.default_rng(seed)
    half = width_mm / 2.0
    xs = rng.uniform(lo[0] + half, hi[0] - half, size=int(n))
    ys = rng.uniform(lo[1] + half, hi[1] - half, size=int(n))
    return np.stack([xs, ys], 1), rng


def window_neighbourhoods(positions: np.ndarray, size: int, n: int, width_mm: float | None = None,
                          seed: int = 0) -> np.ndarray:
    """TDANN's neighbourhoods (``precompute_neighborhoods`` + ``collapse_and_trim_neighborhoods``): n square windows
    of side ``width_mm`` at uniform random centres, kept inside the sheet, trimmed to one size <= ``size``.

    width_mm None: the narrowest side (from the sheet's mean density up, at most the sheet's shorter side) at which
    95% of the windows hold ``size`` units, so that the neighbourhoods have exactly ``size`` units."""
    positions = np.asarray(positions, dtype=np.float64)
    lo, hi = positions.min(0), positions.max(0)
    shorter = float(min(hi - lo))
    size = min(int(size), len(positions))
    if width_mm is None:
        width = min(float(np.sqrt(np.prod(np.maximum(hi - lo, 1e-12)) * size / len(positions))), shorter)
        while True:
            centres, rng = _window_centres(lo, hi, width, n, seed)
            members = window_members(positions, centres, width)
            fifth = np.percentile([len(m) for m in members], (1 - _TDANN_KEEP_FRACTION) * 100)
            if fifth >= size or width >= shorter:
                return trim_neighbourhoods(members, size, rng)
            # counts grow with the area: widen by the square root of the shortfall (and a little more)
            width = min(width * 1.02 * float(np.sqrt(size / max(fifth, 1.0))), shorter)
    if not (np.isfinite(width_mm) and width_mm > 0):
        raise ValueError(f"window_mm must be a positive width in mm, got {width_mm}")
    if width_mm > shorter:
        raise ValueError(f"window_mm = {width_mm:.3g} is wider than the sheet ({hi[0] - lo[0]:.3g} x "
                         f"{hi[1] - lo[1]:.3g} mm of unit positions); use a smaller window_mm or neighbourhood_size")
    centres, rng = _window_centres(lo, hi, width_mm, n, seed)
    return trim_neighbourhoods(window_members(positions, centres, width_mm), size, rng)


@LOSSES.register("spatial_correlation", citation=(
    "Margalit, E., Lee, H., Finzi, D., DiCarlo, J. J., Grill-Spector, K., & Yamins, D. L. K. (2024). A unifying "
    "framework for functional organization in early and higher ventral visual cortex. Neuron, 112(14), 2435-2451; "
    "Lee, H., et al. (2020). Topographic deep artificial neural networks reproduce the hallmarks of the primate "
    "inferior temporal cortex face processing network. bioRxiv 2020.07.09.185116."))
class SpatialCorrelationLoss(nn.Module):
    """Activation loss of one layer: needs the layer's output (batch, C, H, W) each step.

    Options (``model.topography.spatial_correlation``):
    neighbourhood: ``window`` (TDANN: square windows at uniform random centres, trimmed to one size) or ``knn``
        (the ``neighbourhood_size`` units nearest to a random unit; this package's earlier form).
    window_mm: side of the square windows in mm (TDANN: 1.6 mm in V1 ... 32 mm in VTC); null = the narrowest side
        at which 95% of the windows hold ``neighbourhood_size`` units.
    neighbourhood_size: units per neighbourhood. window: the most units kept per window (TDANN's keep_limit, 500):
        with window_mm null exactly this many, with a given window_mm fewer where 5% of its windows hold fewer.
    n_neighbourhoods: neighbourhoods averaged per step (TDANN's neighborhoods_per_batch).
    pool_size: neighbourhoods precomputed to draw from (TDANN: 20000 windows).
    eps: 0 = TDANN's scale-free correlations; 1e-6 = the earlier form (absolute eps under the square roots).
    """

    needs_activations = True

    def __init__(self, sheet: CorticalSheet, neighbourhood: Literal["window", "knn"] = "window",
                 window_mm: float | None = None, neighbourhood_size: int = 256, n_neighbourhoods: int = 8,
                 pool_size: int = 512, eps: float = 0.0, seed: int = 0, model: nn.Module | None = None):
        super().__init__()
        if n_neighbourhoods < 1:
            raise ValueError(f"n_neighbourhoods must be >= 1, got {n_neighbourhoods}")
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a number >= 0 (0 = TDANN's scale-free form), got {eps}")
        if neighbourhood == "window":
            pool = window_neighbourhoods(sheet.positions, neighbourhood_size, pool_size, window_mm, seed)
        elif neighbourhood == "knn":
            if window_mm is not None:
                raise ValueError("window_mm applies to neighbourhood: window; knn neighbourhoods are sized by "
                                 "neighbourhood_size")
            pool = sample_neighbourhoods(sheet.positions, neighbourhood_size, pool_size, seed)
        else:
            raise ValueError(f"neighbourhood must be 'window' (TDANN) or 'knn', got {neighbourhood!r}")
        self.n_units = sheet.n_units
        self.n_neighbourhoods = int(n_neighbourhoods)
        self.eps = float(eps)
        # Buffers (not parameters, not in the state dict) so they follow the module to the GPU.
        self.register_buffer("positions", torch.as_tensor(sheet.positions, dtype=torch.float32), persistent=False)
        self.register_buffer("pool", torch.as_tensor(pool), persistent=False)
        # The target's off-diagonal mean and norm depend on the positions only: once per pool neighbourhood
        # instead of two passes over the pairs every step.
        mean, scale = _pool_target_stats(sheet.positions, pool, self.eps)
        self.register_buffer("pool_target_mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pool_target_scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
        # The centred targets themselves, built at the first float32 step on the module's device (a step then
        # gathers its neighbourhoods' targets instead of recomputing their distances), when they fit the budget.
        self.cache_targets = pool.shape[0] * pool.shape[1] ** 2 * 4 <= _TARGET_CACHE_BYTES
        self.register_buffer("pool_targets", None, persistent=False)
        # A private generator: drawing neighbourhoods never touches the global RNG, so weight 0 reproduces plain
        # training exactly, and every DDP rank draws the same neighbourhoods.
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        responses = activation.reshape(activation.shape[0], -1)
        if responses.shape[1] != self.n_units:
            raise ValueError(f"activation has {responses.shape[1]} units per image, the sheet {self.n_units}")
        pick = torch.randint(len(self.pool), (min(self.n_neighbourhoods, len(self.pool)),), generator=self.generator)
        pick = pick.to(self.pool.device)
        targets = self._cached_targets(pick) if responses.dtype != torch.float64 else None
        return spatial_correlation_loss(responses, self.positions, self.pool[pick], self.eps,
                                        stats=(self.pool_target_mean[pick], self.pool_target_scale[pick]),
                                        targets=targets)

    def _cached_targets(self, pick: torch.Tensor) -> torch.Tensor | None:
        """The drawn neighbourhoods' float32 centred targets from the pool's cache (None without a cache)."""
        if not self.cache_targets:
            return None
        if self.pool_targets is None or self.pool_targets.device != self.pool.device:
            with torch.no_grad():
                chunks = zip(self.pool.split(64), self.pool_target_mean.split(64), self.pool_target_scale.split(64))
                self.pool_targets = torch.cat([_centred_target(self.positions[hoods], mean, scale)
                                               for hoods, mean, scale in chunks])
        return self.pool_targets.index_select(0, pick)


def _producing_weight(module: nn.Module, n_out: int) -> nn.Parameter:
    """The weight of the last Conv2d/Linear inside ``module`` with ``n_out`` outputs (what makes the layer's units)."""
    candidates = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features) == n_out]
    if not candidates:
        raise ValueError(f"no Conv2d/Linear with {n_out} outputs inside {type(module).__name__}; the weight "
                         "smoothness loss needs a layer that ends in a convolution or linear map")
    return candidates[-1].weight


def weight_sheet(weight: torch.Tensor, sheet: CorticalSheet) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the per-channel incoming-weight vectors on the channel tile: (fan_in, rows, cols) + occupied mask."""
    c = weight.shape[0]
    tr, tc = sheet.tile_shape
    flat = weight.reshape(c, -1)
    flat = flat if flat.dtype == torch.float64 else flat.float()
    grid = flat.new_zeros(tr * tc, flat.shape[1])
    slots = torch.as_tensor(sheet.slot_of_channel, device=flat.device)
    grid = grid.index_copy(0, slots, flat)
    mask = torch.zeros(tr * tc, dtype=torch.bool, device=flat.device)
    mask[slots] = True
    return grid.T.reshape(-1, tr, tc), mask.reshape(tr, tc)


def topoloss_blur(grid: torch.Tensor, factor: float, occupied: torch.Tensor | None = None) -> torch.Tensor:
    """TopoLoss's blur of a (..., channels, rows, cols) sheet (``laplacian_pyramid_loss``): bilinear down-sampling
    with ``scale_factor = 1/factor`` (so floor(rows / factor) rows, sampled every ``factor`` slots) and bilinear
    up-sampling back to (rows, cols).

    occupied: optional (rows, cols) mask of the slots that hold a channel (``grid`` is 0 elsewhere). Each
    down-sampled value is then the weighted mean over the occupied slots of its footprint (normalised
    interpolation), so empty slots take no part; TopoLoss's sheets have none."""
    small = F.interpolate(grid, scale_factor=(1.0 / factor, 1.0 / factor), mode="bilinear")
    if occupied is not None:
        share = F.interpolate(occupied.to(grid.dtype)[None, None], scale_factor=(1.0 / factor, 1.0 / factor),
                              mode="bilinear")[0, 0]
        small = small / torch.where(share > 0, share, torch.ones_like(share))
    return F.interpolate(small, size=grid.shape[-2:], mode="bilinear")


@LOSSES.register("weight_smoothness", citation=(
    "Deb, M., Deb, M., & Murty, N. A. R. (2025). TopoNets: High performing vision and language models with "
    "brain-like topography. ICLR 2025 (TopoLoss)."))
class WeightSmoothnessLoss(nn.Module):
    """TopoLoss weight smoothness of one layer (needs no activations): 1 - mean over the tile slots of the cosine
    similarity between a channel's incoming weights and their blurred sheet (``topoloss_blur``).

    On the default tile (every slot holds a channel, ``channel_tile_shape``) this is TopoLoss's
    ``laplacian_pyramid_loss`` exactly. A sheet ``grid`` with empty slots (which TopoLoss never has) keeps them out
    of the blur (normalised down-sampling, see ``topoloss_blur``), and the mean runs over the occupied slots only.
    """

    needs_activations = False

    def __init__(self, sheet: CorticalSheet, factor: float = 2.0, model: nn.Module | None = None):
        super().__init__()
        if model is None:
            raise ValueError("the weight smoothness loss needs the model to find the layer's weights")
        tr, tc = sheet.tile_shape
        if not 1 < factor <= min(tr, tc):
            raise ValueError(
                f"factor must be > 1 and at most the channel tile's shorter side (the tile is down-sampled by it), "
                f"got {factor} for a {tr} x {tc} tile of {sheet.unit_shape[0]} channels"
                + ("" if factor <= 1 else f"; use factor <= {min(tr, tc)} or a sheet grid with a larger tile"))
        c = sheet.unit_shape[0]
        self.sheet = sheet
        self.factor = float(factor)
        self.full_tile = tr * tc == c
        # Kept outside the module tree: the model owns these weights (no duplicate parameters or state-dict keys).
        self.__dict__["layer_module"] = model.get_submodule(sheet.layer)
        _producing_weight(self.layer_module, c)  # fail now, not in the first step

    def forward(self, activation: torch.Tensor | None = None) -> torch.Tensor:
        w = _producing_weight(self.layer_module, self.sheet.unit_shape[0])
        with torch.autocast(device_type=w.device.type, enabled=False):
            grid, mask = weight_sheet(w, self.sheet)
            blurred = topoloss_blur(grid[None], self.factor, None if self.full_tile else mask)[0]
            # per slot, over the fan-in; torch's default eps, as TopoLoss
            cos = F.cosine_similarity(grid.flatten(1), blurred.flatten(1), dim=0)
            return 1.0 - (cos if self.full_tile else cos[mask.flatten()]).mean()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def connection_distances(module: nn.Module, in_shape: tuple[int, ...], pre_positions: np.ndarray,
                         post_sheet: CorticalSheet) -> tuple[torch.Tensor, int]:
    """Summed sheet distances of the connections each weight of ``module`` (a Conv2d or Linear) makes, and the
    number of connections: (tensor shaped like the weight, n).

    A convolution weight w[o, i, a, b] connects every output position (y, x) to the input unit (i, y s - p + a d,
    x s - p + b d) (padding excluded), so its entry is the sum of those distances. The output position maps to the
    post-synaptic sheet's cell (y H / H_out, x W / W_out): when a pooling follows the convolution, a pooled unit
    stands for the outputs it pools. A Linear weight w[o, i] connects post unit o to pre unit i.
    pre_positions: (n_in, 2) in the flattened (C, H, W) order of the module's input."""
    pre = torch.as_tensor(np.asarray(pre_positions, dtype=np.float64))
    post = torch.as_tensor(np.asarray(post_sheet.positions, dtype=np.float64))
    if isinstance(module, nn.Linear):
        if pre.shape[0] != module.in_features or post.shape[0] != module.out_features:
            raise ValueError(f"a Linear {module.in_features} -> {module.out_features} between sheets of "
                             f"{pre.shape[0]} and {post.shape[0]} units: the sheets must hold its inputs and outputs")
        return torch.cdist(post, pre), module.in_features * module.out_features
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        raise ValueError(f"the wiring cost needs a Conv2d (groups = 1) or a Linear, got {module}")
    c_in, h_in, w_in = in_shape
    c_out, h, w = post_sheet.unit_shape
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    if isinstance(module.padding, str):
        raise ValueError("the wiring cost needs a numeric conv padding, got padding='same'/'valid'")
    ph, pw = _pair(module.padding)
    h_out, w_out = (_conv_output_size(h_in, kh, sh, ph, dh), _conv_output_size(w_in, kw, sw, pw, dw))
    pre = pre.reshape(c_in, h_in, w_in, 2)
    post = post.reshape(c_out, h, w, 2)
    total = torch.zeros(module.weight.shape, dtype=torch.float64)
    n = 0
    for a in range(kh):
        ys = torch.arange(h_out)
        iy = ys * sh - ph + a * dh
        ys, iy = ys[(iy >= 0) & (iy < h_in)], iy[(iy >= 0) & (iy < h_in)]
        for b in range(kw):
            xs = torch.arange(w_out)
            ix = xs * sw - pw + b * dw
            xs, ix = xs[(ix >= 0) & (ix < w_in)], ix[(ix >= 0) & (ix < w_in)]
            if not len(ys) or not len(xs):
                continue
            post_at = post[:, ys * h // h_out][:, :, xs * w // w_out]          # (C_out, ny, nx, 2)
            pre_at = pre[:, iy][:, :, ix]                                     # (C_in, ny, nx, 2)
            d = torch.cdist(post_at.flatten(1, 2).transpose(0, 1), pre_at.flatten(1, 2).transpose(0, 1))
            total[:, :, a, b] = d.sum(0)                                      # over the output positions
            n += c_out * c_in * len(ys) * len(xs)
    return total, n


@LOSSES.register("wiring_cost", citation=(
    "Blauch, N. M., Behrmann, M., & Plaut, D. C. (2022). A connectivity-constrained computational account of "
    "topographic organization in primate high-level visual cortex. PNAS, 119(3), e2112566119 (ITN); "
    "Jacobs, R. A., & Jordan, M. I. (1992). Computational consequences of a bias toward short connections. "
    "Journal of Cognitive Neuroscience, 4(4), 323-336."))
class WiringCostLoss(nn.Module):
    """ITN's wiring cost of one layer (needs no activations): the connections from the previous sheet into this
    layer, each weighted by its length on the sheets, sum over connections of |w|^power * d(pre, post), d in mm
    between the two sheets overlaid in one frame (ITN's areas share the sheet coordinates).

    Options (``model.topography.wiring_cost``):
    power: 2 = ITN's distance-weighted L2 penalty (weight decay scaled by connection length); 1 = L1.
    reduction: ``mean`` over the connections (a weight comparable across layers and sizes) or ``sum`` (ITN's form:
        the config weight is then ITN's lambda).
    source_layer: the sheet layer whose output feeds this one; null = a cortical sheet of the model with exactly
        the producing convolution's input shape, else a default sheet of that shape and of this sheet's size.

    The distances need the producing layer's input shape, read at the model's first forward pass: call the loss
    after a forward pass (training does).
    """

    needs_activations = False

    def __init__(self, sheet: CorticalSheet, power: float = 2.0, reduction: Literal["mean", "sum"] = "mean",
                 source_layer: str | None = None, model: nn.Module | None = None):
        super().__init__()
        if model is None:
            raise ValueError("the wiring cost needs the model to find the layer's weights")
        if power not in (1.0, 2.0):
            raise ValueError(f"power must be 1 (L1) or 2 (ITN's L2), got {power}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum' (ITN's), got {reduction!r}")
        self.sheet, self.power, self.reduction, self.source_layer = sheet, float(power), reduction, source_layer
        layer_module = model.get_submodule(sheet.layer)
        weight = _producing_weight(layer_module, sheet.unit_shape[0])
        producer = [m for m in layer_module.modules() if getattr(m, "weight", None) is weight][-1]
        # Kept outside the module tree: the model owns them (no duplicate parameters or state-dict keys).
        self.__dict__.update(model_ref=model, producer=producer)
        self.in_shape: tuple[int, ...] | None = None
        self._shape_hook = producer.register_forward_pre_hook(self._record_input_shape)
        self.register_buffer("distances", None, persistent=False)
        self.n_connections = 0

    def _record_input_shape(self, _module, inputs) -> None:
        self.in_shape = tuple(inputs[0].shape[1:])
        self._shape_hook.remove()

    def _pre_positions(self) -> np.ndarray:
        sheets = dict(getattr(self.model_ref, "cortical_sheets", {}) or {})
        if self.source_layer is not None:
            if self.source_layer not in sheets:
                raise ValueError(f"wiring_cost.source_layer {self.source_layer!r} has no cortical sheet; sheet "
                                 f"layers: {sorted(sheets)}")
            source = sheets[self.source_layer]
        else:
            n_in = int(np.prod(self.in_shape))
            fits = [s for s in sheets.values() if s.layer != self.sheet.layer and
                    (tuple(s.unit_shape) == tuple(self.in_shape) or (len(self.in_shape) == 1 and s.n_units == n_in))]
            source = fits[-1] if fits else CorticalSheet(
                self.in_shape if len(self.in_shape) == 3 else (n_in,), size_mm=self.sheet.size_mm,
                jitter=self.sheet.jitter, seed=self.sheet.seed, layer="input of " + self.sheet.layer)
        if source.n_units != int(np.prod(self.in_shape)):
            raise ValueError(f"the sheet of {source.layer!r} holds {source.n_units} units, the input of "
                             f"{self.sheet.layer!r} {self.in_shape}: name the layer that feeds it as source_layer")
        return source.positions

    def forward(self, activation: torch.Tensor | None = None) -> torch.Tensor:
        w = self.producer.weight
        if self.distances is None:
            if self.in_shape is None:
                raise RuntimeError(f"the wiring cost of {self.sheet.layer!r} reads the layer's input shape at the "
                                   "model's first forward pass: run the model once before calling the loss")
            distances, self.n_connections = connection_distances(self.producer, self.in_shape,
                                                                 self._pre_positions(), self.sheet)
            self.distances = distances.to(device=w.device, dtype=torch.float64 if w.dtype == torch.float64
                                          else torch.float32)
        with torch.autocast(device_type=w.device.type, enabled=False):
            w = w if w.dtype == torch.float64 else w.float()
            cost = ((w * w if self.power == 2.0 else w.abs()) * self.distances.to(w.device)).sum()
            return cost / self.n_connections if self.reduction == "mean" else cost


# -- configuration -------------------------------------------------------------------------------------------------
@dataclass
class TopographyObjective:
    layer: str
    loss_name: str
    weight: float
    loss: nn.Module
    options: dict[str, Any] = field(default_factory=dict)


def parse_topography(model_cfg: dict, model: nn.Module, sheets: dict[str, CorticalSheet] | None = None
                     ) -> list[TopographyObjective]:
    """Validated objectives from ``model_cfg['topography']`` (layers, weight, loss, per-loss options).

    The keys are checked by ``workbench.models.config.parse_model_topography``; each loss's options are its
    constructor's keyword arguments (``loss_options_schema``), so a registered loss maps its own options."""
    from workbench.config import ConfigError
    from workbench.models import check_layers
    from workbench.models.config import parse_model_topography

    section, options = parse_model_topography(model_cfg.get("topography"), LOSSES)
    layers = section.layers
    if not layers:
        return []
    check_layers(model, layers)
    sheets = getattr(model, "cortical_sheets", {}) if sheets is None else sheets
    missing = [layer for layer in layers if layer not in sheets]
    if missing:
        raise KeyError(f"no cortical sheet for topography layer(s) {missing}; build them with "
                       "workbench.models.build_sheets(model, model_cfg)")
    objectives = []
    for layer in layers:
        loss_name = section.loss_of(layer)
        given = options.get(loss_name, {})
        try:
            loss = LOSSES.get(loss_name)(sheets[layer], model=model, **given)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad options model.topography.{loss_name} = {given} for layer {layer!r}: {err}"
                              ) from None
        objectives.append(TopographyObjective(layer, loss_name, section.weight_of(layer), loss, given))
    return objectives
