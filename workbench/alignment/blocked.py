"""Alignment on activations that do not fit in memory: RDMs and Gram matrices computed block by block.

The in-memory ``compute_rdm`` turns the whole (n_stimuli, n_features) matrix into one float64 tensor. Here the
features are read a block of stimuli at a time (an on-disk store's memory map reads only those rows), so memory is
(block x n_features) for the features plus the result. Each block of stimulus pairs (i, j) of the RDM is
``1 - z_i z_j^T`` (correlation, cosine) or the squared distance from the Gram block (euclidean), the same formulas
as ``compute_rdm``, so the results agree to rounding (tests). ``out`` may itself be a memory map (an RDM of 70,000
stimuli is 39 GB in float64).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from workbench.alignment.rsa import RDM_METRICS

BLOCK = 2048  # stimuli per block: 2048 x 16k features in float64 is 268 MB


def _blocks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _prepared(rows: np.ndarray, metric: str, device, column_mean: torch.Tensor | None) -> torch.Tensor:
    """A block of stimulus patterns as compute_rdm treats them: centred and/or unit norm per stimulus (euclidean:
    minus the mean pattern, which moves no distance and keeps the |x|^2 terms from cancelling)."""
    x = torch.as_tensor(np.array(rows, dtype=np.float64), device=device)  # a copy: memory maps are read-only
    if torch.isnan(x).any():
        raise ValueError("features contain NaN; drop or impute those units/stimuli before computing an RDM")
    if metric == "euclidean":
        return x - column_mean
    if metric == "correlation":
        x = x - x.mean(1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=1)
    if (norm == 0).any():
        raise ValueError(f"{metric} distance is undefined for stimuli with a constant pattern; use "
                         f"metric='euclidean' or drop them")
    return x / norm[:, None]


def _column_mean_and_scale(features, block: int, device) -> tuple[torch.Tensor, float]:
    """The mean pattern and the largest mean square of a pattern (the scale compute_rdm judges spread against)."""
    total, scale = None, 0.0
    for rows in _blocks(features.shape[0], block):
        x = torch.as_tensor(np.array(features[rows], dtype=np.float64), device=device)
        total = x.sum(0) if total is None else total + x.sum(0)
        scale = max(scale, float((x * x).mean(1).max()))
    return total / features.shape[0], scale


def compute_rdm_blocked(features, metric: str = "correlation", block: int = BLOCK, out: np.ndarray | None = None,
                        device=None, name: str = "features") -> np.ndarray:
    """The RDM of ``features`` (n_stimuli, n_features; an array or a memory map), block of stimuli by block.

    Equals ``compute_rdm(features, metric)`` for correlation, cosine and euclidean, refusals included. ``out``: an
    (n, n) float64 array (or memory map) to fill; by default a new array."""
    from workbench.alignment.rsa import refuse_flat_rdm

    if metric not in RDM_METRICS or metric == "crossnobis":
        raise ValueError(f"blocked RDMs support correlation, cosine and euclidean; got {metric!r}")
    if np.ndim(features) != 2:
        raise ValueError(f"features must be (n_stimuli, n_units); got shape {np.shape(features)}")
    n, units = features.shape
    if n < 3:
        raise ValueError(f"{name}: an RDM needs at least 3 stimuli; got {n}")
    column_mean, scale = _column_mean_and_scale(features, block, device) if metric == "euclidean" else (None, 1.0)
    rdm = np.empty((n, n), dtype=np.float64) if out is None else out
    low, high = np.inf, -np.inf
    for rows_i in _blocks(n, block):
        xi = _prepared(features[rows_i], metric, device, column_mean)
        for rows_j in _blocks(n, block):
            if rows_j.start < rows_i.start:
                continue  # the lower triangle is the upper one transposed
            xj = xi if rows_j == rows_i else _prepared(features[rows_j], metric, device, column_mean)
            if metric == "euclidean":
                part = ((xi * xi).sum(1)[:, None] + (xj * xj).sum(1)[None, :] - 2 * xi @ xj.T) / units
            else:
                part = 1 - xi @ xj.T
            if rows_j == rows_i:  # as compute_rdm: exactly symmetric (off-diagonal blocks are, by construction)
                part = (part + part.T) / 2
            part = part.cpu().numpy()
            rdm[rows_i, rows_j] = part
            rdm[rows_j, rows_i] = part.T
            entries = part[np.triu_indices(len(part), 1)] if rows_j == rows_i else part.ravel()
            if entries.size:
                low, high = min(low, float(entries.min())), max(high, float(entries.max()))
    np.fill_diagonal(rdm, 0.0)
    refuse_flat_rdm(high - low, scale, metric, name)
    return rdm


def gram_blocked(features, feature_block: int = 8192, rows: slice | np.ndarray | None = None,
                 other_rows: slice | np.ndarray | None = None, device=None) -> np.ndarray:
    """``X[rows] @ X[other_rows].T`` accumulated over blocks of features (float64): the kernel a ridge regression
    in its dual form needs when features far outnumber stimuli, without holding all features in memory."""
    rows = slice(None) if rows is None else rows
    other_rows = rows if other_rows is None else other_rows
    n_features = features.shape[1]
    gram = None
    for cols in _blocks(n_features, feature_block):
        a = torch.as_tensor(np.array(features[rows, cols], dtype=np.float64), device=device)
        b = a if other_rows is rows else torch.as_tensor(np.array(features[other_rows, cols], dtype=np.float64),
                                                         device=device)
        part = a @ b.T
        gram = part if gram is None else gram + part
    return gram.cpu().numpy()
