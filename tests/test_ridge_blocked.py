"""Out-of-core ridge (issue 14): kernel (X X^T over feature blocks) and primal (X^T X over stimulus blocks) routes
equal the in-memory ridge_cv_predictions / RidgeEncoder and scikit-learn's RidgeCV, for memory-mapped inputs."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from workbench.alignment.regression import (RidgeEncoder, cross_validate_encoding, make_folds,
                                            ridge_cv_predictions)
from workbench.alignment.ridge_blocked import fit_ridge_blocked, ridge_cv_predictions_blocked

# the smallest alphas stay away from interpolation, where leave-one-out errors are 0/0 in any implementation
ALPHAS = tuple(np.logspace(-1, 5, 13))
BLOCKS = [dict(feature_block=7, stimulus_block=37, target_block=3), dict(feature_block=4096, stimulus_block=4096,
                                                                        target_block=4096)]


def _data(n: int, p: int, t: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + 1.0  # uneven unit scales: standardize matters
    Y = X @ rng.standard_normal((p, t)) * (3.0 / np.sqrt(p)) + rng.standard_normal((n, t)) + 2.0
    return X, Y


def _mapped(array: np.ndarray, path) -> np.memmap:
    np.save(path, array)
    return np.load(path, mmap_mode="r")  # as an activation store hands a layer over


@pytest.mark.parametrize("route,shape", [("kernel", (40, 150)), ("primal", (150, 12))])
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("alpha_per_target", [False, True])
@pytest.mark.parametrize("blocks", BLOCKS, ids=["small_blocks", "one_block"])
def test_blocked_ridge_equals_the_in_memory_path(route, shape, standardize, alpha_per_target, blocks, tmp_path):
    X, Y = _data(*shape)
    folds = make_folds(len(X), 5, seed=0)
    expected, expected_alphas = ridge_cv_predictions(X, Y, folds, ALPHAS, alpha_per_target, standardize)
    got, alphas = ridge_cv_predictions_blocked(_mapped(X, tmp_path / "x.npy"), _mapped(Y, tmp_path / "y.npy"), folds,
                                               ALPHAS, alpha_per_target, standardize, route=route, **blocks)
    assert alphas == expected_alphas
    np.testing.assert_allclose(got, expected, atol=1e-8, rtol=0)
    assert len({a for fold in alphas for a in np.atleast_1d(fold)}) > 1 or not alpha_per_target


@pytest.mark.parametrize("route,shape", [("kernel", (40, 150)), ("primal", (150, 12))])
def test_blocked_ridge_equals_sklearn_ridgecv_on_each_fold(route, shape):
    X, Y = _data(*shape, seed=3)
    folds = make_folds(len(X), 4, seed=1)
    got, alphas = ridge_cv_predictions_blocked(X, Y, folds, ALPHAS, route=route, feature_block=9, stimulus_block=41,
                                               target_block=2)
    for (tr, te), alpha in zip(folds, alphas):
        ref = RidgeCV(alphas=ALPHAS).fit(X[tr], Y[tr])
        assert alpha == ref.alpha_
        np.testing.assert_allclose(got[te], ref.predict(X[te]), atol=1e-8, rtol=0)


@pytest.mark.parametrize("route,shape", [("kernel", (40, 150)), ("primal", (150, 12))])
@pytest.mark.parametrize("standardize", [False, True])
def test_ridge_encoder_fits_a_memory_map_out_of_core_to_the_same_readout(route, shape, standardize, tmp_path):
    X, Y = _data(*shape, seed=5)
    expected = RidgeEncoder(ALPHAS, standardize=standardize).fit(X, Y)
    alpha, coef, intercept = fit_ridge_blocked(X, Y, ALPHAS, standardize=standardize, route=route, feature_block=8,
                                               stimulus_block=16, target_block=3)
    assert alpha == expected.alpha_
    np.testing.assert_allclose(coef.T, expected.coef_, atol=1e-8, rtol=0)
    np.testing.assert_allclose(intercept, expected.intercept_, atol=1e-8, rtol=0)
    mapped = RidgeEncoder(ALPHAS, standardize=standardize).fit(_mapped(X, tmp_path / "x.npy"), Y[:, 0])
    single = RidgeEncoder(ALPHAS, standardize=standardize).fit(X, Y[:, 0])
    assert mapped.alpha_ == single.alpha_ and mapped.coef_.shape == single.coef_.shape
    np.testing.assert_allclose(mapped.predict(X), single.predict(X), atol=1e-8, rtol=0)


def test_cross_validated_encoding_scores_a_memory_map_as_the_array(tmp_path):
    X, Y = _data(36, 90, t=4, seed=7)
    expected = cross_validate_encoding(X, Y, "ridge", n_folds=3, seed=2, alphas=ALPHAS, standardize=True)
    got = cross_validate_encoding(_mapped(X.astype(np.float32), tmp_path / "x.npy"), Y, "ridge", n_folds=3, seed=2,
                                  alphas=ALPHAS, standardize=True)
    in_memory_float32 = cross_validate_encoding(X.astype(np.float32), Y, "ridge", n_folds=3, seed=2, alphas=ALPHAS,
                                                standardize=True)
    assert got.alphas == in_memory_float32.alphas
    np.testing.assert_allclose(got.r_per_fold, in_memory_float32.r_per_fold, atol=1e-8)
    assert abs(got.score - expected.score) < 1e-4  # float32 storage, as a store writes it


def test_blocked_ridge_refuses_bad_input_clearly():
    X, Y = _data(20, 30)
    folds = make_folds(20, 4)
    with pytest.raises(ValueError, match="features have 20 stimuli but responses have 19"):
        ridge_cv_predictions_blocked(X, Y[:19], folds)
    bad = X.copy()
    bad[13, 29] = np.nan
    with pytest.raises(ValueError, match="features contain NaN.*impute"):
        ridge_cv_predictions_blocked(bad, Y, folds, feature_block=4)
    bad = Y.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="responses contain NaN or infinite"):
        ridge_cv_predictions_blocked(X, bad, folds, route="primal")
    with pytest.raises(ValueError, match="route must be"):
        ridge_cv_predictions_blocked(X, Y, folds, route="dual")
    with pytest.raises(ValueError, match="out must have shape"):
        ridge_cv_predictions_blocked(X, Y, folds, out=np.empty((20, 3)))
    with pytest.raises(ValueError, match="alphas must be"):
        ridge_cv_predictions_blocked(X, Y, folds, alphas=[1.0, -1.0])


@pytest.mark.parametrize("route,shape", [("kernel", (40, 150)), ("primal", (150, 12))])
def test_the_torch_backend_gives_the_numpy_result(route, shape, monkeypatch):
    """The accelerator path's torch operations, run here on CPU tensors (a GPU run uses the same code)."""
    import torch

    import workbench.alignment.ridge_blocked as ridge_blocked

    X, Y = _data(*shape, seed=11)
    folds = make_folds(len(X), 3, seed=0)
    expected, expected_alphas = ridge_cv_predictions(X, Y, folds, ALPHAS, alpha_per_target=True)
    monkeypatch.setattr(ridge_blocked, "_backend_array", lambda arr, device: torch.as_tensor(arr, dtype=torch.float64))
    got, alphas = ridge_cv_predictions_blocked(X, Y, folds, ALPHAS, alpha_per_target=True, route=route,
                                               feature_block=64, stimulus_block=64, target_block=4)
    assert alphas == expected_alphas
    np.testing.assert_allclose(got, expected, atol=1e-8, rtol=0)
    alpha, coef, _ = fit_ridge_blocked(X, Y, ALPHAS, standardize=True, route=route, feature_block=64,
                                       stimulus_block=64)
    expected_fit = RidgeEncoder(ALPHAS, standardize=True).fit(X, Y)
    assert alpha == expected_fit.alpha_
    np.testing.assert_allclose(coef.T, expected_fit.coef_, atol=1e-8, rtol=0)


@pytest.mark.parametrize("route", ["kernel", "primal"])
def test_a_unit_silent_on_the_training_stimuli_is_left_unscaled_as_in_memory(route):
    """A ReLU unit that fires only for held-out images has training sd exactly 0 (no rounding residue to divide
    by), as the in-memory path computes it."""
    X, Y = _data(40, 150 if route == "kernel" else 12, seed=13)
    folds = make_folds(40, 5, seed=0)
    X[:, 3] = 0.0
    X[folds[0][1][0], 3] = 0.7  # non-zero on one test stimulus of the first fold only
    expected, expected_alphas = ridge_cv_predictions(X, Y, folds, ALPHAS, standardize=True)
    got, alphas = ridge_cv_predictions_blocked(X, Y, folds, ALPHAS, standardize=True, route=route,
                                               stimulus_block=16)
    assert alphas == expected_alphas
    np.testing.assert_allclose(got, expected, atol=1e-8, rtol=0)
