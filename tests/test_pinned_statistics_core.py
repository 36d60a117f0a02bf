"""Known-answer tests of the numerical core that kill the mutants the rest of the suite let live
(``make mutation-fast``, tests/mutation/). Each test names the wrong number or behaviour it would catch; tiny sizes,
no data files. Default arguments are pinned by comparing a call with defaults against the same call with the documented
values written out (a changed default changes the result or raises).
"""

import importlib

import numpy as np
import pytest

from workbench.alignment import ceiling
from workbench.alignment.regression import pearson_per_column


def _trials(seed: int = 0, n_stimuli: int = 6, n_neuroids: int = 3, n_reps: int = 5, missing: bool = True,
            dtype=np.float64) -> np.ndarray:
    """Signal per (stimulus, neuroid) plus noise per repeat; with ``missing``, unequal valid repeat counts (2 to 5)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_stimuli, n_neuroids, 1))
    data = signal + 0.7 * rng.normal(size=(n_stimuli, n_neuroids, n_reps))
    if missing:
        counts = rng.integers(2, n_reps + 1, size=(n_stimuli, n_neuroids))
        data[np.arange(n_reps) >= counts[..., None]] = np.nan
    return data.astype(dtype)


# -- ceiling.py ------------------------------------------------------------------------------------------------------
def test_spearman_brown_is_float64_for_float32_input():
    """The formula is evaluated in float64 whatever the input's dtype (a float32 ceiling loses 7 digits)."""
    r = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    out = ceiling.spearman_brown(r, 3.0)
    assert out.dtype == np.float64
    r64 = r.astype(np.float64)
    np.testing.assert_array_equal(out, 3.0 * r64 / (1 + 2.0 * r64))


def test_split_half_defaults_are_the_documented_ones():
    """n_splits=100, seed=0, halves='equal', per-split order, kept_repeats: a changed default changes the numbers."""
    trials = _trials(1)
    explicit = ceiling.split_half_ceiling(trials, n_splits=100, seed=0, halves="equal",
                                          spearman_brown_order="per_split", corrected_to="kept_repeats")
    np.testing.assert_array_equal(ceiling.split_half_ceiling(trials), explicit)
    r = ceiling.split_half_correlations(trials)
    assert r.shape == (100, 3)
    np.testing.assert_array_equal(r, ceiling.split_half_correlations(trials, 100, 0, "equal"))
    valid = ~np.isnan(trials)
    for (a1, b1), (a2, b2) in zip(ceiling.split_half_masks(valid, 3), ceiling.split_half_masks(valid, 3, 0, "equal")):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(ceiling.spearman_brown_factor(trials), np.full(3, 2.0))
    np.testing.assert_array_equal(ceiling.spearman_brown_factor(trials, "equal"), np.full(3, 2.0))


def test_split_half_correlations_computed_in_float64():
    """float32 trials give the float64 answer (half-means summed in float32 differ at 1e-7)."""
    trials = _trials(2, dtype=np.float32)
    np.testing.assert_allclose(ceiling.split_half_correlations(trials, 4),
                               ceiling.split_half_correlations(trials.astype(np.float64), 4), rtol=1e-13, atol=0)


def test_split_half_correlations_equal_a_direct_computation():
    """r between the masked half-means, per neuroid, for every split (masks from split_half_masks)."""
    trials = _trials(3)
    valid = ~np.isnan(trials)
    filled = np.where(valid, trials, 0.0)
    expected = [pearson_per_column((filled * a).sum(2) / a.sum(2), (filled * b).sum(2) / b.sum(2))
                for a, b in ceiling.split_half_masks(valid, 5, 7, "equal")]
    np.testing.assert_allclose(ceiling.split_half_correlations(trials, 5, 7, "equal"), expected, rtol=1e-12)


def test_split_half_guards_count_stimuli_and_repeats_per_cell():
    """Exactly 3 stimuli (and 2 neuroids) are enough; 2 stimuli, or one cell with a single repeat, are refused."""
    ok = _trials(4, n_stimuli=3, n_neuroids=2, missing=False)
    assert np.isfinite(ceiling.split_half_correlations(ok, 2)).all()
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        ceiling.split_half_correlations(_trials(4, n_stimuli=2, n_neuroids=5, missing=False), 2)
    one_repeat = _trials(5, missing=False)
    one_repeat[0, 1, 1:] = np.nan
    with pytest.raises(ValueError, match=">= 2 valid repeats"):
        ceiling.split_half_correlations(one_repeat, 2)


def test_all_repeats_factor_per_neuroid_with_two_repeat_cells():
    """factor = mean(1 / floor(k/2)) / mean(1 / k) per neuroid; k = 2 (the minimum) is allowed and gives 2."""
    k = np.array([[2, 3, 5], [2, 4, 5], [2, 5, 3]])        # stimuli x neuroids valid repeat counts
    trials = np.ones((3, 3, 5))
    trials[np.arange(5) >= k[..., None]] = np.nan
    expected = (1 / (k // 2)).mean(0) / (1 / k).mean(0)
    np.testing.assert_allclose(ceiling.spearman_brown_factor(trials, "equal", "all_repeats"), expected, rtol=1e-15)
    assert expected[0] == 2.0 and len(set(np.round(expected, 12))) == 3
    with pytest.raises(ValueError, match=">= 2 valid repeats"):
        ceiling.spearman_brown_factor(np.where(np.arange(5) >= 1, np.nan, trials), "equal", "all_repeats")


def test_mean_r_order_corrects_the_mean_r_with_the_all_repeats_factor():
    """'mean_r': spearman_brown(mean over splits of r, factor), the factor from corrected_to (not 2)."""
    trials = _trials(6)
    r = ceiling.split_half_correlations(trials, 6, 1, "equal")
    factor = ceiling.spearman_brown_factor(trials, "equal", "all_repeats")
    assert not np.allclose(factor, 2.0)
    expected = factor * r.mean(0) / (1 + (factor - 1) * r.mean(0))
    got = ceiling.split_half_ceiling(trials, 6, 1, "equal", "mean_r", "all_repeats")
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_unknown_ceiling_option_is_named_in_the_error():
    for kwargs, name in (({"halves": "half"}, "halves='half'"),
                         ({"spearman_brown_order": "median"}, "spearman_brown_order='median'"),
                         ({"corrected_to": "every"}, "corrected_to='every'")):
        options = {"halves": "equal", "spearman_brown_order": "per_split", "corrected_to": "kept_repeats", **kwargs}
        with pytest.raises(ValueError, match=name):
            ceiling.check_ceiling_options(**options)
    with pytest.raises(ValueError, match="needs halves='equal'"):
        ceiling.check_ceiling_options("unequal", "per_split", "all_repeats")


def test_ceiled_scores_known_answers_with_zero_and_negative_ceilings():
    """r^2/c and (r/c)^2 per neuroid, NaN where c <= 0, medians ignoring NaN (float32 inputs computed in float64)."""
    r = np.array([0.5, -0.3, 0.2, 0.4, np.nan, 0.6], dtype=np.float32)
    c = np.array([0.25, 0.5, 0.0, -0.2, 0.7, 0.9], dtype=np.float32)
    r64, c64 = r.astype(np.float64), c.astype(np.float64)
    r2_over_c = np.array([r64[0] ** 2 / c64[0], r64[1] ** 2 / c64[1], np.nan, np.nan, np.nan, r64[5] ** 2 / c64[5]])
    r_over_c_sq = np.array([(r64[0] / c64[0]) ** 2, (r64[1] / c64[1]) ** 2, np.nan, np.nan, np.nan,
                            (r64[5] / c64[5]) ** 2])
    out = ceiling.ceiled_scores(r, c)
    np.testing.assert_array_equal(out["r2_over_c"], r2_over_c)
    np.testing.assert_array_equal(out["r_over_c_sq"], r_over_c_sq)
    assert out["r2_over_c"].dtype == np.float64 and out["r_over_c_sq"].dtype == np.float64
    assert out["raw_r_median"] == float(np.nanmedian(r64))
    assert out["ceiling_median"] == float(np.median(c64))
    assert out["r2_over_c_median"] == float(np.nanmedian(r2_over_c))
    assert out["r_over_c_sq_median"] == float(np.nanmedian(r_over_c_sq))
    assert set(out) == {"raw_r_median", "ceiling_median", "r2_over_c_median", "r_over_c_sq_median", "r2_over_c",
                        "r_over_c_sq"}


# -- inference.py: RSAResult's statistics on given samples ----------------------------------------------------------
def _rsa_result(seed: int = 0):
    from workbench.alignment.inference import RSAResult

    rng = np.random.default_rng(seed)
    samples = rng.normal(size=(41, 3)) * [1.0, 0.5, 2.0] + [0.3, 0.2, -0.1]
    samples[[4, 17]] = np.nan                     # unusable samples (e.g. < 3 distinct stimuli)
    samples[9, 1] = np.nan
    samples[12, 0] = samples[12, 2]               # a tie in the difference of models 0 and 2
    ceilings = np.sort(rng.normal(size=(41, 2)), axis=1)
    ceilings[[3, 30]] = np.nan
    return RSAResult(["a", "b", "c"], "spearman", "stimuli", np.array([0.31, 0.18, -0.05]), (0.4, 0.6), samples,
                     ceilings, np.zeros((41, 2), int), np.zeros((41, 5), int))


def _difference_p(valid: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p of each pair, written out: 2 (min(#diff <= 0, #diff >= 0) + 1) / (n + 1), capped at 1."""
    m = valid.shape[1]
    p = np.ones((m, m))
    for i in range(m):
        for j in range(m):
            if i != j:
                d = valid[:, i] - valid[:, j]
                p[i, j] = min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / (len(d) + 1))
    return p


def test_rsa_result_intervals_std_and_p_equal_a_direct_computation():
    """Percentile CIs (default level 0.95) over the valid samples only, ddof=1 std, the pairwise-difference CIs and
    p-values (ties count on both sides), and the ceiling CI over finite ceiling samples."""
    result = _rsa_result()
    valid = result.samples[np.isfinite(result.samples).all(1)]
    assert result.valid.sum() == 38 and len(valid) == 38
    np.testing.assert_allclose(result.ci(), np.percentile(valid, [2.5, 97.5], axis=0).T, rtol=1e-14)
    np.testing.assert_allclose(result.ci(0.8), np.percentile(valid, [10, 90], axis=0).T, rtol=1e-14)
    np.testing.assert_allclose(result.std(), valid.std(0, ddof=1), rtol=1e-14)
    ok = np.isfinite(result.ceiling_samples).all(1)
    np.testing.assert_allclose(result.ceiling_ci(), np.percentile(result.ceiling_samples[ok], [2.5, 97.5], axis=0).T,
                               rtol=1e-14)
    diff = valid[:, :, None] - valid[:, None, :]
    for level in (0.95, 0.5):
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        expected = np.stack([np.percentile(diff, q[0], axis=0), np.percentile(diff, q[1], axis=0)], -1)
        np.testing.assert_allclose(result.difference_ci(level), expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(result.difference_ci(), result.difference_ci(0.95))
    np.testing.assert_allclose(result.difference_p(), _difference_p(valid), rtol=1e-15)


def test_rsa_result_difference_p_on_one_sided_samples_is_the_minimum():
    """Model 0 above model 1 in every sample: p = 2 / (n + 1); a tie in every sample: p = 1."""
    from workbench.alignment.inference import RSAResult

    s = np.column_stack([np.linspace(1, 2, 19), np.linspace(0, 0.5, 19), np.linspace(0, 0.5, 19)])
    result = RSAResult(["a", "b", "c"], "pearson", "stimuli", s.mean(0), (np.nan, np.nan), s,
                       np.full((19, 2), np.nan), np.zeros((19, 1), int), np.zeros((19, 4), int))
    p = result.difference_p()
    assert p[0, 1] == p[1, 0] == 2 / 20
    assert p[1, 2] == 1.0 and np.all(np.diag(p) == 1.0)
    assert np.isnan(result.ceiling_ci()).all() and result.ceiling_ci().shape == (2, 2)


def test_rsa_result_to_dict_reports_every_statistic():
    result = _rsa_result(1)
    out = result.to_dict()
    ci, dci, p, std = result.ci(0.95), result.difference_ci(0.95), result.difference_p(), result.std()
    nc = result.ceiling_ci(0.95)
    assert (out["method"], out["scheme"], out["n_bootstrap"], out["n_valid"], out["ci_level"]) == \
        ("spearman", "stimuli", 41, 38, 0.95)
    for i, name in enumerate("abc"):
        assert out["scores"][name] == {"score": result.scores[i], "ci": [ci[i, 0], ci[i, 1]], "std": std[i]}
    assert out["noise_ceiling"] == {"lower": 0.4, "upper": 0.6, "lower_ci": list(nc[0]), "upper_ci": list(nc[1])}
    assert set(out["differences"]) == {"a - b", "a - c", "b - c"}
    for (i, j), key in zip([(0, 1), (0, 2), (1, 2)], ["a - b", "a - c", "b - c"]):
        assert out["differences"][key] == {"diff": result.scores[i] - result.scores[j],
                                           "ci": [dci[i, j, 0], dci[i, j, 1]], "p": p[i, j]}
    assert result.to_dict(0.5)["scores"]["a"]["ci"] == list(result.ci(0.5)[0])


# -- cka.py ----------------------------------------------------------------------------------------------------------
def _np_centre_gram(K: np.ndarray, unbiased: bool) -> np.ndarray:
    """Kornblith et al.'s center_gram (their cka notebook), written out in numpy."""
    K = K.copy()
    n = K.shape[0]
    if unbiased:
        np.fill_diagonal(K, 0)
        means = K.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None] + means[None, :]
        np.fill_diagonal(K, 0)
        return K
    means = K.mean(0)
    means -= means.mean() / 2
    return K - means[:, None] - means[None, :]


def _np_rbf_gram(X: np.ndarray, bandwidth: float) -> np.ndarray:
    sq = ((X[:, None] - X[None]) ** 2).sum(-1)
    return np.exp(-sq / (2 * bandwidth ** 2 * np.median(sq)))


def _np_cka(K: np.ndarray, L: np.ndarray, unbiased: bool) -> float:
    Kc, Lc = _np_centre_gram(K, unbiased), _np_centre_gram(L, unbiased)
    return float((Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum()))


@pytest.mark.parametrize("n", [4, 7])
def test_cka_equals_kornblith_reference_for_every_kernel_and_estimator(n):
    """Linear and RBF (bandwidths 1 and 0.5) CKA, both estimators, at the smallest n each allows; float32 inputs are
    computed in float64; defaults are kernel='linear', estimator='unbiased', bandwidth 1.0."""
    cka = importlib.import_module("workbench.alignment.cka")   # the package re-exports a function of that name

    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 3)) + 2.0, rng.normal(size=(n, 5)) - 1.0
    x[:, 0] += 3 * y[:, 0]
    xc, yc = x - x.mean(0), y - y.mean(0)
    for unbiased, estimator in ((True, "unbiased"), (False, "biased")):
        expected = _np_cka(xc @ xc.T, yc @ yc.T, unbiased)
        assert cka.cka(x, y, "linear", estimator) == pytest.approx(expected, rel=1e-12)
        assert cka.linear_cka(x, y, estimator) == pytest.approx(expected, rel=1e-12)
        for bw in (1.0, 0.5):
            expected_rbf = _np_cka(_np_rbf_gram(xc, bw), _np_rbf_gram(yc, bw), unbiased)
            assert cka.rbf_cka(x, y, bw, estimator) == pytest.approx(expected_rbf, rel=1e-12)
            assert cka.cka(x, y, "rbf", estimator, bw) == pytest.approx(expected_rbf, rel=1e-12)
    assert cka.cka(x, y) == cka.linear_cka(x, y) == cka.linear_cka_unbiased(x, y) == cka.cka(x, y, "linear",
                                                                                            "unbiased")
    assert cka.linear_cka_biased(x, y) == cka.cka(x, y, "linear", "biased")
    assert cka.rbf_cka(x, y) == cka.cka(x, y, "rbf", "unbiased", 1.0)
    assert cka.cka(x.astype(np.float32), y) == pytest.approx(cka.cka(x.astype(np.float32).astype(np.float64), y),
                                                             rel=1e-14)


def test_hsic_and_centred_grams_equal_their_formulas():
    """Biased: tr(HKHL) / (n-1)^2; unbiased: Song et al.'s U-statistic, n (n-3) scale; the defaults are unbiased."""
    import torch

    cka = importlib.import_module("workbench.alignment.cka")   # the package re-exports a function of that name

    rng = np.random.default_rng(3)
    n = 6
    a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 4))
    K, L = a @ a.T + 1.0, b @ b.T
    H = np.eye(n) - 1 / n
    Kt, Lt = torch.as_tensor(K), torch.as_tensor(L)
    assert float(cka.hsic(Kt, Lt, "biased")) == pytest.approx(np.trace(H @ K @ H @ L) / (n - 1) ** 2, rel=1e-12)
    Kn, Ln = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    song = (np.trace(Kn @ Ln) + (one @ Kn @ one) * (one @ Ln @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ Kn @ Ln @ one) / (n * (n - 3))
    assert float(cka.hsic(Kt, Lt, "unbiased")) == pytest.approx(song, rel=1e-12)
    assert float(cka.hsic(Kt, Lt)) == float(cka.hsic(Kt, Lt, "unbiased"))
    np.testing.assert_allclose(cka.centred_gram(Kt, "biased").numpy(), H @ K @ H, atol=1e-12)
    np.testing.assert_allclose(cka.centred_gram(Kt).numpy(), _np_centre_gram(K, True), atol=1e-12)
    np.testing.assert_allclose(cka.rbf_gram(torch.as_tensor(a)).numpy(), _np_rbf_gram(a, 1.0), rtol=1e-12)


def test_rbf_median_is_numpys_for_odd_and_even_counts():
    """sigma^2 from the median of the n^2 squared distances (diagonal zeros included) as numpy takes it."""
    import torch

    cka = importlib.import_module("workbench.alignment.cka")   # the package re-exports a function of that name

    for n in (3, 4, 5):   # n^2 odd and even
        a = np.random.default_rng(n).normal(size=(n, 2))
        np.testing.assert_allclose(cka.rbf_gram(torch.as_tensor(a), 0.7).numpy(), _np_rbf_gram(a, 0.7), rtol=1e-12)


def test_cka_guards_name_the_problem_at_their_boundaries():
    cka = importlib.import_module("workbench.alignment.cka")   # the package re-exports a function of that name

    rng = np.random.default_rng(0)
    assert np.isfinite(cka.cka(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), estimator="unbiased"))
    assert np.isfinite(cka.cka(rng.normal(size=(2, 2)), rng.normal(size=(2, 2)), estimator="biased"))
    with pytest.raises(ValueError, match="unbiased HSIC estimator needs at least 4 stimuli, got 3"):
        cka.cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    with pytest.raises(ValueError, match="biased HSIC estimator needs at least 2 stimuli, got 1"):
        cka.cka(rng.normal(size=(1, 2)), rng.normal(size=(1, 2)), estimator="biased")
    with pytest.raises(ValueError, match="x is the same for every stimulus"):
        cka.cka(np.full((5, 2), 1e6), rng.normal(size=(5, 2)))
    tiny = 1.0 + 1e-9 * rng.normal(size=(5, 2))          # small but real variance relative to the values
    assert np.isfinite(cka.cka(tiny, rng.normal(size=(5, 2))))
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        cka.cka(rng.normal(size=(5, 2)), np.array([[np.inf, 0]] * 5))
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        cka.cka(rng.normal(size=5), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="RBF bandwidth"):
        cka.rbf_cka(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), 0.0)
    with pytest.raises(ValueError, match="median distance between stimuli is 0"):
        cka.rbf_cka(np.vstack([np.zeros((4, 2)), np.ones((1, 2))]), rng.normal(size=(5, 2)))


# -- models/topography.py ----------------------------------------------------------------------------------------------
def _sheet(seed: int = 0, n_stimuli: int = 9, side: int = 5):
    """Units on a side x side grid (0.5 mm apart); responses smooth over the sheet plus noise; one dead unit."""
    rng = np.random.default_rng(seed)
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) * 0.5 + [1.0, 3.0]
    field_ = rng.normal(size=(n_stimuli, 2))
    responses = field_ @ xy.T + rng.normal(size=(n_stimuli, len(xy)))
    responses[:, 3] = 1.5
    return responses, xy


def _direct_smoothness(responses, xy, n_bins, max_distance, max_pairs, seed):
    """(edges, counts, mean, sem, chance, n_units) written out: correlations of every responsive pair within
    ``max_distance`` (np.corrcoef), binned; chance from the random pairs the function draws after its unit sample."""
    from scipy.spatial.distance import pdist

    alive = np.flatnonzero(responses.std(0) > 1e-8)
    rng = np.random.default_rng(seed)
    use = np.sort(rng.choice(alive, size=len(alive), replace=False))
    r_all = np.corrcoef(responses[:, use].T)
    d_all = pdist(xy[use])
    keep = d_all <= max_distance
    assert keep.sum() <= max_pairs                        # no pair subsample to replay
    r_pairs, d = r_all[np.triu_indices(len(use), 1)][keep], d_all[keep]
    edges = np.linspace(0, max_distance, n_bins + 1)
    which = np.clip(np.digitize(d, edges) - 1, 0, n_bins - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.array([r_pairs[which == b].mean() if (which == b).any() else np.nan for b in range(n_bins)])
        sem = np.array([r_pairs[which == b].std() / np.sqrt(max((which == b).sum() - 1, 1))
                        if (which == b).any() else np.nan for b in range(n_bins)])
    i, j = rng.integers(0, len(use), size=(2, min(max_pairs, 50_000)))
    chance = np.mean(r_all[i[i != j], j[i != j]])
    return edges, np.bincount(which, minlength=n_bins), mean, sem, chance, len(use)


@pytest.mark.parametrize("max_pairs", [200_000, 140])       # 140: exactly the number of pairs within 1.2 mm
def test_smoothness_curve_equals_a_direct_computation(max_pairs):
    """Binned mean / SEM of pairwise response correlations of responsive units, chance from the same random pairs,
    index = nearest occupied bin minus chance, fraction responsive; defaults n_bins=10, half the extent, seed 0."""
    from workbench.models import topography

    responses, xy = _sheet()
    curve = topography.smoothness_curve(responses, xy, n_bins=4, max_distance_mm=1.2, max_pairs=max_pairs, seed=3)
    edges, counts, mean, sem, chance, n_units = _direct_smoothness(responses, xy, 4, 1.2, max_pairs, 3)
    assert counts.sum() == 140
    np.testing.assert_allclose(curve.bin_edges, edges)
    np.testing.assert_array_equal(curve.counts, counts)
    np.testing.assert_allclose(curve.mean_correlation, mean, rtol=1e-10)
    np.testing.assert_allclose(curve.sem, sem, rtol=1e-10)
    assert curve.chance == pytest.approx(chance, rel=1e-10)
    assert curve.n_units_used == n_units == 24 and curve.fraction_responsive == 24 / 25
    first = np.flatnonzero(counts)[0]
    assert curve.index == pytest.approx(mean[first] - chance, rel=1e-10)
    np.testing.assert_allclose(curve.bin_centres, (edges[:-1] + edges[1:]) / 2)
    out = curve.to_dict()
    assert set(out) == {"bin_centres_mm", "mean_correlation", "sem", "counts", "chance", "index", "n_units_used",
                        "fraction_responsive"}
    for key, value in (("bin_centres_mm", curve.bin_centres), ("mean_correlation", curve.mean_correlation),
                       ("sem", curve.sem), ("counts", counts)):
        np.testing.assert_array_equal(out[key], value)
    assert (out["chance"], out["index"], out["n_units_used"], out["fraction_responsive"]) == \
        (curve.chance, curve.index, 24, 24 / 25)
    default = topography.smoothness_curve(responses, xy)
    explicit = topography.smoothness_curve(responses, xy, 10, 1.0, 4000, 200_000, 0)   # half the 2 mm extent
    np.testing.assert_array_equal(default.mean_correlation, explicit.mean_correlation)
    assert default.chance == explicit.chance and len(default.counts) == 10


def test_smoothness_curve_subsamples_units_and_pairs_to_their_caps():
    from workbench.models import topography

    responses, xy = _sheet(1)
    curve = topography.smoothness_curve(responses, xy, n_bins=3, max_units=10, max_pairs=7)
    assert curve.n_units_used == 10 and curve.counts.sum() == 7
    empty = topography.SmoothnessCurve(np.linspace(0, 1, 3), np.full(2, np.nan), np.full(2, np.nan),
                                       np.zeros(2, int), 0.1, 0, 0.0)
    assert np.isnan(topography.smoothness_index(empty))
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        topography.smoothness_curve(responses[:2], xy)
    assert np.isfinite(topography.smoothness_curve(responses[:3], xy, n_bins=1).chance)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        topography.smoothness_curve(responses, xy, n_bins=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # scipy's t of the flat unit is NaN
def test_selectivity_equals_scipy_welch_t_and_dprime_and_zero_for_flat_units():
    from scipy import stats

    from workbench.models import topography

    rng = np.random.default_rng(4)
    responses = rng.normal(size=(9, 4))
    responses[:, 2] = 3.0                                # flat unit: 0, not NaN
    is_target = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1])
    t = topography.selectivity(responses, is_target)
    expected_t = stats.ttest_ind(responses[is_target == 1], responses[is_target == 0], equal_var=False).statistic
    np.testing.assert_allclose(np.delete(t, 2), np.delete(expected_t, 2), rtol=1e-12)
    assert t[2] == 0.0
    a, b = responses[is_target == 1], responses[is_target == 0]
    dprime = (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2)
    np.testing.assert_allclose(np.delete(topography.selectivity(responses, is_target, "dprime"), 2),
                               np.delete(dprime, 2), rtol=1e-12)
    np.testing.assert_array_equal(topography.selectivity(responses, is_target, "d'"),
                                  topography.selectivity(responses, is_target, "dprime"))
    two = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert np.isfinite(topography.selectivity(responses, two)).all()
    with pytest.raises(ValueError, match="at least 2 target and 2 other stimuli, got 1 and 8"):
        topography.selectivity(responses, np.eye(9)[0])
    big = topography.selectivity(responses, is_target, eps=10.0)   # every denominator below eps: all 0
    assert np.all(big == 0.0)


def test_rasterize_means_per_pixel_and_clips_the_far_edge():
    from workbench.models import topography

    positions = np.array([[0.0, 0.0], [0.4, 0.1], [1.0, 0.0], [1.99, 0.99], [2.0, 1.0]])
    values = np.array([1.0, 3.0, 5.0, 7.0, 11.0])
    grid, extent, pix = topography.rasterize(values, positions, pixel_mm=0.5)
    assert grid.shape == (2, 4) and extent == (0.0, 2.0, 0.0, 1.0)
    np.testing.assert_array_equal(pix, [[0, 0], [0, 0], [0, 2], [1, 3], [1, 3]])
    expected = np.full((2, 4), np.nan)
    expected[0, 0], expected[0, 2], expected[1, 3] = 2.0, 5.0, 9.0
    np.testing.assert_array_equal(grid, expected)
    default_grid, default_extent, _ = topography.rasterize(values, positions)
    assert default_grid.shape == (32, 64) and default_extent == pytest.approx((0.0, 2.0, 0.0, 1.0))
    _, wide, wide_pix = topography.rasterize(values, positions, 0.3, extent=(-1.0, 2.0, 0.5, 1.0))
    assert wide == pytest.approx((-1.0, -1.0 + 10 * 0.3, 0.5, 0.5 + 2 * 0.3))
    np.testing.assert_array_equal(wide_pix, [[0, 3], [0, 4], [0, 6], [1, 9], [1, 9]])
    # float32 positions are placed by their float64 values: 0.7f / 0.1 is 6.99... (pixel 6), not 7 as in float32
    _, _, pix32 = topography.rasterize(np.ones(3), np.array([[0, 0], [0.7, 0], [1, 1]], dtype=np.float32), 0.1)
    np.testing.assert_array_equal(pix32[1], [0, 6])


def test_units_in_disk_and_top_units_at_their_boundaries():
    from workbench.models import topography

    positions = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(topography.units_in_disk(positions, (0, 0), 1.0), [0, 1])
    np.testing.assert_array_equal(topography.units_in_disk(positions, (0, 0), 0.0), [0])
    np.testing.assert_array_equal(topography.units_in_disk(positions, np.array([3, 0]), 3.6), [0, 1])
    values = np.array([0.5, 2.0, 2.0, -1.0, 3.0])
    np.testing.assert_array_equal(topography.top_units(values, n=3), [4, 1, 2])   # ties: lower index first
    np.testing.assert_array_equal(topography.top_units(values, fraction=0.5), [4, 1])  # round(2.5) = 2
    np.testing.assert_array_equal(topography.top_units(values, fraction=1.0), [4, 1, 2, 0, 3])
    assert len(topography.top_units(values, n=0)) == 0 and len(topography.top_units(values, n=5)) == 5
    for kwargs in ({"n": 6}, {"n": -1}, {"fraction": 0.0}, {"fraction": 1.01}, {}, {"n": 1, "fraction": 0.5}):
        with pytest.raises(ValueError):
            topography.top_units(values, **kwargs)


# -- attribution/checks.py -------------------------------------------------------------------------------------------
def test_reduce_maps_and_spearman_rows_equal_numpy_and_scipy():
    """'abs' (default) = |channel sum|, 'sum', 'abs_sum' = sum of |a|; Spearman per row as scipy's (ties averaged),
    NaN for a constant row or a row holding NaN, without touching the other rows."""
    from scipy import stats

    from workbench.attribution import checks

    a = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(checks.reduce_maps(a), np.abs(a.sum(1)))
    np.testing.assert_array_equal(checks.reduce_maps(a, "sum"), a.sum(1))
    np.testing.assert_array_equal(checks.reduce_maps(a, "abs_sum"), np.abs(a).sum(1))
    from workbench.attribution.methods import Attribution

    wrapped = Attribution(a, "ig", {}, {}, None)
    for reduce, expected in (("abs", np.abs(a.sum(1))), ("sum", a.sum(1)), ("abs_sum", np.abs(a).sum(1))):
        np.testing.assert_array_equal(checks.reduce_maps(wrapped, reduce), expected)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, size=(4, 9)).astype(float), rng.normal(size=(4, 9))
    x[2] = 1.0                                            # constant row
    x[3, 4] = y[3, 4] = np.nan                            # maps with a NaN
    got = checks.spearman_rows(x, y)
    for row in (0, 1):
        assert got[row] == pytest.approx(stats.spearmanr(x[row], y[row]).statistic, rel=1e-12)
    assert np.isnan(got[2]) and np.isnan(got[3])


def test_randomisation_and_faithfulness_summaries_report_their_statistics():
    from scipy.integrate import trapezoid

    from workbench.attribution import checks

    spearman = np.array([[0.9, 0.7, np.nan], [0.2, 0.4, 0.3]])
    result = checks.RandomisationResult("ig", ["fc2", "fc1"], spearman)
    summary = result.summary()
    assert set(summary) == {"layers", "reduce", "spearman_mean", "spearman_per_image", "spearman_fully_randomised"}
    assert summary["spearman_fully_randomised"] == pytest.approx(0.3)
    np.testing.assert_allclose(summary["spearman_mean"], [0.8, 0.3])
    np.testing.assert_array_equal(summary["spearman_per_image"], spearman)
    empty = checks.RandomisationResult("ig", [], np.zeros((0, 2))).summary()
    assert np.isnan(empty["spearman_fully_randomised"]) and empty["spearman_mean"] == []

    rng = np.random.default_rng(2)
    fractions = np.array([0.0, 0.1, 0.5, 1.0])
    curves = [rng.random((3, 4)) for _ in range(4)]
    faith = checks.FaithfulnessResult(fractions, *curves, extra={"fill": "blur"})
    d, i, dr, ir = (trapezoid(c, fractions, axis=1) for c in curves)
    assert faith.summary() == {
        "deletion_auc": float(d.mean()), "deletion_auc_random": float(dr.mean()), "insertion_auc": float(i.mean()),
        "insertion_auc_random": float(ir.mean()), "deletion_gain": float((dr - d).mean()),
        "insertion_gain": float((i - ir).mean()), "deletion_better_than_random_fraction": float((d < dr).mean()),
        "insertion_better_than_random_fraction": float((i > ir).mean()), "deletion_auc_per_image": d.tolist(),
        "insertion_auc_per_image": i.tolist(), "fill": "blur"}


def test_fill_images_for_every_kind_of_fill():
    """A number, 'mean' (per image and channel), 'blur' (torchvision's Gaussian, k = max(3, odd(min(H, W) / 4)),
    sigma k / 3), an image for every input or one for all; anything else is refused."""
    import torch
    from torchvision.transforms.functional import gaussian_blur

    from workbench.attribution.checks import _fill_images

    x = torch.as_tensor(np.random.default_rng(3).normal(size=(2, 3, 16, 12)))
    torch.testing.assert_close(_fill_images(x, 0.5), torch.full_like(x, 0.5))
    torch.testing.assert_close(_fill_images(x, "mean"), x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    torch.testing.assert_close(_fill_images(x, "blur"), gaussian_blur(x, [3, 3], [1.0, 1.0]))
    big = torch.as_tensor(np.random.default_rng(4).normal(size=(1, 1, 40, 44)))
    torch.testing.assert_close(_fill_images(big, "blur"), gaussian_blur(big, [11, 11], [11 / 3, 11 / 3]))
    image = np.random.default_rng(5).normal(size=(3, 16, 12))
    torch.testing.assert_close(_fill_images(x, image), torch.as_tensor(image).expand_as(x))
    torch.testing.assert_close(_fill_images(x, np.stack([image, 2 * image])), torch.as_tensor(np.stack([image,
                                                                                                      2 * image])))
    with pytest.raises(ValueError, match="fill must be a number, 'mean', 'blur' or an image"):
        _fill_images(x, np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="unknown fill 'median'"):
        _fill_images(x, "median")


def test_randomisation_layers_default_to_the_children_top_down():
    import torch
    from torch import nn

    from workbench.attribution import checks

    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)))
    example = torch.zeros(3, 4)
    assert checks.randomisation_layers(model, example) == ["2", "0"]
    assert checks.randomisation_layers(model, example, "leaves") == ["2.1", "2.0", "0"]


def test_cka_computes_on_the_device_it_is_given(monkeypatch):
    """``device`` reaches both representations in every CKA entry point."""
    import torch

    import workbench.utils

    cka = importlib.import_module("workbench.alignment.cka")
    asked = []
    monkeypatch.setattr(workbench.utils, "get_device", lambda device=None: asked.append(device) or torch.device("cpu"))
    x, y = np.random.default_rng(0).normal(size=(2, 6, 3))
    for call in (cka.cka, cka.linear_cka_biased, cka.linear_cka_unbiased, cka.linear_cka, cka.rbf_cka):
        asked.clear()
        call(x, y, device="the-device")
        assert asked == ["the-device", "the-device"], call.__name__


# -- inference.py: bootstrap_rsa and noise_ceiling -------------------------------------------------------------------
def _rdm_vectors(seed: int, k: int, n: int = 7) -> np.ndarray:
    """k condensed RDMs of n stimuli sharing a structure (so scores and ceilings are far from 0), with a few ties."""
    rng = np.random.default_rng(seed)
    shared = rng.random(n * (n - 1) // 2)
    out = shared + 0.6 * rng.random((k, len(shared)))
    out[:, :3] = np.round(out[:, :3], 1)
    return out


@pytest.mark.parametrize("method", ["kendall_tau_a", "spearman"])
@pytest.mark.parametrize("scheme, n_bootstrap", [("both", 60), ("stimuli", 60), ("stimuli", 5)])
def test_bootstrap_torch_path_equals_the_rank_kernels(monkeypatch, method, scheme, n_bootstrap):
    """The batched torch path (tau-a as a quadratic form when B*M*S > 512, weighted ranks for Spearman) and the
    compiled kernels compute the same samples, ceilings, scores and ceiling."""
    inference = importlib.import_module("workbench.alignment.inference")
    if not inference._rank_kernels.available():
        pytest.skip("numba missing: only the torch path exists")
    models, data = _rdm_vectors(1, 3), _rdm_vectors(2, 3)
    run = lambda: inference.bootstrap_rsa(models, data, method, n_bootstrap, scheme, seed=4, progress=False)  # noqa
    fast = run()
    monkeypatch.setattr(inference, "_use_rank_kernels", lambda *a: False)
    slow = run()
    assert np.isfinite(fast.samples).any() and np.isfinite(fast.ceiling_samples).any()
    for a, b in ((fast.samples, slow.samples), (fast.ceiling_samples, slow.ceiling_samples),
                 (fast.scores, slow.scores), (fast.noise_ceiling, slow.noise_ceiling)):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["pearson", "cosine", "whitened_pearson", "whitened_cosine", "spearman",
                                    "kendall_tau_a"])
def test_subject_bootstrap_samples_are_count_weighted_means_of_per_subject_scores(method):
    """Resampling subjects only: a sample's score is the mean over its drawn subjects (with repeats) of each
    subject's score on the full RDMs (compare_rdms)."""
    inference = importlib.import_module("workbench.alignment.inference")
    from workbench.alignment.rsa import compare_rdms

    models, data = _rdm_vectors(3, 2), _rdm_vectors(4, 4)
    result = inference.bootstrap_rsa(models, data, method, 6, "subjects", seed=2, progress=False)
    per_subject = np.asarray(compare_rdms(models, data, method))             # (models, subjects)
    counts = np.stack([np.bincount(row, minlength=4) for row in result.subject_indices])
    np.testing.assert_allclose(result.samples, counts @ per_subject.T / 4, rtol=1e-10)
    np.testing.assert_allclose(result.scores, per_subject.mean(1), rtol=1e-10)


def test_bootstrap_with_one_subject_or_no_ceiling_or_too_few_stimuli():
    """One subject: no noise ceiling (NaN) but scores; ceiling=False: NaN ceiling samples; a sample with fewer than 3
    distinct stimuli is NaN and the others are not."""
    inference = importlib.import_module("workbench.alignment.inference")

    models, data = _rdm_vectors(5, 2), _rdm_vectors(6, 3)
    one = inference.bootstrap_rsa(models, data[:1], "pearson", 4, "stimuli", progress=False)
    assert np.isnan(one.noise_ceiling).all() and np.isnan(one.ceiling_samples).all()
    assert np.isfinite(one.scores).all() and np.isfinite(one.samples).all()
    off = inference.bootstrap_rsa(models, data, "pearson", 4, "stimuli", ceiling=False, progress=False)
    assert np.isnan(off.ceiling_samples).all() and np.isfinite(off.noise_ceiling).all()
    stim = np.array([[0, 1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 0, 0], [2, 2, 3, 4, 4, 4, 2]])
    subj = np.tile(np.arange(3), (3, 1))
    few = inference.bootstrap_rsa(models, data, "pearson", subject_indices=subj, stimulus_indices=stim,
                                  progress=False)
    assert np.isfinite(few.samples[[0, 2]]).all() and np.isnan(few.samples[1]).all()
    assert np.isfinite(few.ceiling_samples[[0, 2]]).all() and np.isnan(few.ceiling_samples[1]).all()
    with pytest.raises(ValueError, match="out of range"):
        inference.bootstrap_rsa(models, data, "pearson", subject_indices=np.full((3, 3), 3), stimulus_indices=stim,
                                progress=False)


def test_noise_ceiling_of_two_subjects_equals_its_definition():
    """Pearson: upper = mean r(subject, mean of both z-scored RDMs), lower = r(subject 0, subject 1)."""
    inference = importlib.import_module("workbench.alignment.inference")

    data = _rdm_vectors(7, 2)
    z = (data - data.mean(1, keepdims=True)) / data.std(1, keepdims=True)
    pooled = z.mean(0)
    upper = np.mean([np.corrcoef(d, pooled)[0, 1] for d in data])
    lower = np.corrcoef(data[0], data[1])[0, 1]
    got = inference.noise_ceiling(data, "pearson")
    assert got == pytest.approx((lower, upper), rel=1e-10)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        inference.noise_ceiling(data[:1], "pearson")


# -- training/losses.py ----------------------------------------------------------------------------------------------
def test_window_members_include_both_edges():
    """TDANN's indices_within_limits: lo <= position <= hi on both axes."""
    from workbench.training.losses import window_members

    positions = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [1.0001, 0.5], [0.5, -0.0001]])
    members = window_members(positions, np.array([[0.5, 0.5], [3.0, 3.0]]), 1.0)
    np.testing.assert_array_equal(members[0], [0, 1, 2])
    assert len(members[1]) == 0


def test_spatial_correlation_loss_buffers_are_float32_and_outside_the_state_dict(monkeypatch):
    """Positions, pool and target statistics are float32 buffers that are not saved (rebuilt from the sheet); the
    target cache is used when the pool fits the byte budget exactly (4 bytes per target entry)."""
    import torch

    from workbench.models import CorticalSheet
    from workbench.training import losses

    sheet = CorticalSheet((8, 4, 4), size_mm=4.0)
    pool_bytes = 16 * 32 * 32 * 4                          # pool_size x neighbourhood_size^2 float32 entries
    monkeypatch.setattr(losses, "_TARGET_CACHE_BYTES", pool_bytes)
    loss = losses.SpatialCorrelationLoss(sheet, neighbourhood_size=32, n_neighbourhoods=2, pool_size=16, seed=1)
    assert tuple(loss.pool.shape) == (16, 32) and loss.cache_targets
    value = loss(torch.randn(5, 8, 4, 4))
    assert value.dtype == torch.float32 and loss.pool_targets is not None
    for name in ("positions", "pool_target_mean", "pool_target_scale", "pool_targets"):
        assert getattr(loss, name).dtype == torch.float32, name
    assert len(loss.state_dict()) == 0
    monkeypatch.setattr(losses, "_TARGET_CACHE_BYTES", pool_bytes - 1)
    assert not losses.SpatialCorrelationLoss(sheet, neighbourhood_size=32, pool_size=16, seed=1).cache_targets


def test_parse_topography_takes_the_models_own_sheets_by_default():
    from workbench.models import build_model
    from workbench.training.losses import parse_topography

    cfg = {"name": "small_cnn", "num_classes": 10, "width": 4,
           "topography": {"layers": ["conv3"], "weight": 0.5}}
    model = build_model(cfg)
    objectives = parse_topography(cfg, model)
    assert [(o.layer, o.weight) for o in objectives] == [("conv3", 0.5)]
    assert objectives[0].loss.n_units == model.cortical_sheets["conv3"].n_units


# -- alignment/regression.py -----------------------------------------------------------------------------------------
def test_first_best_keeps_the_earliest_strict_minimum():
    """RidgeCV's rule: the best so far is replaced only by a strictly smaller error; ties keep the earlier alpha,
    NaN is never chosen (unless first) and never beaten."""
    from workbench.alignment.regression import _first_best

    errors = np.array([[5.0, 2.0, np.nan, 4.0], [1.0, 2.0, 1.0, 5.0], [3.0, 1.0, 0.5, 4.5], [1.0, 3.0, 2.0, 6.0]])
    np.testing.assert_array_equal(_first_best(errors), [1, 2, 0, 0])


def test_loo_errors_of_many_alphas_come_out_the_same_in_batches(monkeypatch):
    """More alphas than one ~64 MB batch holds: the batched leave-one-out errors equal those of each alpha alone."""
    from workbench.alignment import regression

    rng = np.random.default_rng(0)
    n, t = 10, 50
    K = rng.normal(size=(n, 4))
    K = K @ K.T
    evals, Q = np.linalg.eigh(K)
    qty = Q.T @ rng.normal(size=(n, t))
    alphas = np.logspace(-3, 3, 16_001)                    # batch = 8e6 // (n t) = 16000 < 16001 alphas
    errors = regression._loo_mean_squared_errors(evals, Q, qty, alphas, per_target=False)
    assert errors.shape == (16_001,)
    alone = regression._loo_mean_squared_errors(evals, Q, qty, alphas[[0, 16_000]], per_target=False)
    np.testing.assert_allclose(errors[[0, 16_000]], alone, rtol=1e-12)


def test_cpu_backend_is_numpy_and_blas_limit_starts_from_scratch(monkeypatch):
    """On the CPU the arrays stay numpy (threaded folds, one BLAS thread); the BLAS controller is found on first use."""
    from workbench.alignment import regression

    arr = np.ones((3, 2))
    assert regression._backend_array(arr, "cpu") is arr
    monkeypatch.setattr(regression, "_THREADPOOLS", [])
    with regression._one_blas_thread():
        pass
    assert len(regression._THREADPOOLS) == 1


def test_median_pearson_r_is_computed_in_float64():
    from workbench.alignment.regression import median_pearson_r, pearson_per_column

    rng = np.random.default_rng(1)
    actual, predicted = (rng.normal(size=(12, 5)) + 100).astype(np.float32), rng.normal(size=(12, 5))
    expected = np.median(pearson_per_column(predicted, actual.astype(np.float64)))
    assert median_pearson_r(actual, predicted) == pytest.approx(expected, rel=1e-13)


def test_folds_and_encoding_defaults_seed_method_and_device(monkeypatch):
    """make_folds: sklearn's shuffled (Stratified)KFold, 5 folds, seed 0 by default; cross_validate_encoding passes
    its seed to the folds, has standardize=False by default, runs PLS when asked, and passes its device on."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from workbench.alignment import regression

    folds = regression.make_folds(20)
    expected = list(KFold(5, shuffle=True, random_state=0).split(np.zeros(20)))
    assert len(folds) == 5
    for (tr, te), (etr, ete) in zip(folds, expected):
        np.testing.assert_array_equal(tr, etr)
        np.testing.assert_array_equal(te, ete)
    labels = np.repeat([0, 1, 2, 3], 5)
    strat = regression.make_folds(20, 4, 2, labels)
    for (tr, te), (etr, ete) in zip(strat, StratifiedKFold(4, shuffle=True, random_state=2).split(np.zeros(20),
                                                                                                   labels)):
        np.testing.assert_array_equal(te, ete)
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(20, 6)) * [1, 10, 1, 1, 5, 1], rng.normal(size=(20, 3))
    Y[:, 0] += X[:, 1]
    result = regression.cross_validate_encoding(X, Y, seed=3)
    pred, _ = regression.ridge_cv_predictions(X, Y, regression.make_folds(20, 5, 3), standardize=False)
    np.testing.assert_allclose(result.predictions, pred, rtol=1e-10)
    unscaled = regression.cross_validate_encoding(X, Y, seed=3, standardize=True)
    assert not np.allclose(unscaled.predictions, result.predictions)
    pls = regression.cross_validate_encoding(X, Y, "pls", n_folds=4, n_components=2)
    expected_pls = np.empty_like(Y)
    for tr, te in regression.make_folds(20, 4, 0):
        expected_pls[te] = regression.PLSEncoder(2).fit(X[tr], Y[tr]).predict(X[te]).reshape(len(te), -1)
    np.testing.assert_allclose(pls.predictions, expected_pls, rtol=1e-10)
    asked = []
    real = regression.get_device
    monkeypatch.setattr(regression, "get_device", lambda device=None: asked.append(device) or real("cpu"))
    regression.ridge_cv_predictions(X, Y, folds, device="the-device")
    assert asked and set(asked) == {"the-device"}


# -- alignment/rsa.py ------------------------------------------------------------------------------------------------
def _square_rdm(seed: int, n: int = 4, scale: float = 1.0) -> np.ndarray:
    from scipy.spatial.distance import pdist, squareform

    return squareform(pdist(np.random.default_rng(seed).normal(size=(n, 2)))) * scale


def test_as_condensed_reads_stacks_of_any_depth_with_tolerances_relative_to_scale():
    """(a, b, n, n) stacks are a * b RDMs; symmetry/diagonal tolerances are 1e-6 of the largest entry; errors name
    the argument ('rdms' by default)."""
    from workbench.alignment.rsa import as_condensed

    r = _square_rdm(0)
    stack = np.stack([np.stack([r, 2 * r, 3 * r]), np.stack([r, r, r])])
    vec = as_condensed(stack).numpy()
    iu = np.triu_indices(4, 1)
    np.testing.assert_array_equal(vec, stack.reshape(-1, 4, 4)[:, iu[0], iu[1]])
    big = _square_rdm(1, scale=1e6)
    np.fill_diagonal(big, 0.5)                          # 5e-7 of the scale: rounding, accepted
    assert as_condensed(big).shape == (1, 6)
    np.fill_diagonal(big, 1e-5 * big.max())
    with pytest.raises(ValueError, match="^rdms is square but its diagonal is not zero"):
        as_condensed(big)
    with pytest.raises(ValueError, match="^rdms: expected an RDM"):
        as_condensed(np.array(1.0))


def test_compute_rdm_names_its_input_and_uses_its_device(monkeypatch):
    import workbench.utils
    from workbench.alignment import rsa

    with pytest.raises(ValueError, match="^layer4: every euclidean dissimilarity is the same"):
        rsa.compute_rdm(np.ones((5, 3)), "euclidean", name="layer4")
    asked = []
    real = workbench.utils.get_device
    monkeypatch.setattr(workbench.utils, "get_device", lambda device=None: asked.append(device) or real("cpu"))
    rsa.compute_rdm(np.random.default_rng(0).normal(size=(5, 3)), "euclidean", device="the-device")
    assert asked and set(asked) == {"the-device"}


@pytest.mark.parametrize("compiled_sweep", [True, False])
def test_weighted_tau_a_with_fractional_weights_is_exact_in_float64(monkeypatch, compiled_sweep):
    """Tau-a of the multiset with fractional pair weights: sum of w_p w_q sign products over all weight-pairs
    (the weighted definition the bootstrap uses), accumulated in float64, by the numba sweep and the torch one."""
    import torch

    from workbench.alignment import rsa
    from workbench.alignment.rsa import weighted_tau_a

    if not compiled_sweep:
        monkeypatch.setattr(rsa, "_numba_sweep", lambda: None)

    rng = np.random.default_rng(3)
    x, y = np.round(rng.random(15), 1), rng.random(15)
    w = rng.random(15) * 3 + 0.1
    s = np.sign(x[:, None] - x[None]) * np.sign(y[:, None] - y[None])
    ww = w[:, None] * w[None]
    expected = np.triu(s * ww, 1).sum() / ((w.sum() ** 2 - (w ** 2).sum()) / 2 + (w * (w - 1) / 2).sum())
    got = float(weighted_tau_a(torch.as_tensor(x)[None], torch.as_tensor(y)[None], torch.as_tensor(w)[None])[0])
    assert got == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("which", ["x", "y"])
def test_spearman_compare_rows_broadcasts_one_vector_over_rows_of_weights(which):
    """One x (or y) vector against several rows, each with its own pair weights: every row equals that row alone."""
    import torch

    from workbench.alignment.rsa import compare_rows

    rng = np.random.default_rng(5)
    one, many = torch.as_tensor(rng.random((1, 10))), torch.as_tensor(rng.random((3, 10)))
    w = torch.as_tensor(rng.integers(0, 3, size=(3, 10)).astype(float))
    x, y = (one, many) if which == "x" else (many, one)
    got = compare_rows(x, y, "spearman", w)
    alone = [float(compare_rows(x[i:i + 1] if which == "y" else x, y[i:i + 1] if which == "x" else y, "spearman",
                                w[i:i + 1])[0]) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), alone, rtol=1e-12)
