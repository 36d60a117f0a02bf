"""Centred kernel alignment (CKA) between two representations of the same stimuli (Kornblith et al. 2019).

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K, L of the stimuli. Two HSIC estimators,
each named where it is used:

* ``"biased"`` (Kornblith et al. 2019): the Frobenius inner product of the double-centred Grams HKH and HLH
  (H = I - 11^T / n). Linear CKA with it lies in [0, 1]; its expectation for two independent representations is
  above 0 and shrinks only as the number of stimuli grows.
* ``"unbiased"`` (Song et al. 2012; used for CKA by Nguyen, Raghu & Kornblith 2021): the U-statistic of HSIC,
  computed from U-centred Grams (Szekely & Rizzo 2014), which use the off-diagonal entries only. It is centred on 0
  for independent representations and may be negative, markedly so for a handful of stimuli (n = 4 in the tests:
  unbiased -0.84, biased 0.72).

Two kernels: ``"linear"`` (K = X X^T) and ``"rbf"`` (K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)) with
sigma = ``bandwidth`` x the median distance between stimuli, Kornblith et al.'s heuristic; the median is taken over
all n^2 entries of the distance matrix, its zero diagonal included, as in their published code).

Features are centred (each unit's mean over stimuli subtracted) before any Gram matrix is built. CKA does not depend
on a common offset in exact arithmetic, but X X^T of uncentred data with a large offset (firing rates, post-ReLU
activations) is dominated by the offset and cancels catastrophically when the Gram is centred: an offset of 1e4 gave
NaN before this was done.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Citations live on the METRICS entry "cka" (workbench.alignment.metrics.cka).

KERNELS = ("linear", "rbf")
ESTIMATORS = ("unbiased", "biased")
DEFAULT_RBF_BANDWIDTH = 1.0   # fraction of the median distance; 1.0 is the default of Kornblith et al.'s gram_rbf


def centred_features(x: Any, name: str, device=None) -> torch.Tensor:
    """``x`` (n_stimuli x n_units; array, tensor or DataArray) as float64 on ``device``, each unit's mean removed."""
    from workbench.utils import get_device

    values = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else getattr(x, "values", x)
    X = torch.as_tensor(np.asarray(values, dtype=np.float64), device=get_device(device))
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_stimuli x n_units); got shape {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute those entries before computing CKA")
    centred = X - X.mean(0, keepdim=True)
    # relative test: the mean of identical values can differ from them by rounding
    if X.shape[0] > 1 and not centred.abs().max() > 1e-12 * X.abs().max():
        raise ValueError(f"{name} is the same for every stimulus (no variance across stimuli), so CKA is undefined")
    return centred


def linear_gram(X: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix X X^T of (centred) features."""
    return X @ X.T


def rbf_gram(X: torch.Tensor, bandwidth: float = DEFAULT_RBF_BANDWIDTH) -> torch.Tensor:
    """RBF-kernel Gram matrix with sigma = ``bandwidth`` x the median distance (median over all n^2 entries)."""
    if not bandwidth > 0:
        raise ValueError(f"the RBF bandwidth is a positive fraction of the median distance (e.g. 1.0), "
                         f"got {bandwidth}")
    sq_norms = (X * X).sum(1)
    sq_distances = (sq_norms[:, None] + sq_norms[None, :] - 2 * (X @ X.T)).clamp_min(0).fill_diagonal_(0)
    flat = sq_distances.flatten()
    size = flat.numel()   # median as numpy takes it: the mean of the two middle values when the count is even
    sq_median = (flat.kthvalue((size + 1) // 2).values + flat.kthvalue(size // 2 + 1).values) / 2
    if not sq_median > 0:
        raise ValueError("the median distance between stimuli is 0 (most stimuli have identical features), so the "
                         "RBF bandwidth is undefined; use the linear kernel or drop duplicate stimuli")
    return torch.exp(-sq_distances / (2 * bandwidth ** 2 * sq_median))


def centred_gram(K: torch.Tensor, estimator: str = "unbiased") -> torch.Tensor:
    """Double-centred Gram HKH (biased) or U-centred Gram (unbiased; zero diagonal), as a new tensor."""
    _check_estimator(estimator)
    n = K.shape[0]
    if estimator == "biased":
        row_means = K.mean(0)
        return K - row_means[:, None] - row_means[None, :] + K.mean()
    off_diagonal = K.clone().fill_diagonal_(0)
    sums = off_diagonal.sum(0) / (n - 2)
    total = off_diagonal.sum() / ((n - 1) * (n - 2))
    return (off_diagonal - sums[:, None] - sums[None, :] + total).fill_diagonal_(0)


def hsic(K: torch.Tensor, L: torch.Tensor, estimator: str = "unbiased") -> torch.Tensor:
    """HSIC of two Gram matrices of the same stimuli: tr(HKHL) / (n-1)^2 (biased) or the U-statistic of Song et al.
    (2012) (unbiased, n >= 4), a 0-d tensor."""
    n = K.shape[0]
    _check_stimuli(n, estimator)
    scale = (n - 1) ** 2 if estimator == "biased" else n * (n - 3)
    return (centred_gram(K, estimator) * centred_gram(L, estimator)).sum() / scale


def cka(x: Any, y: Any, kernel: str = "linear", estimator: str = "unbiased",
        rbf_bandwidth: float = DEFAULT_RBF_BANDWIDTH, device=None) -> float:
    """CKA between two representations of the same stimuli, (n, p) and (n, q), with the named kernel and estimator
    (module docstring). ``rbf_bandwidth`` is used by the RBF kernel only."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown CKA kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    _check_estimator(estimator)
    X, Y = centred_features(x, "x", device), centred_features(y, "y", device)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"x has {X.shape[0]} stimuli and y has {Y.shape[0]}; CKA compares the same stimuli")
    _check_stimuli(X.shape[0], estimator)
    grams = [linear_gram(F) if kernel == "linear" else rbf_gram(F, rbf_bandwidth) for F in (X, Y)]
    Kc, Lc = (centred_gram(G, estimator) for G in grams)
    # the HSIC scale (n-1)^2 or n(n-3) cancels between numerator and denominator
    return float((Kc * Lc).sum() / torch.sqrt((Kc * Kc).sum() * (Lc * Lc).sum()))


def linear_cka(x: Any, y: Any, estimator: str = "unbiased", device=None) -> float:
    """Linear CKA, the unbiased estimator unless ``estimator="biased"`` (Kornblith et al. 2019's)."""
    return cka(x, y, "linear", estimator, device=device)


def linear_cka_unbiased(x: Any, y: Any, device=None) -> float:
    """Linear CKA from the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021); n >= 4 stimuli."""
    return cka(x, y, "linear", "unbiased", device=device)


def linear_cka_biased(x: Any, y: Any, device=None) -> float:
    """Linear CKA from the biased HSIC estimator, as in Kornblith et al. (2019); in [0, 1]."""
    return cka(x, y, "linear", "biased", device=device)


def rbf_cka(x: Any, y: Any, bandwidth: float = DEFAULT_RBF_BANDWIDTH, estimator: str = "unbiased",
            device=None) -> float:
    """RBF-kernel CKA, sigma = ``bandwidth`` x the median distance between stimuli (Kornblith et al. 2019)."""
    return cka(x, y, "rbf", estimator, bandwidth, device=device)


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown HSIC estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")


def _check_stimuli(n: int, estimator: str) -> None:
    needed = 4 if estimator == "unbiased" else 2
    if n < needed:
        raise ValueError(f"the {estimator} HSIC estimator needs at least {needed} stimuli, got {n}")
