"""Encoding models against scikit-learn on real V4 responses; the scikit-learn estimator contract; split-half
ceiling; unbiased CKA."""

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import RidgeCV
from sklearn.utils.estimator_checks import parametrize_with_checks

from workbench.alignment import (DEFAULT_ALPHAS, PLSEncoder, RidgeEncoder, ceiled_scores, cross_validate_encoding,
                                 linear_cka, make_folds, median_pearson_r, median_pearson_scorer, ridge_cv_predictions,
                                 spearman_brown, split_half_ceiling)


@pytest.fixture(scope="module")
def v4(data_root):
    from workbench.data import load_responses

    resp = load_responses("cowley2023_v4", session="201025").isel(presentation=slice(0, 480))  # small: fast
    rng = np.random.default_rng(0)
    # features: a noisy non-linear random expansion of the responses (some neuroids predictable, some not)
    X = np.maximum(resp.values @ rng.normal(size=(resp.shape[1], 600)) + 3 * rng.normal(size=(resp.shape[0], 600)),
                   0)
    return X, resp


# Every check of scikit-learn's estimator suite passes (none is expected to fail); check_array_api_input is skipped
# by scikit-learn itself unless SCIPY_ARRAY_API=1 is set, and the encoders do not claim array-API support.
@parametrize_with_checks([RidgeEncoder(), RidgeEncoder(standardize=True, alpha_per_target=True), PLSEncoder()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_fast_ridge_path_equals_sklearn_ridgecv(v4):
    X, resp = v4
    Y = resp.values
    folds = make_folds(len(Y), 5, seed=0)
    pred, alphas = ridge_cv_predictions(X, Y, folds, DEFAULT_ALPHAS)
    for (tr, te), alpha in zip(folds, alphas):
        ref = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[tr], Y[tr])
        assert ref.alpha_ == alpha
        np.testing.assert_allclose(pred[te], ref.predict(X[te]), atol=1e-6, rtol=0)
    # per-target alphas too
    tr, te = folds[0]
    pt, al = ridge_cv_predictions(X, Y, [(tr, te)], DEFAULT_ALPHAS, alpha_per_target=True)
    ref = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(X[tr], Y[tr])
    np.testing.assert_array_equal(al[0], ref.alpha_)
    np.testing.assert_allclose(pt[te], ref.predict(X[te]), atol=1e-6, rtol=0)


def test_fast_standardized_path_equals_scaler_then_ridgecv(v4):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, resp = v4
    Y = resp.values
    X = X * np.random.default_rng(1).uniform(0.1, 10, size=X.shape[1])  # units on different scales
    folds = make_folds(len(Y), 4, seed=2)
    pred, alphas = ridge_cv_predictions(X, Y, folds, DEFAULT_ALPHAS, standardize=True)
    for (tr, te), alpha in zip(folds, alphas):
        ref = make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS)).fit(X[tr], Y[tr])
        assert ref[-1].alpha_ == alpha
        np.testing.assert_allclose(pred[te], ref.predict(X[te]), atol=1e-6, rtol=0)


def test_fast_path_survives_a_large_common_offset(v4):
    # the Gram matrix is formed from features centred by their mean, so an offset of 1e4 (Gram entries ~1e12 if
    # uncentred) costs no accuracy: still RidgeCV's alphas and predictions
    X, resp = v4
    X, Y = X[:240, :300] + 1e4, resp.values[:240]
    folds = make_folds(len(Y), 3, seed=0)
    pred, alphas = ridge_cv_predictions(X, Y, folds, DEFAULT_ALPHAS)
    for (tr, te), alpha in zip(folds, alphas):
        ref = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[tr], Y[tr])
        assert ref.alpha_ == alpha
        np.testing.assert_allclose(pred[te], ref.predict(X[te]), atol=1e-6, rtol=0)


def test_torch_backend_equals_numpy_backend(v4):
    # the accelerator path runs the same functions on float64 torch tensors; on CPU tensors it must give the
    # numpy path's alphas and dual weights
    import torch

    from workbench.alignment.regression import _ridge_dual

    X, resp = v4
    Xc = X[:300] - X[:300].mean(0)
    yc = resp.values[:300] - resp.values[:300].mean(0)
    K = Xc @ Xc.T
    for per_target in (False, True):
        alpha_np, dual_np = _ridge_dual(K, yc, DEFAULT_ALPHAS, per_target)
        alpha_t, dual_t = _ridge_dual(torch.as_tensor(K), torch.as_tensor(yc), DEFAULT_ALPHAS, per_target)
        np.testing.assert_array_equal(alpha_t, alpha_np)
        np.testing.assert_allclose(dual_t.numpy(), dual_np, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_ridge_encoder_on_cuda_equals_ridgecv(v4):
    X, resp = v4
    Y = resp.values
    enc = RidgeEncoder(DEFAULT_ALPHAS, device="cuda").fit(X[:360], Y[:360])
    ref = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[:360], Y[:360])
    assert enc.alpha_ == ref.alpha_
    np.testing.assert_allclose(enc.predict(X[360:]), ref.predict(X[360:]), atol=1e-6, rtol=0)


def test_alpha_choice_follows_ridgecv_update_rule():
    from workbench.alignment.regression import _first_best

    # RidgeCV's rule, per target: a later alpha replaces the best so far only when strictly better, so ties keep the
    # earlier alpha and NaN (never better, never beaten, as comparisons with NaN are false) changes nothing
    errors = np.array([[2.0, np.nan, 1.0], [1.0, 3.0, 1.0], [1.0, np.nan, 0.5]])
    assert _first_best(errors).tolist() == [1, 0, 2]
    assert int(_first_best(np.array([3.0, 2.0, 2.0, 5.0]))) == 1


def test_ridge_encoder_estimator_api(v4):
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, resp = v4
    Y = resp.values
    enc = RidgeEncoder(DEFAULT_ALPHAS).fit(X[:360], Y[:360])
    ref = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[:360], Y[:360])
    assert enc.alpha_ == ref.alpha_
    np.testing.assert_allclose(enc.coef_, ref.coef_, atol=1e-8)
    np.testing.assert_allclose(enc.intercept_, ref.intercept_, atol=1e-8)
    np.testing.assert_allclose(enc.predict(X[360:]), ref.predict(X[360:]), atol=1e-6, rtol=0)
    std = RidgeEncoder(DEFAULT_ALPHAS, standardize=True).fit(X[:360], Y[:360])
    ref_std = make_pipeline(StandardScaler(), RidgeCV(alphas=DEFAULT_ALPHAS)).fit(X[:360], Y[:360])
    np.testing.assert_allclose(std.predict(X[360:]), ref_std.predict(X[360:]), atol=1e-6, rtol=0)
    per = RidgeEncoder(DEFAULT_ALPHAS, alpha_per_target=True).fit(X[:360], Y[:360])
    ref_per = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(X[:360], Y[:360])
    np.testing.assert_array_equal(per.alpha_, ref_per.alpha_)
    np.testing.assert_allclose(per.predict(X[360:]), ref_per.predict(X[360:]), atol=1e-6, rtol=0)
    # score is R^2 (sklearn's regressor contract), not the field's median r
    assert enc.score(X[360:], Y[360:]) == pytest.approx(r2_score(Y[360:], enc.predict(X[360:])), abs=1e-12)
    assert enc.score(X[360:], Y[360:]) == pytest.approx(ref.score(X[360:], Y[360:]), abs=1e-8)
    one = RidgeEncoder(DEFAULT_ALPHAS).fit(X[:360], Y[:360, 0])
    ref_one = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[:360], Y[:360, 0])
    assert one.predict(X[360:]).shape == (120,) and one.coef_.shape == (600,) and isinstance(one.intercept_, float)
    np.testing.assert_allclose(one.predict(X[360:]), ref_one.predict(X[360:]), atol=1e-6, rtol=0)


def test_median_pearson_scorer_in_cross_val_score(v4):
    from sklearn.model_selection import KFold, cross_val_score

    X, resp = v4
    Y = resp.values
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(RidgeEncoder(DEFAULT_ALPHAS), X, Y, cv=cv, scoring=median_pearson_scorer)
    for score, (tr, te) in zip(scores, cv.split(X)):
        pred = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[tr], Y[tr]).predict(X[te])
        r = [np.corrcoef(pred[:, j], Y[te, j])[0, 1] for j in range(Y.shape[1])]  # by hand, neuroid by neuroid
        assert score == pytest.approx(np.median(r), abs=1e-10)
    # one neuroid: the score is its r; a constant prediction has no r and is left out
    assert median_pearson_r(Y[:, 0], 2 * Y[:, 0] + 1) == pytest.approx(1.0)
    both = np.c_[Y[:, 0], Y[:, 1]]
    assert median_pearson_r(both, np.c_[-Y[:, 0], np.ones(len(Y))]) == pytest.approx(-1.0)


def test_pls_encoder_equals_sklearn(v4):
    X, resp = v4
    Y = resp.values
    enc = PLSEncoder(10).fit(X[:360], Y[:360])
    ref = PLSRegression(10, scale=False).fit(X[:360], Y[:360])
    np.testing.assert_allclose(enc.predict(X[360:]), ref.predict(X[360:]), atol=1e-8)
    np.testing.assert_allclose(X[360:] @ enc.coef_.T + enc.intercept_, ref.predict(X[360:]), atol=1e-8)
    # one target: 1-D predictions, as PLSRegression gives
    one = PLSEncoder(2).fit(X[:50], Y[:50, 0])
    ref_one = PLSRegression(2, scale=False).fit(X[:50], Y[:50, 0])
    assert one.predict(X[:50]).shape == (50,) == ref_one.predict(X[:50]).shape
    np.testing.assert_allclose(one.predict(X[360:]), ref_one.predict(X[360:]), atol=1e-8)
    np.testing.assert_allclose(X[360:] @ one.coef_ + one.intercept_, ref_one.predict(X[360:]), atol=1e-8)
    assert PLSEncoder(25).fit(X[:10, :4], Y[:10]).n_components_ == 4  # capped at the number of units


@pytest.mark.parametrize("encoder", [RidgeEncoder(), PLSEncoder(2)], ids=["ridge", "pls"])
def test_estimator_contract_on_bad_input(encoder):
    from scipy import sparse
    from sklearn.base import is_regressor
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 5)), rng.normal(size=50)
    assert is_regressor(encoder)
    with pytest.raises(NotFittedError):
        encoder.predict(X)
    with pytest.raises(ValueError, match="Complex data not supported"):
        encoder.fit(X + 1j, y)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        encoder.fit(X[:, 0], y)
    with pytest.raises(ValueError, match="0 feature"):
        encoder.fit(np.empty((50, 0)), y)
    with pytest.raises(TypeError, match="Sparse data.*toarray"):
        encoder.fit(sparse.csr_matrix(X), y)
    fitted = encoder.fit(X, y)
    assert fitted is encoder and not [k for k in vars(encoder) if k.startswith("_")]  # only fitted attributes_
    with pytest.raises(ValueError, match="X has 4 features"):
        encoder.predict(X[:, :4])


def test_cross_validation_inputs_are_checked(v4):
    from scipy import sparse

    X, resp = v4
    Y = resp.values
    with pytest.raises(ValueError, match="features must be 2-D.*features\\[:, None\\]"):
        cross_validate_encoding(X[:, 0], Y)
    with pytest.raises(TypeError, match="sparse.*toarray"):
        cross_validate_encoding(sparse.csr_matrix(X), Y)
    with pytest.raises(ValueError, match="Complex data"):
        cross_validate_encoding(X + 0j, Y)
    with pytest.raises(ValueError, match="0 feature"):
        cross_validate_encoding(X[:, :0], Y)
    with pytest.raises(ValueError, match="alphas must be"):
        ridge_cv_predictions(X, Y, make_folds(len(Y), 3), alphas=[1.0, -1.0])
    res = cross_validate_encoding(X, Y[:, 0], n_folds=3)  # one neuroid as a 1-D vector
    assert res.r_per_fold.shape == (3, 1)


def test_cross_validate_encoding(v4):
    X, resp = v4
    res = cross_validate_encoding(X, resp.values, "ridge", n_folds=3, seed=1)
    assert res.r_per_fold.shape == (3, resp.shape[1])
    assert res.score == pytest.approx(np.median(res.r_per_fold.mean(0)))
    assert res.score > 0.2  # features are built from the responses: must be predictable
    shuffled = cross_validate_encoding(np.random.default_rng(0).permutation(X), resp.values, "ridge", 3, 1)
    assert abs(shuffled.score) < 0.1  # a stimulus-shuffled feature matrix predicts nothing
    labels = np.arange(len(X)) % 4
    for tr, te in make_folds(len(X), 4, 0, labels):
        assert np.bincount(labels[te]).tolist() == [len(X) // 16] * 4  # stratified


def test_bad_regression_inputs(v4):
    X, resp = v4
    with pytest.raises(ValueError, match="stimuli"):
        cross_validate_encoding(X[:100], resp.values)  # 100 vs 480 stimuli
    with pytest.raises(ValueError, match="NaN"):
        bad = X.copy()
        bad[0, 0] = np.nan
        RidgeEncoder().fit(bad, resp.values)
    import xarray as xr
    feats = xr.DataArray(X, dims=("presentation", "unit"),
                         coords={"stimulus_id": ("presentation", resp.stimulus_id.values[::-1])})
    with pytest.raises(ValueError, match="different stimuli"):
        RidgeEncoder().fit(feats, resp)
    with pytest.raises(ValueError, match="unknown encoding method"):
        cross_validate_encoding(X, resp.values, "lasso")


def test_split_half_ceiling_on_trials(data_root):
    from workbench.data import load_responses

    trials = load_responses("cowley2023_v4", session="210325", trials=True)
    c = split_half_ceiling(trials, n_splits=20, seed=0)
    assert c.shape == (50,)
    assert 0.70 < np.median(c) < 0.85  # the data README measured 0.773 (random halves, Spearman-Brown)
    # one split by hand for one neuroid
    rng = np.random.default_rng(0)
    x = trials.values[:, 3, :]
    ok = ~np.isnan(x)
    keys = np.where(ok, rng.random(trials.shape)[:, 3, :], np.inf)  # same draw order as the implementation
    del keys  # the hand check below uses its own split; the estimator must agree with it in expectation
    half1 = np.array([np.nanmean(row[~np.isnan(row)][: (~np.isnan(row)).sum() // 2]) for row in x])
    half2 = np.array([np.nanmean(row[~np.isnan(row)][(~np.isnan(row)).sum() // 2:]) for row in x])
    fixed_split = spearman_brown(np.corrcoef(half1, half2)[0, 1])
    assert abs(fixed_split - c[3]) < 0.1
    cs = ceiled_scores(np.full(50, 0.5), c)
    assert cs["r2_over_c_median"] == pytest.approx(np.median(0.25 / c))
    assert cs["r_over_c_sq_median"] == pytest.approx(np.median((0.5 / c) ** 2))
    with pytest.raises(ValueError, match=">= 2 valid repeats"):
        split_half_ceiling(trials.values[:, :, :1])


def test_unbiased_linear_cka():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20))
    Q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(X, 3 * X @ Q) == pytest.approx(1.0, abs=1e-10)  # invariant to rotation and scale
    Y = rng.normal(size=(60, 15))
    # independent representations: the unbiased estimator is centred on 0 (the biased one is not)
    vals = [linear_cka(rng.normal(size=(60, 20)), rng.normal(size=(60, 15))) for _ in range(20)]
    assert abs(np.mean(vals)) < 0.05

    def hsic_u(K, L):  # Song et al. (2012) eq. 5, written out with explicit sums
        n = K.shape[0]
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        a = np.trace(K @ L)
        b = K.sum() * L.sum() / ((n - 1) * (n - 2))
        c = 2 / (n - 2) * np.ones(n) @ K @ L @ np.ones(n)
        return (a + b - c) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    ref = hsic_u(K, L) / np.sqrt(hsic_u(K, K) * hsic_u(L, L))
    assert linear_cka(X, Y) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError, match="same stimuli"):
        linear_cka(X, Y[:50])
