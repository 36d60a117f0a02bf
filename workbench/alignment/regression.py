"""Cross-validated encoding models: features (n_stimuli x n_units) -> responses (n_stimuli x n_neuroids).

* ``RidgeEncoder``: ridge regression whose penalty is chosen inside the training data by efficient leave-one-out
  (generalised cross-validation), exactly what ``sklearn.linear_model.RidgeCV(alphas)`` does with its default
  ``cv=None``. One eigendecomposition of the centred Gram matrix serves every alpha and every neuroid (the n < p
  dual path); the intercept is not penalised.
* ``PLSEncoder``: scikit-learn ``PLSRegression`` (25 components, no scaling, as in Brain-Score).
* ``cross_validate_encoding``: seeded K-fold (stratified by category when labels are given); per-neuroid Pearson r
  on held-out stimuli (mean over folds), the median over neuroids as the score. The ridge path computes the Gram
  matrix of all stimuli once and derives every fold's centred blocks from it.

Both encoders are scikit-learn regressors (``check_estimator`` passes, see tests/test_regression.py): ``score`` is
R^2, as for every sklearn regressor. The field's score, the median over neuroids of the Pearson r, is
``median_pearson_r(y_true, y_pred)``; ``median_pearson_scorer`` wraps it for ``cross_val_score(encoder, X, Y,
scoring=median_pearson_scorer)`` (scikit-learn has no public way to register a scorer under a string name, so pass
the object).

On the CPU the linear algebra is numpy: ``X @ X.T`` on one array is a BLAS syrk (half the work of a general
product); each fold's eigendecomposition runs with one BLAS thread, folds side by side on the available cores. On an
accelerator (``device="cuda"``) the same steps run in torch. Everything is float64: the chosen alphas and the
predictions equal RidgeCV's, which a float32 Gram matrix would not guarantee. Where the time goes (benchmarks/
bench_regression.py, 1200 stimuli x 16384 units, 5 folds, one core): RidgeCV spends most of it forming X' c for every
alpha and each fold's own Gram matrix; here the one Gram matrix is ~1/4 and the five 960 x 960 eigendecompositions
~1/2 of the total.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import make_scorer
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from workbench.utils import get_device

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
# Citations (Brain-Score, Spearman-Brown) live on the METRICS entries "ridge" and "pls"
# (workbench.alignment.metrics.encoding).
MIN_STIMULI = 3  # one to hold out, two to fit a slope and an intercept


def _as_matrix(x: Any, name: str, one_column_ok: bool) -> np.ndarray:
    """A dense, finite, real float64 matrix (n_stimuli x n_columns) from an array, DataFrame or DataArray."""
    from scipy import sparse

    values = getattr(x, "values", x)
    if sparse.issparse(values):
        raise TypeError(f"{name} are a sparse matrix; the encoding models need dense arrays: pass {name}.toarray()")
    ndim = np.ndim(values)
    if ndim == 1 and one_column_ok:
        values = np.asarray(values)[:, None]
    elif ndim != 2:
        what = "units" if name == "features" else "neuroids"
        raise ValueError(f"{name} must be 2-D (n_stimuli x n_{what}); got {ndim}-D with shape {np.shape(values)}"
                         + (f"; for a single unit pass {name}[:, None]" if ndim == 1 else ""))
    # check_array rejects complex values, NaN/inf, no stimuli and no columns, each with its own message
    return check_array(values, dtype=np.float64, input_name=name, ensure_min_samples=MIN_STIMULI)


def check_pair(features: Any, responses: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate features/responses: 2-D (1-D responses are one neuroid), dense, real, finite, at least 3 stimuli,
    the same number of stimuli and the same stimulus ids when both carry ids."""
    _check_same_stimuli(features, responses)
    X, Y = _as_matrix(features, "features", False), _as_matrix(responses, "responses", True)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"features have {X.shape[0]} stimuli but responses have {Y.shape[0]}")
    return X, Y


def _check_same_stimuli(features: Any, responses: Any) -> None:
    ids_f = _stimulus_ids(features)
    ids_r = _stimulus_ids(responses)
    if ids_f is not None and ids_r is not None and list(ids_f) != list(ids_r):
        raise ValueError("features and responses describe different stimuli (stimulus ids differ); align them "
                         "first, e.g. responses.set_index(presentation='stimulus_id').sel(presentation=ids)")


def _stimulus_ids(x: Any):
    coords = getattr(x, "coords", None)  # an xarray's coordinates (a scipy COO matrix's .coords is a tuple)
    if isinstance(coords, Mapping) and "stimulus_id" in coords:
        return [str(s) for s in np.asarray(coords["stimulus_id"].values)]
    ids = getattr(x, "stimulus_ids", None)
    return None if ids is None else [str(s) for s in ids]


def pearson_per_column(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def median_pearson_r(y_true: Any, y_pred: Any) -> float:
    """Median over neuroids (columns) of the Pearson r between actual and predicted responses; neuroids whose r is
    undefined (constant actual or predicted responses) are left out. NaN when every neuroid's r is undefined."""
    actual = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    r = pearson_per_column(predicted.reshape(len(predicted), -1), actual.reshape(len(actual), -1))
    return float(np.median(r[~np.isnan(r)])) if not np.isnan(r).all() else float("nan")


# the field's encoding score as a scikit-learn scorer: cross_val_score(enc, X, Y, scoring=median_pearson_scorer)
median_pearson_scorer = make_scorer(median_pearson_r)


# ---------------------------------------------------------------------------------------------------------------
# Backend: numpy on the CPU, float64 torch on an accelerator. The functions below use only operations that both
# array types share (@, .T, arithmetic, .mean/.sum, fancy indexing), plus _eigh.
def _backend_array(arr: np.ndarray, device: Any):
    dev = get_device(device)
    if dev.type == "cpu":
        return arr
    import torch

    return torch.as_tensor(arr, dtype=torch.float64, device=dev)


def _on_cpu(a) -> bool:
    return isinstance(a, np.ndarray)


def _to_numpy(a) -> np.ndarray:
    return a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)


def _like(values, ref):
    """``values`` as an array of ``ref``'s kind (and device)."""
    if _on_cpu(ref):
        return np.asarray(values, dtype=np.float64)
    import torch

    return torch.as_tensor(np.asarray(values), dtype=ref.dtype, device=ref.device)


def _eigh(K):
    """Eigenvalues (ascending, clipped at 0: a PSD matrix's slightly negative ones are rounding) and eigenvectors."""
    if _on_cpu(K):
        # one BLAS thread: the tridiagonal reduction is memory-bound and gains little from a second thread, while
        # on a busy machine OpenBLAS threads waiting for each other made it ~8x slower (four 960 x 960 eigh: 22 s
        # with 2 threads, 2.8 s with 1, on this project's 2-core machine under load). numpy's eigh (LAPACK syevd)
        # releases the GIL, so folds can run side by side (_map_folds).
        with _one_blas_thread():
            evals, Q = np.linalg.eigh(K)
        return evals.clip(min=0), Q
    import torch

    evals, Q = torch.linalg.eigh(K)
    return evals.clamp(min=0), Q


_THREADPOOLS = []  # threadpoolctl's view of the loaded BLAS libraries, found once (finding them takes milliseconds)


def _one_blas_thread():
    """Context: BLAS runs single-threaded inside (process-wide, as every BLAS thread setting is)."""
    if not _THREADPOOLS:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api="blas")


def _map_folds(solve, items: list, parallel: bool) -> list:
    """``[solve(item) for item in items]``; with ``parallel`` in threads, one per core, each with one BLAS thread
    (the accelerator path runs the folds in turn)."""
    workers = min(len(items), _n_cpus()) if parallel else 1
    if workers < 2:
        return [solve(item) for item in items]
    with _one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(solve, items))


def _n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, containers)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _loo_mean_squared_errors(evals, Q, qty, alphas: Sequence[float], per_target: bool) -> np.ndarray:
    """Leave-one-out mean squared error of ridge for each alpha, from the eigendecomposition K = Q diag(evals) Q' of
    the centred training Gram matrix and qty = Q' yc: (n_alphas,) pooled over targets, or (n_alphas, n_targets).

    The hat matrix of ridge with an unpenalised intercept is 11'/n + Q diag(e/(e+a)) Q', so the residuals are
    Q diag(a/(e+a)) Q'yc and the leverages diag(Q diag(e/(e+a)) Q') + 1/n; LOO residual = residual / (1 - leverage).
    The residuals of a batch of alphas come from one matrix product (batches bounded to ~64 MB).
    """
    n, n_targets = qty.shape
    a = _like(alphas, evals)
    leverage = (Q * Q) @ (evals[:, None] / (evals[:, None] + a[None, :])) + 1.0 / n  # (n, n_alphas)
    batch = max(1, min(len(alphas), 8_000_000 // (n * n_targets)))
    errors = []
    for start in range(0, len(alphas), batch):
        b = a[start:start + batch]
        shrunk = (b[None, :, None] / (evals[:, None, None] + b[None, :, None])) * qty[:, None, :]  # (n, batch, t)
        resid = (Q @ shrunk.reshape(n, -1)).reshape(n, len(b), n_targets)
        loo_sq = (resid / (1 - leverage[:, start:start + batch, None])) ** 2
        errors.append(_to_numpy(loo_sq.mean(0) if per_target else loo_sq.mean((0, 2))))
    return np.concatenate(errors)


def _first_best(errors: np.ndarray) -> np.ndarray:
    """Index of the smallest error along axis 0; a later alpha replaces the best so far only when strictly better, so
    ties keep the earlier alpha and a NaN error is never better nor ever beaten (RidgeCV's update rule)."""
    best, idx = errors[0].copy(), np.zeros(errors.shape[1:], dtype=int)
    for i in range(1, len(errors)):
        better = errors[i] < best
        best = np.where(better, errors[i], best)
        idx = np.where(better, i, idx)
    return idx


def _ridge_dual(K, yc, alphas: Sequence[float], per_target: bool):
    """Fit ridge on a centred training Gram matrix K with the penalty chosen by leave-one-out.

    Returns (chosen alpha: a float, or one per target when ``per_target`` and there are several targets; dual
    weights W (n_train x n_targets) such that the centred predictions for stimuli with centred cross-Gram K_new
    are K_new @ W).
    """
    evals, Q = _eigh(K)
    qty = Q.T @ yc
    per_target = per_target and yc.shape[1] > 1  # as RidgeCV: one target means one alpha
    idx = _first_best(_loo_mean_squared_errors(evals, Q, qty, alphas, per_target))
    chosen = np.asarray(alphas, dtype=np.float64)[idx]
    dual = qty / (evals[:, None] + _like(np.atleast_1d(chosen), evals)[None, :])
    return (chosen if per_target else float(chosen)), Q @ dual


def _checked_alphas(alphas: Any) -> list[float]:
    values = [float(a) for a in np.atleast_1d(alphas)]
    if not values or min(values) <= 0 or not np.isfinite(values).all():
        raise ValueError(f"alphas must be a non-empty list of positive, finite penalties; got {alphas!r}")
    return values


class _EncoderTags:
    """Tags shared by both encoders: regressors that take several targets (neuroids) at once."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class RidgeEncoder(_EncoderTags, RegressorMixin, BaseEstimator):
    """Ridge regression with the penalty chosen by efficient leave-one-out on the training data (GCV).

    Equals ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=...)`` (cv=None): the same ``alpha_``,
    ``coef_``, ``intercept_`` and predictions. With ``standardize=True`` the units are z-scored on the training data
    first (= ``make_pipeline(StandardScaler(), RidgeCV(alphas))``); ``coef_``/``intercept_`` always map the features
    as given. ``score`` is R^2; the field's median Pearson r is ``median_pearson_scorer``.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, alpha_per_target: bool = False,
                 standardize: bool = False, device: str | None = None):
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.standardize = standardize
        self.device = device

    def fit(self, X: Any, y: Any) -> "RidgeEncoder":
        from workbench.alignment.ridge_blocked import check_blocked_pair, fit_ridge_blocked, is_out_of_core

        _check_same_stimuli(X, y)
        if is_out_of_core(X) or is_out_of_core(y):  # a memory map: fitted block by block, never copied whole
            features, targets = check_blocked_pair(X, y)
            self.alpha_, coef, intercept = fit_ridge_blocked(features, targets, _checked_alphas(self.alphas),
                                                             self.alpha_per_target, self.standardize, self.device)
            self.n_features_in_ = features.shape[1]
            one = np.ndim(getattr(y, "values", y)) == 1
            self.coef_, self.intercept_ = (coef[:, 0], float(intercept[0])) if one else (coef.T, intercept)
            return self
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64,
                             ensure_min_samples=MIN_STIMULI)
        alphas = _checked_alphas(self.alphas)
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        x_mean, y_mean = X.mean(0), Y.mean(0)
        Z = X - x_mean
        scale = np.ones_like(x_mean)
        if self.standardize:
            sd = Z.std(0)
            scale = np.where(sd > 0, sd, 1.0)
            Z /= scale
        Zb = _backend_array(Z, self.device)
        alpha, dual = _ridge_dual(Zb @ Zb.T, _backend_array(Y - y_mean, self.device), alphas, self.alpha_per_target)
        coef = _to_numpy(Zb.T @ dual) / scale[:, None]  # (n_units, n_targets), for the features as given
        intercept = y_mean - x_mean @ coef
        self.alpha_ = alpha
        self.coef_, self.intercept_ = (coef[:, 0], float(intercept[0])) if y.ndim == 1 else (coef.T, intercept)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_.T + self.intercept_


class PLSEncoder(_EncoderTags, RegressorMixin, BaseEstimator):
    """Partial least squares (scikit-learn ``PLSRegression``), 25 components and no scaling as in Brain-Score.

    ``n_components`` is capped at n_stimuli - 1 and n_units (the fitted number is ``n_components_``); ``coef_`` and
    ``intercept_`` map the features as given (predictions = X @ coef_.T + intercept_). ``score`` is R^2.
    """

    def __init__(self, n_components: int = 25, scale: bool = False, max_iter: int = 500):
        self.n_components = n_components
        self.scale = scale
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any) -> "PLSEncoder":
        from sklearn.cross_decomposition import PLSRegression

        _check_same_stimuli(X, y)
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64,
                             ensure_min_samples=MIN_STIMULI)
        self.n_components_ = min(self.n_components, X.shape[0] - 1, X.shape[1])
        self.pls_ = PLSRegression(n_components=self.n_components_, scale=self.scale, max_iter=self.max_iter)
        self.pls_.fit(X, np.asarray(y, dtype=np.float64))  # 1-D y stays 1-D, so predictions are 1-D as well
        # sklearn predicts (X - x_mean) @ coef_.T + y_mean; the prediction at X = 0 folds the centring into the
        # intercept, so that coef_/intercept_ map the features as given
        self.n_iter_ = self.pls_.n_iter_  # NIPALS iterations per component
        self.coef_ = np.asarray(self.pls_.coef_).reshape(-1, X.shape[1])
        intercept = np.asarray(self.pls_.predict(np.zeros((1, X.shape[1])))).reshape(-1)
        self.coef_, self.intercept_ = (self.coef_[0], float(intercept[0])) if y.ndim == 1 else (self.coef_, intercept)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.pls_.predict(X)


# ---------------------------------------------------------------------------------------------------------------
def make_folds(n_stimuli: int, n_folds: int = 5, seed: int = 0, labels: Sequence | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (shuffled) K-fold train/test index pairs; stratified by ``labels`` when given."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n_folds < 2 or n_folds > n_stimuli:
        raise ValueError(f"n_folds must be between 2 and the number of stimuli ({n_stimuli}); got {n_folds}")
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n_stimuli:
            raise ValueError(f"{len(labels)} labels for {n_stimuli} stimuli")
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(n_stimuli), labels)]
    return list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n_stimuli)))


def ridge_cv_predictions(features: Any, responses: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                         alphas: Sequence[float] = DEFAULT_ALPHAS, alpha_per_target: bool = False,
                         standardize: bool = False, device=None) -> tuple[np.ndarray, list]:
    """Out-of-fold predictions of RidgeEncoder (= RidgeCV on each training fold), fast.

    Without standardisation the Gram matrix of all stimuli is computed once (one syrk on the CPU) and each fold's
    centred training Gram, its eigendecomposition (shared by all alphas and neuroids) and the centred test-by-train
    cross-Gram are derived from it, so the features are touched once instead of once per fold. With
    standardisation the scaling depends on the training fold, so each fold forms its own Gram matrix (still one
    syrk for its training and test stimuli together). Returns (predictions (n, n_neuroids), alphas per fold).
    Memory-mapped features or responses (an activation store's layers) go to the out-of-core
    ``workbench.alignment.ridge_blocked.ridge_cv_predictions_blocked`` (same results, blocks of features, stimuli
    and targets).
    """
    from workbench.alignment.ridge_blocked import is_out_of_core, ridge_cv_predictions_blocked

    if is_out_of_core(features) or is_out_of_core(responses):  # a memory map: never copied whole into memory
        return ridge_cv_predictions_blocked(features, responses, folds, alphas, alpha_per_target, standardize, device)
    X, Y = check_pair(features, responses)
    alphas = _checked_alphas(alphas)
    folds = [(np.asarray(tr), np.asarray(te)) for tr, te in folds]
    if standardize:
        grams = [_standardized_fold_gram(X, tr, te, device) for tr, te in folds]
    else:
        # centring by the mean of all stimuli first keeps the Gram entries (and their rounding) small; each fold's
        # exact centring by its own training mean follows in _centred_fold_gram
        Xc = _backend_array(X - X.mean(0), device)
        G = Xc @ Xc.T
        grams = [_centred_fold_gram(G, tr, te) for tr, te in folds]
    Yb = _backend_array(Y, device)

    def solve(item):
        (tr, _), (K_train, K_test) = item
        y_mean = Yb[tr].mean(0)
        alpha, dual = _ridge_dual(K_train, Yb[tr] - y_mean, alphas, alpha_per_target)
        return alpha, _to_numpy(K_test @ dual + y_mean)

    pred = np.empty_like(Y)
    chosen = []
    for (_, te), (alpha, fold_pred) in zip(folds, _map_folds(solve, list(zip(folds, grams)), _on_cpu(Yb))):
        pred[te] = fold_pred
        chosen.append(alpha.tolist() if isinstance(alpha, np.ndarray) else alpha)
    return pred, chosen


def _centred_fold_gram(G, tr: np.ndarray, te: np.ndarray):
    """The fold's training Gram and test-by-train cross-Gram, both centred by the training mean, from the Gram of
    all stimuli: <x_i - m, x_j - m> = G_ij - <x_i, m> - <x_j, m> + <m, m> with m the training mean."""
    G_train, G_test = G[tr[:, None], tr], G[te[:, None], tr]
    row_mean = G_train.mean(0)  # <x_j, m>
    grand = row_mean.mean()  # <m, m>
    K_train = G_train - row_mean[:, None] - row_mean[None, :] + grand
    K_test = G_test - G_test.mean(1)[:, None] - row_mean[None, :] + grand
    return K_train, K_test


def _standardized_fold_gram(X: np.ndarray, tr: np.ndarray, te: np.ndarray, device):
    """Training and test-by-train Gram matrices of the units z-scored on the training stimuli (StandardScaler)."""
    Z = X - X[tr].mean(0)
    sd = np.sqrt((Z[tr] ** 2).mean(0))
    Z /= np.where(sd > 0, sd, 1.0)
    Zb = _backend_array(Z, device)
    G = Zb @ Zb.T  # the training rows of Z are centred, so these blocks need no further centring
    return G[tr[:, None], tr], G[te[:, None], tr]


@dataclass
class EncodingResult:
    predictions: np.ndarray  # (n_stimuli, n_neuroids) out-of-fold
    r_per_fold: np.ndarray  # (n_folds, n_neuroids)
    alphas: list | None

    @property
    def r(self) -> np.ndarray:
        """Per-neuroid Pearson r, mean over folds."""
        return np.nanmean(self.r_per_fold, axis=0)

    @property
    def score(self) -> float:
        return float(np.nanmedian(self.r))


def cross_validate_encoding(features: Any, responses: Any, method: str = "ridge", n_folds: int = 5, seed: int = 0,
                            labels: Sequence | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS,
                            n_components: int = 25, standardize: bool = False, alpha_per_target: bool = False,
                            device=None) -> EncodingResult:
    """Seeded K-fold encoding; per-neuroid Pearson r on held-out stimuli (mean over folds). Memory-mapped features
    (an activation store's layers) are scored out of core with ridge (``ridge_blocked``)."""
    from workbench.alignment.ridge_blocked import check_blocked_pair, is_out_of_core

    if method == "ridge" and (is_out_of_core(features) or is_out_of_core(responses)):
        _check_same_stimuli(features, responses)
        X, Y = check_blocked_pair(features, responses)
        folds = make_folds(X.shape[0], n_folds, seed, labels)
        pred, chosen = ridge_cv_predictions(X, Y, folds, alphas, alpha_per_target, standardize, device)
        r = np.stack([pearson_per_column(pred[te], np.asarray(Y[te], dtype=np.float64)) for _, te in folds])
        return EncodingResult(pred, r, chosen)
    X, Y = check_pair(features, responses)
    folds = make_folds(X.shape[0], n_folds, seed, labels)
    if method == "ridge":
        pred, chosen = ridge_cv_predictions(X, Y, folds, alphas, alpha_per_target, standardize, device)
    elif method == "pls":
        pred = np.empty_like(Y)
        for tr, te in folds:
            pred[te] = PLSEncoder(n_components).fit(X[tr], Y[tr]).predict(X[te]).reshape(len(te), -1)
        chosen = None
    else:
        raise ValueError(f"unknown encoding method {method!r}; choose 'ridge' or 'pls'")
    r = np.stack([pearson_per_column(pred[te], Y[te]) for _, te in folds])
    return EncodingResult(pred, r, chosen)


__all__ = ("RidgeEncoder", "PLSEncoder", "cross_validate_encoding", "ridge_cv_predictions", "make_folds",
           "EncodingResult", "pearson_per_column", "median_pearson_r", "median_pearson_scorer", "DEFAULT_ALPHAS")
