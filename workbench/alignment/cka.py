"""Linear centred kernel alignment with the unbiased HSIC estimator (Song et al. 2012; Kornblith et al. 2019)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Citations live on the METRICS entry "cka" (workbench.alignment.metrics.cka).


def _unbiased_hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    n = K.shape[0]
    K = K.clone().fill_diagonal_(0)
    L = L.clone().fill_diagonal_(0)
    one_K, one_L = K.sum(0), L.sum(0)
    term = (K * L).sum() + one_K.sum() * one_L.sum() / ((n - 1) * (n - 2)) - 2 * (one_K @ one_L) / (n - 2)
    return term / (n * (n - 3))


def linear_cka(x: Any, y: Any, device=None) -> float:
    """Unbiased linear CKA between two representations of the same stimuli: (n, p) and (n, q), n >= 4."""
    from workbench.utils import get_device

    dev = get_device(device)
    X = torch.as_tensor(np.asarray(getattr(x, "values", x), dtype=np.float64), device=dev)
    Y = torch.as_tensor(np.asarray(getattr(y, "values", y), dtype=np.float64), device=dev)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError("linear_cka takes two 2-D arrays (n_stimuli x n_units)")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"x has {X.shape[0]} stimuli and y has {Y.shape[0]}; CKA compares the same stimuli")
    if X.shape[0] < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 stimuli")
    if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
        raise ValueError("x or y contains NaN or inf")
    K, L = X @ X.T, Y @ Y.T
    xy, xx, yy = _unbiased_hsic(K, L), _unbiased_hsic(K, K), _unbiased_hsic(L, L)
    return float(xy / torch.sqrt(xx * yy))
