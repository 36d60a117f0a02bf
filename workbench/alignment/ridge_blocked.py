"""Cross-validated ridge on features that do not fit in memory (a memory map, an activation store's layer).

The same model and the same choice of penalty as ``ridge_cv_predictions`` / ``RidgeEncoder`` (efficient
leave-one-out on each training fold, RidgeCV's rule: pooled over targets, or one per target, first best alpha on
ties), computed without ever holding the features, or more than one block of targets, in float64 at once:

* kernel route (features >> stimuli): the Gram matrix ``X X^T`` (n x n) accumulated over blocks of features;
  each fold's centred training kernel is eigendecomposed once, which serves every alpha and every target (dual
  solution). With ``standardize`` the scaling depends on the fold, so each fold accumulates its own Gram matrix.
* primal route (stimuli >> features): ``X^T X`` (p x p) accumulated over blocks of stimuli (each fold's training
  matrix is the total minus its held-out rows); its eigendecomposition serves every alpha, and the leave-one-out
  residuals are accumulated over blocks of stimuli.
* targets (100,000 voxels) are read and solved a block of columns at a time; with one penalty pooled over all
  targets the errors of every alpha are summed over the blocks first, then a second pass predicts.

Features are centred by their overall mean before any product (as the in-memory path does), which keeps the Gram
entries and their rounding small; each fold's exact centring by its training mean follows. Linear algebra is
float64, numpy on the CPU and torch on an accelerator (``device``), so the results equal the in-memory path to
rounding (tests/test_ridge_blocked.py).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from workbench.alignment.regression import (MIN_STIMULI, _backend_array, _centred_fold_gram, _checked_alphas, _eigh,
                                            _first_best, _like, _loo_mean_squared_errors, _to_numpy)

FEATURE_BLOCK = 8192  # features per block of the kernel route (n x 8192 float64: 1 GB at n = 16,000)
STIMULUS_BLOCK = 4096  # stimuli per block of the primal route and of the column statistics
TARGET_BLOCK = 2048  # targets per block (n x 2048 float64: 262 MB at n = 16,000)


def _blocks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _read(array, rows, cols, name: str) -> np.ndarray:
    """``array[rows][:, cols]`` as float64 (a copy, so memory maps stay read-only), refusing NaN and inf."""
    block = np.asarray(array[rows], dtype=np.float64) if cols is None else np.asarray(array[rows, cols],
                                                                                       dtype=np.float64)
    if not np.isfinite(block).all():
        raise ValueError(f"{name} contain NaN or infinite values; drop or impute those units/stimuli (e.g. "
                         f"np.nan_to_num, or select the finite columns) before fitting ridge")
    return block


def check_blocked_pair(features: Any, responses: Any) -> tuple[Any, Any]:
    """Shapes of features (n x p) and responses (n x t, or n for one target) checked without reading them; 1-D
    responses become an (n, 1) view. NaN/inf are refused block by block as they are read."""
    X, Y = getattr(features, "values", features), getattr(responses, "values", responses)
    if np.ndim(X) != 2:
        raise ValueError(f"features must be 2-D (n_stimuli x n_units); got shape {np.shape(X)}")
    if np.ndim(Y) == 1:
        Y = np.asarray(Y).reshape(-1, 1)
    if np.ndim(Y) != 2:
        raise ValueError(f"responses must be 2-D (n_stimuli x n_neuroids); got shape {np.shape(Y)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"features have {X.shape[0]} stimuli but responses have {Y.shape[0]}; pass the responses "
                         f"of exactly the stimuli of the features, in the same order")
    if X.shape[0] < MIN_STIMULI or X.shape[1] < 1 or Y.shape[1] < 1:
        raise ValueError(f"ridge needs at least {MIN_STIMULI} stimuli, one unit and one target; got features "
                         f"{X.shape}, responses {Y.shape}")
    return X, Y


class _Fold:
    """One training/test split and the training statistics of the overall-centred features D = X - mean."""

    def __init__(self, tr: np.ndarray, te: np.ndarray, n: int):
        self.tr, self.te = np.asarray(tr), np.asarray(te)
        self.train_mask = np.zeros(n, dtype=bool)
        self.train_mask[self.tr] = True
        self.test_mask = np.zeros(n, dtype=bool)
        self.test_mask[self.te] = True
        self.mean = self.scale = None  # (p,): training mean of D; units' training sd (1 without standardize)


def _column_stats(X, folds: list[_Fold], standardize: bool, stimulus_block: int) -> np.ndarray:
    """The features' overall mean; sets every fold's training mean (and sd with ``standardize``) of D.

    The statistics are taken of the raw values, as the in-memory path takes them: a unit that is exactly zero (or
    constant) on a fold's training stimuli, as a ReLU unit that fires for one held-out image, then has a training
    sd of exactly 0 (left unscaled), not a rounding residue that would blow it up."""
    n, p = X.shape
    total, s1 = np.zeros(p), np.zeros((len(folds), p))
    membership = np.stack([f.train_mask for f in folds]).astype(np.float64)  # (folds, n)
    for rows in _blocks(n, stimulus_block):
        block = _read(X, rows, None, "features")
        total += block.sum(0)
        s1 += membership[:, rows] @ block
    mu = total / n
    raw_means = s1 / np.array([len(f.tr) for f in folds])[:, None]
    s2 = np.zeros((len(folds), p))
    for rows in _blocks(n, stimulus_block) if standardize else ():
        block = _read(X, rows, None, "features")
        for k in range(len(folds)):
            s2[k] += membership[k, rows] @ (block - raw_means[k]) ** 2
    for k, fold in enumerate(folds):
        fold.mean = raw_means[k] - mu
        sd = np.sqrt(s2[k] / len(fold.tr)) if standardize else np.ones(p)
        constant = sd <= len(fold.tr) * np.finfo(np.float64).eps * np.abs(raw_means[k])  # rounding of a constant
        fold.scale = np.where((sd > 0) & ~constant, sd, 1.0)  # as StandardScaler: a constant unit is left unscaled
    return mu


def _kernel(X, mu: np.ndarray, scale: np.ndarray, feature_block: int, device):
    """(D / scale)(D / scale)^T over blocks of features, on the backend."""
    gram = None
    for cols in _blocks(X.shape[1], feature_block):
        A = _backend_array((_read(X, slice(None), cols, "features") - mu[cols]) / scale[cols], device)
        part = A @ A.T  # numpy: one syrk
        gram = part if gram is None else gram + part
    return gram


def _target_columns(Y, rows, cols, device):
    y = _backend_array(_read(Y, rows, cols, "responses"), device)
    y_mean = y.mean(0)
    return y - y_mean, y_mean


def _kernel_fold(K_train, Y, fold: _Fold, alphas, per_target: bool, target_block: int, device, sink):
    """Leave-one-out choice of alpha and dual weights for one fold, a block of targets at a time; ``sink(cols,
    dual, y_mean)`` receives each block's solution. Returns the chosen alpha(s)."""
    evals, Q = _eigh(K_train)
    t = Y.shape[1]
    per_target = per_target and t > 1  # as RidgeCV: one target means one alpha
    chosen = np.empty(t)
    pooled = np.zeros(len(alphas))
    for cols in _blocks(t, target_block):
        yc, y_mean = _target_columns(Y, fold.tr, cols, device)
        qty = Q.T @ yc
        errors = _loo_mean_squared_errors(evals, Q, qty, alphas, per_target)
        if not per_target:  # summed over blocks before the one choice
            pooled += errors * (yc.shape[0] * yc.shape[1])
            continue
        chosen[cols] = np.asarray(alphas)[_first_best(errors)]
        sink(cols, Q @ (qty / (evals[:, None] + _like(chosen[cols], evals)[None, :])), y_mean)
    if per_target:
        return chosen.tolist()
    alpha = float(np.asarray(alphas)[_first_best(pooled)])
    for cols in _blocks(t, target_block):  # second pass: the solution at the chosen alpha
        yc, y_mean = _target_columns(Y, fold.tr, cols, device)
        sink(cols, Q @ ((Q.T @ yc) / (evals[:, None] + alpha)), y_mean)
    return alpha


def _standardized_rows(X, rows, mu: np.ndarray, fold: _Fold, mask: np.ndarray | None = None) -> np.ndarray:
    """Rows of X centred by the fold's training mean and scaled by its training sd (the fold's Z)."""
    block = _read(X, rows, None, "features")
    block = block if mask is None else block[mask]
    return (block - (mu + fold.mean)) / fold.scale  # mu + fold.mean: the raw training mean


def _primal_matrix(X, mu, fold: _Fold, stimulus_block: int, device):
    """Z_train^T Z_train (p x p) over blocks of stimuli."""
    C = None
    for rows in _blocks(X.shape[0], stimulus_block):
        mask = fold.train_mask[rows]
        if mask.any():
            Z = _backend_array(_standardized_rows(X, rows, mu, fold, mask), device)
            C = Z.T @ Z if C is None else C + Z.T @ Z
    return C


def _primal_projection(X, Y, mu, fold: _Fold, V, cols, stimulus_block: int, device):
    """V^T Z^T (y - y_mean) and y_mean for the training stimuli of one block of targets."""
    ZtY = zsum = ysum = None
    for rows in _blocks(X.shape[0], stimulus_block):
        mask = fold.train_mask[rows]
        if not mask.any():
            continue
        Z = _backend_array(_standardized_rows(X, rows, mu, fold, mask), device)
        y = _backend_array(_read(Y, rows, cols, "responses")[mask], device)
        parts = (Z.T @ y, Z.sum(0), y.sum(0))
        ZtY, zsum, ysum = parts if ZtY is None else (ZtY + parts[0], zsum + parts[1], ysum + parts[2])
    y_mean = ysum / len(fold.tr)
    return V.T @ (ZtY - zsum[:, None] * y_mean[None, :]), y_mean


def _primal_loo_errors(X, Y, mu, fold: _Fold, evals, V, b, y_mean, cols, alphas, stimulus_block: int, device):
    """Summed squared leave-one-out residuals (n_alphas, n_targets of the block). With P = Z V, the hat matrix of
    ridge with an unpenalised intercept is 11'/n + P diag(1/(e+a)) P', so the fitted values are P diag(1/(e+a)) b
    and the leverages 1/n + (P*P) 1/(e+a): the dual path's formulas, written in the p-dimensional basis."""
    inverse = 1.0 / (evals[:, None] + _like(alphas, evals)[None, :])  # (p, n_alphas)
    errors = np.zeros((len(alphas), cols.stop - cols.start))
    for rows in _blocks(X.shape[0], stimulus_block):
        mask = fold.train_mask[rows]
        if not mask.any():
            continue
        P = _backend_array(_standardized_rows(X, rows, mu, fold, mask), device) @ V
        yc = _backend_array(_read(Y, rows, cols, "responses")[mask], device) - y_mean
        leverage = (P * P) @ inverse + 1.0 / len(fold.tr)  # (rows, n_alphas)
        for k in range(len(alphas)):
            loo = (yc - P @ (b * inverse[:, k:k + 1])) / (1 - leverage[:, k:k + 1])
            errors[k] += _to_numpy((loo * loo).sum(0))
    return errors


def _primal_fold(X, Y, mu, fold: _Fold, alphas, per_target: bool, stimulus_block: int, target_block: int, device,
                 sink):
    """Leave-one-out choice of alpha and primal weights w (p x targets, for Z) for one fold, a block of targets at
    a time; ``sink(cols, w, y_mean)`` receives each block's solution. Returns the chosen alpha(s)."""
    evals, V = _eigh(_primal_matrix(X, mu, fold, stimulus_block, device))
    t = Y.shape[1]
    per_target = per_target and t > 1
    chosen, pooled = np.empty(t), np.zeros(len(alphas))
    for cols in _blocks(t, target_block):
        b, y_mean = _primal_projection(X, Y, mu, fold, V, cols, stimulus_block, device)
        errors = _primal_loo_errors(X, Y, mu, fold, evals, V, b, y_mean, cols, alphas, stimulus_block, device)
        if not per_target:
            pooled += errors.sum(1)
            continue
        chosen[cols] = np.asarray(alphas)[_first_best(errors)]
        sink(cols, V @ (b / (evals[:, None] + _like(chosen[cols], evals)[None, :])), y_mean)
    if per_target:
        return chosen.tolist()
    alpha = float(np.asarray(alphas)[_first_best(pooled)])
    for cols in _blocks(t, target_block):
        b, y_mean = _primal_projection(X, Y, mu, fold, V, cols, stimulus_block, device)
        sink(cols, V @ (b / (evals[:, None] + alpha)), y_mean)
    return alpha


def choose_route(route: str, n_stimuli: int, n_features: int) -> str:
    if route == "auto":
        return "kernel" if n_features >= n_stimuli else "primal"
    if route not in ("kernel", "primal"):
        raise ValueError(f"route must be 'auto', 'kernel' (X X^T, features >> stimuli) or 'primal' (X^T X, "
                         f"stimuli >> features); got {route!r}")
    return route


def _setup(features, responses, folds, alphas, standardize: bool, route: str, stimulus_block: int):
    X, Y = check_blocked_pair(features, responses)
    n = X.shape[0]
    folds = [_Fold(tr, te, n) for tr, te in folds]
    for fold in folds:
        if len(fold.tr) < MIN_STIMULI:
            raise ValueError(f"a training fold has {len(fold.tr)} stimuli; ridge needs at least {MIN_STIMULI}")
    mu = _column_stats(X, folds, standardize, stimulus_block)
    return X, Y, folds, _checked_alphas(alphas), mu, choose_route(route, n, X.shape[1])


def ridge_cv_predictions_blocked(features: Any, responses: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                                 alphas: Sequence[float] | None = None, alpha_per_target: bool = False,
                                 standardize: bool = False, device=None, route: str = "auto",
                                 feature_block: int = FEATURE_BLOCK, stimulus_block: int = STIMULUS_BLOCK,
                                 target_block: int = TARGET_BLOCK, out: np.ndarray | None = None
                                 ) -> tuple[np.ndarray, list]:
    """Out-of-fold ridge predictions equal to ``ridge_cv_predictions`` (= RidgeCV on each training fold), for
    features and responses that may be memory maps larger than RAM.

    ``route``: 'kernel' (X X^T over feature blocks), 'primal' (X^T X over stimulus blocks) or 'auto' (kernel when
    features >= stimuli). ``out``: an (n_stimuli, n_targets) float64 array or memory map to fill (100,000 targets
    of 73,000 stimuli are 58 GB); by default a new array. Returns (predictions, alphas per fold)."""
    from workbench.alignment.regression import DEFAULT_ALPHAS

    X, Y, folds, alphas, mu, route = _setup(features, responses, folds, DEFAULT_ALPHAS if alphas is None else alphas,
                                            standardize, route, stimulus_block)
    n, t = Y.shape
    pred = np.empty((n, t)) if out is None else out
    if pred.shape != (n, t):
        raise ValueError(f"out must have shape {(n, t)} (stimuli x targets); got {pred.shape}")
    shared = None if standardize or route == "primal" else _kernel(X, mu, np.ones(X.shape[1]), feature_block, device)
    chosen = []
    for fold in folds:
        if route == "kernel":
            G = shared if shared is not None else _kernel(X, mu, fold.scale, feature_block, device)
            K_train, K_test = _centred_fold_gram(G, fold.tr, fold.te)

            def sink(cols, dual, y_mean, K_test=K_test, te=fold.te):
                pred[te, cols] = _to_numpy(K_test @ dual + y_mean)

            alpha = _kernel_fold(K_train, Y, fold, alphas, alpha_per_target, target_block, device, sink)
        else:
            def sink(cols, w, y_mean, fold=fold):
                for rows in _blocks(n, stimulus_block):
                    mask = fold.test_mask[rows]
                    if mask.any():
                        Z = _backend_array(_standardized_rows(X, rows, mu, fold, mask), device)
                        pred[np.arange(rows.start, rows.stop)[mask], cols] = _to_numpy(Z @ w + y_mean)

            alpha = _primal_fold(X, Y, mu, fold, alphas, alpha_per_target, stimulus_block, target_block, device,
                                 sink)
        chosen.append(alpha)
    return pred, chosen


def fit_ridge_blocked(features: Any, responses: Any, alphas: Sequence[float], alpha_per_target: bool = False,
                      standardize: bool = False, device=None, route: str = "auto",
                      feature_block: int = FEATURE_BLOCK, stimulus_block: int = STIMULUS_BLOCK,
                      target_block: int = TARGET_BLOCK) -> tuple[Any, np.ndarray, np.ndarray]:
    """Ridge on all stimuli, penalty by leave-one-out, out of core (what ``RidgeEncoder.fit`` computes). Returns
    (alpha: a float or one per target, coef (n_units x n_targets) and intercept (n_targets,) for the features as
    given)."""
    n = np.shape(features)[0]
    X, Y, (fold,), alphas, mu, route = _setup(features, responses, [(np.arange(n), np.arange(0))], alphas,
                                             standardize, route, stimulus_block)
    p, t = X.shape[1], Y.shape[1]
    coef, intercept = np.empty((p, t)), np.empty(t)
    if route == "kernel":
        K_train, _ = _centred_fold_gram(_kernel(X, mu, fold.scale, feature_block, device), fold.tr, fold.te)

        def sink(cols, dual, y_mean):
            for units in _blocks(p, feature_block):  # Z^T dual, a block of units at a time
                Z = (_read(X, slice(None), units, "features") - mu[units] - fold.mean[units]) / fold.scale[units]
                coef[units, cols] = _to_numpy(_backend_array(Z, device).T @ dual) / fold.scale[units, None]
            intercept[cols] = _to_numpy(y_mean)

        alpha = _kernel_fold(K_train, Y, fold, alphas, alpha_per_target, target_block, device, sink)
    else:
        def sink(cols, w, y_mean):
            coef[:, cols] = _to_numpy(w) / fold.scale[:, None]
            intercept[cols] = _to_numpy(y_mean)

        alpha = _primal_fold(X, Y, mu, fold, alphas, alpha_per_target, stimulus_block, target_block, device, sink)
    intercept -= (mu + fold.mean) @ coef  # y_mean - x_mean @ coef
    return alpha, coef, intercept


def is_out_of_core(x: Any) -> bool:
    """Arrays the encoding functions route here: memory maps (an activation store's layers, np.load(mmap_mode=))."""
    return isinstance(getattr(x, "values", x), np.memmap)
