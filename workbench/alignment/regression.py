"""Cross-validated encoding models: features (n_stimuli x n_units) -> responses (n_stimuli x n_neuroids).

* ``RidgeEncoder``: ridge regression whose penalty is chosen inside the training data by efficient leave-one-out
  (generalised cross-validation), exactly what ``sklearn.linear_model.RidgeCV(alphas)`` does with its default
  ``cv=None``. One eigendecomposition of the centred Gram matrix (equivalently, one SVD of the centred design)
  serves every alpha and every neuroid; the intercept is not penalised.
* ``PLSEncoder``: scikit-learn ``PLSRegression`` (25 components, no scaling, as in Brain-Score).
* ``cross_validate_encoding``: seeded K-fold (stratified by category when labels are given); per-neuroid Pearson r
  on held-out stimuli (mean over folds), the median over neuroids as the score. The ridge path computes the Gram
  matrix of all stimuli once and derives every fold's centred blocks from it.

Both encoders follow the scikit-learn estimator API; their ``score`` is the median per-neuroid Pearson r (the
quantity the field reports), not R^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from workbench.utils import get_device

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
# Citations (Brain-Score, Spearman-Brown) live on the METRICS entries "ridge" and "pls"
# (workbench.alignment.metrics.encoding).
DTYPE = torch.float64


def _as_2d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(getattr(x, "values", x), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_stimuli x n_{'units' if name == 'features' else 'neuroids'}); "
                         f"got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute them first")
    return arr


def check_pair(features: Any, responses: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate features/responses: 2-D, finite, same number of stimuli, same stimulus ids when both carry ids."""
    ids_f = _stimulus_ids(features)
    ids_r = _stimulus_ids(responses)
    if ids_f is not None and ids_r is not None and list(ids_f) != list(ids_r):
        raise ValueError("features and responses describe different stimuli (stimulus ids differ); align them "
                         "first, e.g. responses.set_index(presentation='stimulus_id').sel(presentation=ids)")
    X, Y = _as_2d(features, "features"), _as_2d(responses, "responses")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"features have {X.shape[0]} stimuli but responses have {Y.shape[0]}")
    if X.shape[0] < 3:
        raise ValueError(f"need at least 3 stimuli to fit and test an encoding model; got {X.shape[0]}")
    return X, Y


def _stimulus_ids(x: Any):
    coords = getattr(x, "coords", None)
    if coords is not None and "stimulus_id" in coords:
        return [str(s) for s in np.asarray(coords["stimulus_id"].values)]
    ids = getattr(x, "stimulus_ids", None)
    return None if ids is None else [str(s) for s in ids]


def pearson_per_column(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


# ---------------------------------------------------------------------------------------------------------------
def _gcv_select(evals: torch.Tensor, Q: torch.Tensor, yc: torch.Tensor, alphas: Sequence[float],
                per_target: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out ridge errors from the eigendecomposition of the centred Gram matrix K = Q diag(evals) Q'.

    Hat matrix of ridge with an unpenalised intercept: 11'/n + Q diag(e/(e+a)) Q'. Returns (best alpha index per
    target or one index, and the matching dual weights diag(1/(e+a)) Q' yc per target).
    """
    n = Q.shape[0]
    qty = Q.T @ yc
    best_score, best_idx, best_dual = None, None, None
    for i, a in enumerate(alphas):
        shrink = evals / (evals + a)
        fitted = Q @ (shrink[:, None] * qty)
        h = (Q * Q) @ shrink + 1.0 / n
        loo = (yc - fitted) / (1 - h)[:, None]
        dual = (1.0 / (evals + a))[:, None] * qty
        score = -(loo ** 2).mean(0) if per_target else -(loo ** 2).mean()
        if best_score is None:
            best_score, best_dual = score.clone(), dual.clone()
            best_idx = torch.zeros_like(score, dtype=torch.long)
        else:
            better = score > best_score  # strict: ties keep the smaller alpha, as RidgeCV does
            best_score = torch.where(better, score, best_score)
            best_idx = torch.where(better, torch.full_like(best_idx, i), best_idx)
            best_dual = torch.where(better, dual, best_dual)
    return best_idx, best_dual


def _clip_evals(evals: torch.Tensor) -> torch.Tensor:
    # eigenvalues of a PSD matrix that come out slightly negative are rounding error
    return evals.clamp(min=0)


class RidgeEncoder(BaseEstimator, RegressorMixin):
    """Ridge regression with the penalty chosen by efficient leave-one-out on the training data (GCV).

    Equals ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=...)`` (cv=None). With ``standardize=True`` the
    units are z-scored on the training data first; ``coef_``/``intercept_`` always map the features as given.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, alpha_per_target: bool = False,
                 standardize: bool = False, device: str | None = None):
        self.alphas = alphas
        self.alpha_per_target = alpha_per_target
        self.standardize = standardize
        self.device = device

    def fit(self, X: Any, y: Any) -> "RidgeEncoder":
        X, Y = check_pair(X, y)
        self._single_target = np.ndim(getattr(y, "values", y)) == 1
        alphas = [float(a) for a in np.atleast_1d(self.alphas)]
        if not alphas or min(alphas) <= 0:
            raise ValueError(f"alphas must be positive numbers; got {self.alphas}")
        dev = get_device(self.device)
        Xt = torch.as_tensor(X, dtype=DTYPE, device=dev)
        Yt = torch.as_tensor(Y, dtype=DTYPE, device=dev)
        x_mean, y_mean = Xt.mean(0), Yt.mean(0)
        scale = torch.ones_like(x_mean)
        if self.standardize:
            sd = Xt.std(0, unbiased=False)
            scale = torch.where(sd > 0, sd, torch.ones_like(sd))
        Xc = (Xt - x_mean) / scale
        yc = Yt - y_mean
        evals, Q = torch.linalg.eigh(Xc @ Xc.T)
        idx, dual = _gcv_select(_clip_evals(evals), Q, yc, alphas, self.alpha_per_target)
        coef_std = Xc.T @ (Q @ dual)  # (n_units, n_targets) in standardised units
        coef = coef_std / scale[:, None]
        intercept = y_mean - x_mean @ coef
        self.alpha_ = (np.asarray(alphas)[idx.cpu().numpy()] if self.alpha_per_target else alphas[int(idx)])
        self.coef_ = coef.T.cpu().numpy()
        self.intercept_ = intercept.cpu().numpy()
        if self._single_target:
            self.coef_, self.intercept_ = self.coef_[0], float(self.intercept_[0])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = _as_2d(X, "features")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"features have {X.shape[1]} units; the encoder was fitted on {self.n_features_in_}")
        return X @ np.atleast_2d(self.coef_).T + self.intercept_ if not self._single_target else \
            X @ self.coef_ + self.intercept_

    def score(self, X: Any, y: Any, sample_weight=None) -> float:
        """Median over neuroids of the Pearson r between predicted and actual responses."""
        X, Y = check_pair(X, y)
        pred = self.predict(X).reshape(Y.shape[0], -1)
        return float(np.nanmedian(pearson_per_column(pred, Y)))


class PLSEncoder(BaseEstimator, RegressorMixin):
    """Partial least squares (scikit-learn ``PLSRegression``), 25 components and no scaling as in Brain-Score."""

    def __init__(self, n_components: int = 25, scale: bool = False, max_iter: int = 500):
        self.n_components = n_components
        self.scale = scale
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any) -> "PLSEncoder":
        from sklearn.cross_decomposition import PLSRegression

        X, Y = check_pair(X, y)
        k = min(self.n_components, X.shape[0] - 1, X.shape[1])
        if k < 1:
            raise ValueError("PLS needs at least 2 stimuli and 1 unit")
        self.pls_ = PLSRegression(n_components=k, scale=self.scale, max_iter=self.max_iter).fit(X, Y)
        # sklearn predicts (X - x_mean) coef' + intercept (coef_ is (n_targets, n_features) since 1.3); fold the
        # centring into the intercept so that coef_/intercept_ map the features as given
        self.coef_ = np.asarray(self.pls_.coef_)
        self.intercept_ = np.asarray(self.pls_.intercept_).ravel() - np.asarray(self.pls_._x_mean) @ self.coef_.T
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.pls_.predict(_as_2d(X, "features"))

    def score(self, X: Any, y: Any, sample_weight=None) -> float:
        X, Y = check_pair(X, y)
        return float(np.nanmedian(pearson_per_column(self.predict(X).reshape(Y.shape), Y)))


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

    The Gram matrix of all stimuli is computed once; each fold's centred training Gram, its eigendecomposition
    (shared by all alphas and neuroids) and the centred test-by-train cross-Gram are derived from it, so the
    features are touched once instead of once per fold. Returns (predictions (n, n_neuroids), alphas per fold).
    """
    X, Y = check_pair(features, responses)
    dev = get_device(device)
    alphas = [float(a) for a in np.atleast_1d(alphas)]
    Xt = torch.as_tensor(X, dtype=DTYPE, device=dev)
    Yt = torch.as_tensor(Y, dtype=DTYPE, device=dev)
    if not standardize:
        G = Xt @ Xt.T
    pred = torch.empty_like(Yt)
    chosen = []
    for tr, te in folds:
        tr_t, te_t = torch.as_tensor(tr, device=dev), torch.as_tensor(te, device=dev)
        if standardize:  # the scaling depends on the training fold, so the Gram must be rebuilt per fold
            mu = Xt[tr_t].mean(0)
            sd = Xt[tr_t].std(0, unbiased=False)
            Z = (Xt - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))
            Ktr, Kte = Z[tr_t] @ Z[tr_t].T, Z[te_t] @ Z[tr_t].T
        else:
            Gtr = G[tr_t][:, tr_t]
            Gte = G[te_t][:, tr_t]
            row_mean = Gtr.mean(0)  # <x_j, mean_tr>
            grand = row_mean.mean()
            Ktr = Gtr - row_mean[:, None] - row_mean[None, :] + grand
            te_mean = Gte.mean(1)  # <x_test, mean_tr>
            Kte = Gte - te_mean[:, None] - row_mean[None, :] + grand
        y_mean = Yt[tr_t].mean(0)
        evals, Q = torch.linalg.eigh(Ktr)
        idx, dual = _gcv_select(_clip_evals(evals), Q, Yt[tr_t] - y_mean, alphas, alpha_per_target)
        pred[te_t] = Kte @ (Q @ dual) + y_mean
        chosen.append(np.asarray(alphas)[idx.cpu().numpy()].tolist() if alpha_per_target else alphas[int(idx)])
    return pred.cpu().numpy(), chosen


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
    """Seeded K-fold encoding; per-neuroid Pearson r on held-out stimuli (mean over folds)."""
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
           "EncodingResult", "pearson_per_column", "DEFAULT_ALPHAS")
