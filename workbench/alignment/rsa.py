"""Representational similarity analysis: RDMs and their comparison, vectorised in torch.

Conventions (those of rsatoolbox, which the tests use as the oracle):

* An RDM is stored as its *condensed* vector, the upper triangle read row by row (``scipy.spatial.distance
  .squareform`` order). Inputs may be square (n x n), condensed (P,), or stacks (k x n x n) / (k x P).
* ``compute_rdm`` metrics: ``correlation`` (1 - Pearson r between stimulus patterns), ``euclidean`` (squared
  Euclidean distance divided by the number of units, rsatoolbox's ``euclidean``), ``cosine`` (1 - cosine
  similarity) and ``crossnobis`` (cross-validated Mahalanobis distance over repetitions, leave one repetition out,
  divided by the number of units).
* ``compare_rdms`` methods: ``spearman``, ``pearson``, ``kendall_tau_a``, ``cosine``, and the whitened comparisons
  ``whitened_cosine`` / ``whitened_pearson`` (rsatoolbox ``cosine_cov`` / ``corr_cov`` with an identity pattern
  covariance: the cosine between the double-centred second-moment matrices, Diedrichsen et al. 2021).

Bootstrap resampling of stimuli duplicates stimuli; rsatoolbox then drops the dissimilarity between a stimulus
and its own copy (it would be a trivial zero) and keeps every other entry as often as it occurs. Here the same
multiset is represented without materialising it: each original stimulus pair (p, q) carries the weight
``c_p * c_q`` (c = how often each stimulus was drawn), and every statistic below is written for weighted vectors.
The weighted statistics equal the ones computed on the materialised multiset exactly (tested).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

RDM_METRICS = ("correlation", "euclidean", "cosine", "crossnobis")
COMPARE_METHODS = ("spearman", "pearson", "kendall_tau_a", "cosine", "whitened_cosine", "whitened_pearson")
# Names of the same methods in rsatoolbox, for users who know them from there.
RSATOOLBOX_NAMES = {"spearman": "spearman", "pearson": "corr", "kendall_tau_a": "tau-a", "cosine": "cosine",
                    "whitened_cosine": "cosine_cov", "whitened_pearson": "corr_cov"}
_ALIASES = {"corr": "pearson", "correlation": "pearson", "tau-a": "kendall_tau_a", "tau_a": "kendall_tau_a",
            "cosine_cov": "whitened_cosine", "corr_cov": "whitened_pearson"}

DTYPE = torch.float64


def canonical_method(method: str) -> str:
    name = _ALIASES.get(method, method)
    if name not in COMPARE_METHODS:
        raise ValueError(f"unknown RDM comparison method {method!r}; choose one of {', '.join(COMPARE_METHODS)}")
    return name


# ---------------------------------------------------------------------------------------------------------------
# Shapes and validation
def n_from_condensed(length: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * length)) / 2))
    if n * (n - 1) // 2 != length:
        raise ValueError(f"a condensed RDM has n*(n-1)/2 entries; {length} is not such a number")
    return n


def triu_indices(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each condensed entry (squareform order)."""
    idx = torch.triu_indices(n, n, offset=1, device=device)
    return idx[0], idx[1]


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import xarray as xr

        if isinstance(x, xr.DataArray):
            return np.asarray(x.values, dtype=np.float64)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def stimulus_ids_of(x: Any) -> list[str] | None:
    """Stimulus ids carried by an xarray RDM (coord ``stimulus``), else None."""
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover
        return None
    if isinstance(x, xr.DataArray) and "stimulus" in x.coords:
        return [str(s) for s in np.asarray(x.coords["stimulus"].values).ravel()]
    return None


LAYOUTS = ("auto", "square", "condensed")


def _is_triangular(length: int) -> bool:
    try:
        return n_from_condensed(length) >= 3
    except ValueError:
        return False


def _square_problem(square: np.ndarray) -> str | None:
    """Why a (k, n, n) stack is not a stack of RDMs (asymmetric, non-zero diagonal), or None when it is."""
    scale = max(float(np.abs(square).max()), 1e-12)
    if np.abs(square - square.transpose(0, 2, 1)).max() > 1e-6 * scale:
        return "is square but not symmetric"
    if np.abs(np.diagonal(square, axis1=1, axis2=2)).max() > 1e-6 * scale:
        return "is square but its diagonal is not zero (an RDM has zero self-dissimilarity)"
    return None


def _read_as_square(arr: np.ndarray, name: str, layout: str) -> bool:
    """Whether ``arr`` holds square RDMs (else condensed ones); raises on a layout the shape cannot have.

    Under ``layout="auto"`` a (k, k) array whose k is also a condensed length (k = n(n-1)/2: 6, 10, 15, ...) could be
    one k x k RDM or k condensed RDMs of n stimuli. It is read as one RDM when it is one (symmetric, zero diagonal:
    k condensed RDMs of real dissimilarities never are), and otherwise refused with both readings named."""
    square_shape = arr.ndim >= 2 and arr.shape[-1] == arr.shape[-2] and arr.shape[-1] > 1
    if layout == "square":
        if not square_shape:
            raise ValueError(f"{name}: layout='square' needs (n, n) or (k, n, n), got shape {arr.shape}")
        return True
    if layout == "condensed":
        if arr.ndim not in (1, 2):
            raise ValueError(f"{name}: layout='condensed' needs (P,) or (k, P), got shape {arr.shape}")
        return False
    if not square_shape:
        return False
    if arr.ndim == 2 and _is_triangular(arr.shape[0]) and _square_problem(arr[None]) is not None:
        k = arr.shape[0]
        raise ValueError(f"{name} has shape ({k}, {k}): one {k} x {k} RDM or a stack of {k} condensed RDMs of "
                         f"{n_from_condensed(k)} stimuli; as an RDM it {_square_problem(arr[None])}. Pass "
                         "layout='condensed' for a stack of condensed RDMs (layout='square' for one square RDM)")
    return True


def as_condensed(rdms: Any, name: str = "rdms", device=None, layout: str = "auto") -> torch.Tensor:
    """Any accepted RDM layout -> (k, P) float64 tensor of condensed vectors, validated.

    layout: ``"square"`` ((n, n) or (k, n, n)), ``"condensed"`` ((P,) or (k, P)) or ``"auto"`` (from the shape;
    a (k, k) array that could be either is read as square only when it is a valid RDM, else refused). Square inputs
    must be symmetric with a zero diagonal (to 1e-6 of their scale); NaN is rejected because a NaN dissimilarity
    would silently drop pairs from some comparisons and not others.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown RDM layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    arr = _to_numpy(rdms)
    if arr.ndim == 0:
        raise ValueError(f"{name}: expected an RDM (n x n, condensed, or a stack), got a scalar")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; remove the stimuli with missing data (or impute) before RSA")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains inf; dissimilarities must be finite")
    if _read_as_square(arr, name, layout):
        n = arr.shape[-1]
        square = arr.reshape(-1, n, n)
        problem = _square_problem(square)
        if problem is not None:
            raise ValueError(f"{name} {problem}; pass a dissimilarity matrix (or its condensed upper triangle)")
        r, c = np.triu_indices(n, 1)
        vec = square[:, r, c]
    elif arr.ndim in (1, 2):
        vec = arr.reshape(-1, arr.shape[-1])
    else:
        raise ValueError(f"{name} has shape {arr.shape}; expected (n, n), (P,), (k, n, n) or (k, P)")
    n = n_from_condensed(vec.shape[1])
    if n < 3:
        raise ValueError(f"{name} has {n} stimuli; RDM comparisons need at least 3 stimuli")
    return torch.as_tensor(np.ascontiguousarray(vec), dtype=DTYPE, device=device)


def check_same_stimuli(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> None:
    ids_a, ids_b = stimulus_ids_of(a), stimulus_ids_of(b)
    if ids_a is not None and ids_b is not None and ids_a != ids_b:
        diff = next(i for i, (x, y) in enumerate(zip(ids_a + [None], ids_b + [None])) if x != y)
        raise ValueError(f"{names[0]} and {names[1]} are RDMs of different stimuli (first mismatch at position "
                         f"{diff}); reorder them with .sel(stimulus=..., stimulus_b=...) to the same stimulus ids")


# ---------------------------------------------------------------------------------------------------------------
# RDMs from patterns
def compute_rdm(features: Any, metric: str = "correlation", noise_precision: Any = None,
                device=None, name: str = "features") -> np.ndarray:
    """Square RDM (n x n, float64) from stimulus patterns.

    features: (n_stimuli, n_units); for ``crossnobis`` (n_repetitions, n_stimuli, n_units), where every repetition
    holds one independent measurement of every stimulus (>= 2 repetitions). ``noise_precision`` (n_units x
    n_units, crossnobis only) defaults to the identity (cross-validated squared Euclidean distance). ``name`` (e.g.
    ``"layer 'conv4'"``) starts every error message. Features that give every stimulus the same pattern (a dead
    layer) are refused: their RDM holds only rounding noise (``check_rdm_spread``).
    """
    if metric not in RDM_METRICS:
        raise ValueError(f"unknown RDM metric {metric!r}; choose one of {', '.join(RDM_METRICS)}")
    if isinstance(features, np.memmap) and metric != "crossnobis":  # on disk (an activation store): block by block
        from workbench.alignment.blocked import compute_rdm_blocked

        return compute_rdm_blocked(features, metric, device=device, name=name)
    from workbench.utils import get_device

    x = torch.as_tensor(_to_numpy(features), dtype=DTYPE, device=get_device(device) if device is not None else None)
    if torch.isnan(x).any():
        raise ValueError("features contain NaN; drop or impute those units/stimuli before computing an RDM")
    if metric == "crossnobis":
        if x.ndim != 3 or x.shape[0] < 2:
            raise ValueError(f"crossnobis needs features of shape (n_repetitions >= 2, n_stimuli, n_units); got "
                             f"{tuple(x.shape)}")
        n_rep, n, units = x.shape
        prec = torch.eye(units, dtype=DTYPE, device=x.device) if noise_precision is None else \
            torch.as_tensor(_to_numpy(noise_precision), dtype=DTYPE, device=x.device)
        if prec.shape != (units, units):
            raise ValueError(f"noise_precision must be ({units}, {units}); got {tuple(prec.shape)}")
        total = x.sum(0)
        rdm = torch.zeros(n, n, dtype=DTYPE, device=x.device)
        for fold in range(n_rep):  # leave one repetition out: train = mean of the others, test = the left-out one
            train = (total - x[fold]) / (n_rep - 1)
            kernel = train @ prec @ x[fold].T
            d = torch.diagonal(kernel)
            rdm += d[None, :] + d[:, None] - kernel - kernel.T
        rdm = rdm / (n_rep * units)
    else:
        if x.ndim != 2:
            raise ValueError(f"features must be (n_stimuli, n_units); got shape {tuple(x.shape)}")
        n, units = x.shape
        if metric == "euclidean":
            scale = (x * x).mean(1).max()
            x = x - x.mean(0)  # distances do not move; centring keeps |x|^2 terms from cancelling each other
            sq = (x * x).sum(1)
            rdm = (sq[:, None] + sq[None, :] - 2 * x @ x.T) / units
        else:
            if metric == "correlation":
                x = x - x.mean(1, keepdim=True)
            norm = torch.linalg.vector_norm(x, dim=1)
            if (norm == 0).any():
                bad = torch.nonzero(norm == 0).ravel().tolist()[:5]
                raise ValueError(f"{name}: {metric} distance is undefined for stimuli with a constant pattern "
                                 f"(stimuli {bad}); use metric='euclidean' or drop them")
            x = x / norm[:, None]
            rdm, scale = 1 - x @ x.T, torch.ones((), dtype=DTYPE)  # unit vectors: distances of order 1
    if rdm.shape[0] < 3:
        raise ValueError(f"{name}: an RDM needs at least 3 stimuli; got {rdm.shape[0]}")
    rdm = (rdm + rdm.T) / 2
    rdm.fill_diagonal_(0)
    if metric != "crossnobis":  # cross-validated distances scatter around 0 by design
        check_rdm_spread(rdm, float(scale), metric, name)
    return rdm.cpu().numpy()


# Float32 features that differ only in their last bits (relative 1e-7) give squared distances near 1e-14 of the
# features' squared scale, and float64 cancellation leaves about 1e-16: a spread below this carries no information.
ROUNDING_LEVEL = 1e-12


def check_rdm_spread(rdm: torch.Tensor, scale: float, metric: str, name: str = "features") -> None:
    """Refuse an RDM whose off-diagonal entries all agree to within rounding relative to ``scale`` (the size of
    the terms the distances are computed from): every stimulus gives the same pattern, so any comparison of this
    RDM with another scores rounding noise."""
    i, j = triu_indices(rdm.shape[0], device=rdm.device)
    entries = rdm[i, j]
    refuse_flat_rdm(float(entries.max() - entries.min()), scale, metric, name)


def refuse_flat_rdm(spread: float, scale: float, metric: str, name: str = "features") -> None:
    """The refusal of ``check_rdm_spread`` from the spread of the off-diagonal entries (the blocked RDM tracks it)."""
    if spread <= ROUNDING_LEVEL * scale:
        raise ValueError(
            f"{name}: every {metric} dissimilarity is the same to within rounding (spread {spread:.1e} for features "
            f"of scale {scale:.1e}): the stimuli are indistinguishable here (a dead or saturated layer?), so any RDM "
            "comparison would score noise. Leave this layer out, or check the model's weights and inputs."
        )


# ---------------------------------------------------------------------------------------------------------------
# Weighted statistics on condensed vectors. x, y: (R, P); w: (R, P) non-negative weights (None = all ones).
def pair_weights(counts: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) stimulus counts of bootstrap samples -> (B, P) multiplicity of each stimulus pair."""
    r, c = triu_indices(n, device=counts.device)
    return counts[:, r] * counts[:, c]


def _weighted_mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return x.mean(-1, keepdim=True)
    return (x * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)


def weighted_cosine(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        num, nx, ny = (x * y).sum(-1), (x * x).sum(-1), (y * y).sum(-1)
    else:
        num, nx, ny = (w * x * y).sum(-1), (w * x * x).sum(-1), (w * y * y).sum(-1)
    den = torch.sqrt(nx) * torch.sqrt(ny)
    # rsatoolbox returns 0 when a vector has zero norm (no pattern to compare); do the same
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def weighted_pearson(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return weighted_cosine(x - _weighted_mean(x, w), y - _weighted_mean(y, w), w)


def _group_starts(sorted_vals: torch.Tensor) -> torch.Tensor:
    """True where a new run of equal values begins (per row)."""
    first = torch.ones_like(sorted_vals[..., :1], dtype=torch.bool)
    return torch.cat([first, sorted_vals[..., 1:] != sorted_vals[..., :-1]], dim=-1)


def weighted_rank(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Average ranks (1-based, ties averaged, as scipy.stats.rankdata) of the multiset in which entry j occurs
    w_j times. x: (P,) shared by all rows, or (R, P); w: (R, P) or None. Entries of weight 0 get a rank that is
    never used (they are absent from the multiset)."""
    if w is None:
        w = torch.ones_like(x if x.ndim == 2 else x[None])
    if x.ndim == 1:  # one ordering for all rows: sort once
        vals, order = torch.sort(x, stable=True)
        order = order.expand(w.shape[0], -1)
        vals = vals.expand(w.shape[0], -1)
    else:
        vals, order = torch.sort(x, dim=-1, stable=True)
    ws = torch.gather(w, -1, order)
    starts = _group_starts(vals)
    gid = torch.cumsum(starts.long(), dim=-1) - 1
    group_w = torch.zeros_like(ws).scatter_add_(-1, gid, ws)
    before = torch.cumsum(group_w, dim=-1) - group_w
    rank_sorted = torch.gather(before, -1, gid) + (torch.gather(group_w, -1, gid) + 1) / 2
    return torch.empty_like(rank_sorted).scatter_(-1, order, rank_sorted)


def _dense_rank(x: torch.Tensor) -> torch.Tensor:
    vals, order = torch.sort(x, dim=-1, stable=True)
    gid = torch.cumsum(_group_starts(vals).long(), dim=-1) - 1
    return torch.empty_like(gid).scatter_(-1, order, gid)


def tau_a_numerator(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
                    max_rows: int = 8192) -> torch.Tensor:
    """sum over entry pairs i<j of w_i w_j sign(x_i - x_j) sign(y_i - y_j), per row, in O(P log P).

    That is (concordant - discordant) pairs of the weighted multiset (copies of one entry are tied in both and
    count zero). Rows are swept together: entries ordered by (y, x); a Fenwick tree over the ranks of x holds the
    weight seen so far, so each entry adds w_j (weight of earlier entries with smaller x - with larger x). Earlier
    entries tied in y were counted as concordant when their x is smaller; that within-tie term is subtracted.
    """
    if x.ndim == 1:
        x = x[None]
    if y.ndim == 1:
        y = y[None]
    rows = max(x.shape[0], y.shape[0], 1 if w is None else w.shape[0])
    x, y = x.expand(rows, -1), y.expand(rows, -1)
    w = torch.ones_like(x) if w is None else w.expand(rows, -1)
    if rows > max_rows:
        return torch.cat([tau_a_numerator(x[i:i + max_rows], y[i:i + max_rows], w[i:i + max_rows], max_rows)
                          for i in range(0, rows, max_rows)])
    P = x.shape[1]
    rx, ry = _dense_rank(x), _dense_rank(y)
    active = w > 0
    big = P * P + P  # inactive entries (weight 0) go to the end, so the sweep stops after the last active one
    key = torch.where(active, ry * P + rx, torch.full_like(rx, big))
    key_sorted, order = torch.sort(key, dim=-1, stable=True)
    ws, rxs = torch.gather(w, -1, order), torch.gather(rx, -1, order)
    n_steps = int(active.sum(-1).max())
    # within-y-tie correction: (sum_g W_g^2 - sum_{g,h} W_gh^2) / 2 over y-groups g and (y, x)-groups (g, h)
    ys = torch.gather(ry, -1, order)

    def group_sq(starts):
        gid = torch.cumsum(starts.long(), dim=-1) - 1
        gw = torch.zeros_like(ws).scatter_add_(-1, gid, ws)
        return (gw * gw).sum(-1)

    correction = (group_sq(_group_starts(ys)) - group_sq(_group_starts(key_sorted))) / 2
    earlier = torch.cumsum(ws, dim=-1) - ws
    sweep = _numba_sweep() if w.device.type == "cpu" else None
    if sweep is not None:  # CPU: a compiled scalar sweep per row beats the batched one
        n_active = active.sum(-1).cpu().numpy().astype(np.int64)
        total = torch.as_tensor(sweep(rxs.cpu().numpy(), ws.cpu().numpy(), earlier.cpu().numpy(), n_active, P),
                                dtype=w.dtype, device=w.device)
        return total - correction
    levels = int(P + 1).bit_length()
    tree = torch.zeros(rows, P + 2, dtype=w.dtype, device=w.device)
    total = torch.zeros(rows, dtype=w.dtype, device=w.device)
    chunk = 64  # steps whose Fenwick paths are built at once (memory: rows * chunk * 3 * log2(P) int64)
    for start in range(0, n_steps, chunk):
        stop = min(start + chunk, n_steps)
        r = rxs[:, start:stop]
        # Fenwick paths for the whole chunk: prefix(< r) from index r, prefix(<= r) from r + 1, update at r + 1
        q = torch.empty(rows, stop - start, 2 * levels, dtype=torch.long, device=w.device)
        u = torch.empty(rows, stop - start, levels, dtype=torch.long, device=w.device)
        i1, i2, iu = r.clone(), r + 1, r + 1
        for t in range(levels):
            q[..., t], q[..., levels + t], u[..., t] = i1, i2, iu
            i1, i2 = i1 & (i1 - 1), i2 & (i2 - 1)
            iu = iu + (iu & -iu)
            iu = torch.where(iu > P, torch.full_like(iu, P + 1), iu)  # P + 1: a write-only dummy slot
        q, u = q.transpose(0, 1).contiguous(), u.transpose(0, 1).contiguous()
        for j in range(stop - start):
            got = torch.gather(tree, 1, q[j]).view(rows, 2, levels).sum(-1)
            wj = ws[:, start + j]
            total += wj * (got[:, 0] - (earlier[:, start + j] - got[:, 1]))
            tree.scatter_add_(1, u[j], wj[:, None].expand(-1, levels))
    return total - correction


def _numba_sweep():
    """The per-row Fenwick sweep compiled with numba (``_rank_kernels.sweep_rows``, cached on disk), or None when
    numba is missing."""
    from workbench.alignment import _rank_kernels

    return _rank_kernels.sweep_rows if _rank_kernels.available() else None


def weighted_tau_a(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    num = tau_a_numerator(x, y, w)
    n = torch.full_like(num, x.shape[-1]) if w is None else w.sum(-1).expand_as(num)
    return (num / (n * (n - 1) / 2)).clamp(-1, 1)


def whitened_vectors(v: torch.Tensor, center: bool) -> torch.Tensor:
    """rsatoolbox's whitening for cosine_cov / corr_cov with identity pattern covariance: the double-centred
    second moment G = H(-D/2)H as one vector (off-diagonal entries scaled by sqrt(2), then the diagonal)."""
    n = n_from_condensed(v.shape[-1])
    if center:
        v = v - v.mean(-1, keepdim=True)
    r, c = triu_indices(n, device=v.device)
    G = torch.zeros(v.shape[0], n, n, dtype=v.dtype, device=v.device)
    G[:, r, c] = -0.5 * v
    G[:, c, r] = -0.5 * v
    G = G - G.mean(1, keepdim=True) - G.mean(2, keepdim=True) + G.mean((1, 2), keepdim=True)
    return torch.cat([G[:, r, c] * np.sqrt(2), torch.diagonal(G, dim1=1, dim2=2)], dim=-1)


def compare_rows(x: torch.Tensor, y: torch.Tensor, method: str, w: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise comparison of condensed vectors x[i] with y[i] (broadcast), weighted multiset semantics."""
    method = canonical_method(method)
    if method == "cosine":
        return weighted_cosine(x, y, w)
    if method == "pearson":
        return weighted_pearson(x, y, w)
    if method == "spearman":
        rows = max(x.shape[0], y.shape[0], 1 if w is None else w.shape[0])
        ww = None if w is None else w.expand(rows, -1)
        rx = weighted_rank(x if x.shape[0] > 1 else x[0], ww).expand(rows, -1)
        ry = weighted_rank(y if y.shape[0] > 1 else y[0], ww).expand(rows, -1)
        return weighted_pearson(rx, ry, ww)
    if method == "kendall_tau_a":
        return weighted_tau_a(x, y, w)
    if w is not None:
        raise ValueError(f"{method} is not defined for resampled (duplicated) stimuli; bootstrap whitened "
                         "comparisons over subjects only (scheme='subjects')")
    center = method == "whitened_pearson"
    return weighted_cosine(whitened_vectors(x, center), whitened_vectors(y, center), None)


def compare_rdms(a: Any, b: Any, method: str = "spearman", device=None, layout: str = "auto"
                 ) -> float | np.ndarray:
    """Compare RDMs: a float for two single RDMs, else the (k_a, k_b) matrix of comparisons.

    a, b: square (n x n), condensed (P,), or stacks (k x n x n) / (k x P), numpy, torch or xarray (xarray RDMs
    with a ``stimulus`` coord are checked to describe the same stimuli). layout: how to read both (see
    :func:`as_condensed`); name it for a (k, k) stack of k condensed RDMs when k is also n(n-1)/2.
    """
    method = canonical_method(method)
    check_same_stimuli(a, b)
    va, vb = as_condensed(a, "a", device, layout), as_condensed(b, "b", device, layout)
    if va.shape[1] != vb.shape[1]:
        raise ValueError(f"a and b are RDMs of different sizes ({n_from_condensed(va.shape[1])} vs "
                         f"{n_from_condensed(vb.shape[1])} stimuli); compare RDMs of the same stimuli")
    ka, kb = va.shape[0], vb.shape[0]
    if method == "spearman":  # rank once per RDM, not once per pair
        va, vb = weighted_rank(va, None), weighted_rank(vb, None)
        method = "pearson"
    elif method in ("whitened_cosine", "whitened_pearson"):
        center = method == "whitened_pearson"
        va, vb, method = whitened_vectors(va, center), whitened_vectors(vb, center), "cosine"
    x = va[:, None, :].expand(ka, kb, -1).reshape(ka * kb, -1)
    y = vb[None, :, :].expand(ka, kb, -1).reshape(ka * kb, -1)
    out = compare_rows(x, y, method).reshape(ka, kb).cpu().numpy()
    single = _is_single(a, layout) and _is_single(b, layout)
    return float(out[0, 0]) if single else out


def _is_single(x: Any, layout: str = "auto") -> bool:
    shape = np.shape(_to_numpy(x)) if not hasattr(x, "shape") else tuple(x.shape)
    square = len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1
    return len(shape) == 1 or (square and layout != "condensed")


def average_sessions(rdms: Any) -> Any:
    """(subject x session x n x n) xarray -> (subject x n x n): the mean over sessions (rsatoolbox's usage for
    the hIT data). Other layouts are returned unchanged."""
    if hasattr(rdms, "dims") and "session" in rdms.dims:
        return rdms.mean("session")
    return rdms


def subject_stack(rdms: Any, name: str = "data") -> Any:
    """Data RDMs as (subject x n x n): sessions averaged, a single RDM lifted to one subject."""
    rdms = average_sessions(rdms)
    if hasattr(rdms, "dims") and "subject" not in rdms.dims:
        rdms = rdms.expand_dims("subject")
    return rdms


__all__: Sequence[str] = ("RDM_METRICS", "COMPARE_METHODS", "RSATOOLBOX_NAMES", "compute_rdm", "check_rdm_spread",
                          "compare_rdms", "as_condensed", "LAYOUTS", "weighted_rank", "weighted_tau_a",
                          "tau_a_numerator", "pair_weights",
                          "compare_rows", "average_sessions", "subject_stack", "canonical_method")
