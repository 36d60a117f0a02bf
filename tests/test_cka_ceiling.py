"""CKA (both HSIC estimators, linear and RBF kernels) against a port of Kornblith et al.'s published code, and the
split-half ceiling's halves, Spearman-Brown target and order (issue 15)."""

import typing
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.alignment.ceiling import (spearman_brown, split_half_ceiling, split_half_correlations,
                                         split_half_masks)
from workbench.alignment.cka import cka, linear_cka, linear_cka_biased, linear_cka_unbiased, rbf_cka
from workbench.config import ConfigError, parse


# --- a port of the formulas of google-research/representation_similarity (Kornblith et al. 2019), in numpy -------
def ref_gram_linear(x):
    return x @ x.T


def ref_gram_rbf(x, threshold=1.0):
    dots = x @ x.T
    sq_norms = np.diag(dots)
    sq_distances = sq_norms[:, None] + sq_norms[None, :] - 2 * dots
    return np.exp(-sq_distances / (2 * threshold ** 2 * np.median(sq_distances)))


def ref_center_gram(gram, unbiased):
    gram = gram.copy()
    n = len(gram)
    if unbiased:  # Szekely & Rizzo (2014) U-centring, as in the reference
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = gram.mean(0)
        means -= means.mean() / 2
        gram -= means[:, None] + means[None, :]
    return gram


def ref_cka(gram_x, gram_y, debiased):
    gx, gy = ref_center_gram(gram_x, debiased), ref_center_gram(gram_y, debiased)
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def ref_feature_space_linear_cka(x, y, debiased):
    """The reference's feature-space form (centres the features itself): a second, independent formula."""
    x, y = x - x.mean(0), y - y.mean(0)
    xty, xx, yy = np.linalg.norm(x.T @ y) ** 2, np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if debiased:
        n = len(x)
        rx, ry = (x * x).sum(1), (y * y).sum(1)

        def fix(value, ra, rb):
            return value - n / (n - 2) * ra @ rb + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

        xty, xx, yy = fix(xty, rx, ry), np.sqrt(fix(xx ** 2, rx, rx)), np.sqrt(fix(yy ** 2, ry, ry))
    return xty / (xx * yy)


def _issue_data():
    """The issue's reproduction."""
    rng = np.random.default_rng(0)
    X0 = rng.standard_normal((100, 50))
    return X0, X0 @ rng.standard_normal((50, 40)) + 3 * rng.standard_normal((100, 40))


# n = 4 stimuli: the unbiased estimator is negative where the biased one is 0.72 (the issue's -0.84 vs 0.72)
X4 = np.array([[3, 2, -2], [3, -2, 1], [1, -1, 1], [3, -3, -1]], dtype=float)
Y4 = np.array([[0, -2, -2], [-3, 0, 0], [-3, 1, 3], [-1, -1, 2]], dtype=float)


@pytest.mark.parametrize("n, p, q", [(100, 50, 40), (31, 80, 5), (4, 3, 3), (12, 2, 30)])
def test_linear_cka_equals_the_reference_both_estimators(n, p, q):
    rng = np.random.default_rng(n + p)
    X = rng.standard_normal((n, p))
    Y = X[:, :1] @ rng.standard_normal((1, q)) + rng.standard_normal((n, q))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for debiased, ours in ((True, linear_cka_unbiased(X, Y)), (False, linear_cka_biased(X, Y))):
        reference = ref_cka(ref_gram_linear(Xc), ref_gram_linear(Yc), debiased)
        assert ours == pytest.approx(reference, abs=1e-10)
        assert ours == pytest.approx(ref_feature_space_linear_cka(X, Y, debiased), abs=1e-10)
    assert linear_cka(X, Y) == linear_cka_unbiased(X, Y)
    assert linear_cka(X, Y, "biased") == linear_cka_biased(X, Y)


@pytest.mark.parametrize("n", [40, 41])   # n^2 even / odd: numpy's median averages the two middle distances
@pytest.mark.parametrize("bandwidth", [0.5, 1.0])
def test_rbf_cka_equals_the_reference(n, bandwidth):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 10))
    Y = np.tanh(X @ rng.standard_normal((10, 6))) + 0.5 * rng.standard_normal((n, 6))
    for debiased, estimator in ((True, "unbiased"), (False, "biased")):
        reference = ref_cka(ref_gram_rbf(X, bandwidth), ref_gram_rbf(Y, bandwidth), debiased)
        assert rbf_cka(X, Y, bandwidth, estimator) == pytest.approx(reference, abs=1e-10)
    # a smaller bandwidth is a more local kernel: a different number
    assert abs(rbf_cka(X, Y, 0.2) - rbf_cka(X, Y, 1.0)) > 1e-3


def test_cka_ignores_a_common_offset():
    """The issue: linear_cka(X0 + 1e4, Y0 + 1e4) was NaN (expected 0.5823); 1e3 was off by 4.9e-3, 1e5 was inf."""
    X0, Y0 = _issue_data()
    assert linear_cka(X0, Y0) == pytest.approx(0.5823108543298497, abs=1e-12)
    for offset in (1e3, 1e4, 1e5):
        assert linear_cka(X0 + offset, Y0 + offset) == pytest.approx(linear_cka(X0, Y0), abs=1e-10), offset
        assert linear_cka_biased(X0 + offset, Y0 - offset) == pytest.approx(linear_cka_biased(X0, Y0), abs=1e-10)
        assert rbf_cka(X0 + offset, Y0 + offset) == pytest.approx(rbf_cka(X0, Y0), abs=1e-10)
    # a different offset per unit changes nothing either
    shift = np.random.default_rng(1).uniform(-1e4, 1e4, size=50)
    assert linear_cka(X0 + shift, Y0) == pytest.approx(linear_cka(X0, Y0), abs=1e-10)


def test_the_estimators_differ_most_for_few_stimuli():
    """n = 4: the unbiased estimator is -0.84, the biased one (always in [0, 1] for a linear kernel) 0.72."""
    Xc, Yc = X4 - X4.mean(0), Y4 - Y4.mean(0)
    unbiased, biased = linear_cka_unbiased(X4, Y4), linear_cka_biased(X4, Y4)
    assert unbiased == pytest.approx(ref_cka(ref_gram_linear(Xc), ref_gram_linear(Yc), True), abs=1e-10)
    assert biased == pytest.approx(ref_cka(ref_gram_linear(Xc), ref_gram_linear(Yc), False), abs=1e-10)
    assert round(unbiased, 2) == -0.84 and round(biased, 2) == 0.72
    # independent representations with more units than stimuli: biased CKA is far above 0, unbiased is not
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((20, 100)), rng.standard_normal((20, 100))) for _ in range(10)]
    assert np.mean([linear_cka_biased(a, b) for a, b in pairs]) > 0.5
    assert abs(np.mean([linear_cka_unbiased(a, b) for a, b in pairs])) < 0.05


@pytest.mark.parametrize("call, words", [
    (lambda: cka(X4, Y4, kernel="cosine"), ["unknown CKA kernel 'cosine'", "linear, rbf"]),
    (lambda: cka(X4, Y4, estimator="debiased"), ["unknown HSIC estimator 'debiased'", "unbiased, biased"]),
    (lambda: linear_cka_unbiased(X4[:3], Y4[:3]), ["at least 4 stimuli"]),
    (lambda: linear_cka(X4, Y4[:3]), ["same stimuli"]),
    (lambda: linear_cka(np.ones((6, 3)) * 7.1, np.arange(18.0).reshape(6, 3)), ["x is the same for every stimulus"]),
    (lambda: linear_cka(X4, np.where(Y4 > 2, np.nan, Y4)), ["y contains NaN"]),
    (lambda: linear_cka(X4[:, 0], Y4), ["2-D"]),
    (lambda: rbf_cka(X4, Y4, bandwidth=0), ["positive fraction"]),
    (lambda: rbf_cka(np.r_[np.zeros((5, 2)), np.ones((1, 2))], np.arange(12.0).reshape(6, 2)),
     ["median distance between stimuli is 0"]),
])
def test_cka_errors_name_the_problem(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)


# --- split-half ceiling ------------------------------------------------------------------------------------------
def _ragged_valid(rng, shape=(30, 4, 9)):
    """Valid-repeat mask with 2 to 9 valid repeats per cell, odd and even counts."""
    counts = rng.integers(2, shape[2] + 1, size=shape[:2])
    return np.arange(shape[2])[None, None, :] < counts[:, :, None]


def test_equal_halves_have_equal_sizes_and_drop_a_random_repeat_of_an_odd_count():
    valid = _ragged_valid(np.random.default_rng(0))
    counts = valid.sum(2)
    dropped = np.zeros(valid.shape, dtype=int)
    for first, second in split_half_masks(valid, 200, seed=3, halves="equal"):
        assert not (first & second).any() and not ((first | second) & ~valid).any()
        assert (first.sum(2) == counts // 2).all() and (second.sum(2) == counts // 2).all()
        dropped += valid & ~(first | second)
    assert (dropped.sum(2) == 200 * (counts % 2)).all()   # one repeat out per split exactly where the count is odd
    odd = counts % 2 == 1
    assert (dropped[odd] > 0).sum() == valid[odd].sum()   # every repeat of an odd cell is left out some time


def test_unequal_halves_use_every_repeat():
    valid = _ragged_valid(np.random.default_rng(1))
    counts = valid.sum(2)
    for first, second in split_half_masks(valid, 20, seed=0, halves="unequal"):
        assert ((first | second) == valid).all() and not (first & second).any()
        assert (first.sum(2) == counts // 2).all() and (second.sum(2) == counts - counts // 2).all()


def test_split_correlations_equal_a_loop_over_the_same_halves():
    rng = np.random.default_rng(2)
    valid = _ragged_valid(rng, (12, 3, 7))
    trials = np.where(valid, rng.normal(size=valid.shape) + rng.normal(size=valid.shape[:2])[:, :, None], np.nan)
    r = split_half_correlations(trials, n_splits=4, seed=5, halves="equal")
    for split, (first, second) in enumerate(split_half_masks(valid, 4, seed=5, halves="equal")):
        for neuroid in range(3):
            half_means = [[trials[s, neuroid][mask[s, neuroid]].mean() for s in range(12)] for mask in (first, second)]
            assert r[split, neuroid] == pytest.approx(np.corrcoef(*half_means)[0, 1], abs=1e-12)


def _simulated(k, n=2000, q=20, noise_var=2.0, seed=0):
    """Unit signal variance, trial noise variance ``noise_var``, k repeats of every stimulus."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, q, 1)) + np.sqrt(noise_var) * rng.normal(size=(n, q, k))


def test_on_an_odd_repeat_count_equal_and_unequal_halves_estimate_different_things():
    """k = 3, signal variance 1, noise variance 2 per repeat. Equal halves (1 vs 1 repeat, Spearman-Brown x2) give the
    reliability of a 2-repeat mean, 1 / (1 + 2/2) = 0.5; unequal halves (1 vs 2) give SB(1 / sqrt(3 * 2)) = 0.580;
    equal halves corrected to all repeats give the reliability of the 3-repeat mean, 1 / (1 + 2/3) = 0.6."""
    trials = _simulated(3)
    equal = split_half_ceiling(trials, 10, halves="equal").mean()
    unequal = split_half_ceiling(trials, 10, halves="unequal").mean()
    all_repeats = split_half_ceiling(trials, 10, halves="equal", corrected_to="all_repeats").mean()
    assert equal == pytest.approx(0.5, abs=0.02)
    assert unequal == pytest.approx(spearman_brown(1 / np.sqrt(6)), abs=0.02)
    assert all_repeats == pytest.approx(0.6, abs=0.02)
    assert unequal - equal > 0.05


def test_on_even_repeat_counts_equal_and_unequal_halves_are_the_same_split():
    trials = _simulated(4, n=50, q=5)
    np.testing.assert_array_equal(split_half_ceiling(trials, 7, seed=2, halves="equal"),
                                  split_half_ceiling(trials, 7, seed=2, halves="unequal"))
    np.testing.assert_array_equal(split_half_ceiling(trials, 7, seed=2, corrected_to="all_repeats"),
                                  split_half_ceiling(trials, 7, seed=2))   # the factor is 2 for even counts


def test_spearman_brown_per_split_or_on_the_mean_r():
    trials = _simulated(5, n=40, q=30, noise_var=8.0)
    r = split_half_correlations(trials, 25, seed=1)
    per_split = split_half_ceiling(trials, 25, seed=1)
    mean_r = split_half_ceiling(trials, 25, seed=1, spearman_brown_order="mean_r")
    np.testing.assert_allclose(per_split, spearman_brown(r).mean(0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(mean_r, spearman_brown(r.mean(0)), rtol=0, atol=1e-15)
    assert (mean_r >= per_split - 1e-15).all() and (mean_r - per_split).max() > 1e-3   # Jensen: SB is concave
    np.testing.assert_array_equal(split_half_ceiling(trials, 1, seed=1),
                                  split_half_ceiling(trials, 1, seed=1, spearman_brown_order="mean_r"))


def test_ceiling_option_errors():
    trials = _simulated(3, n=10, q=2)
    with pytest.raises(ValueError, match="halves='half'.*equal, unequal"):
        split_half_ceiling(trials, 2, halves="half")
    with pytest.raises(ValueError, match="spearman_brown_order='mean'.*per_split, mean_r"):
        split_half_ceiling(trials, 2, spearman_brown_order="mean")
    with pytest.raises(ValueError, match="needs halves='equal'"):
        split_half_ceiling(trials, 2, halves="unequal", corrected_to="all_repeats")


def test_v4_ceiling_with_equal_halves(data_root):
    """V4 210325 (6-10 repeats, 48% of cells odd): the equal-halves median is lower than the unequal one (issue 15:
    0.750 vs 0.763 with 100 splits); corrected to all repeats it is back near the unequal value."""
    from workbench.data import load_responses

    trials = load_responses("cowley_v4_210325", trials=True)
    medians = {options: float(np.median(split_half_ceiling(trials, 20, 0, *options)))
               for options in (("equal", "per_split"), ("unequal", "per_split"),
                               ("equal", "per_split", "all_repeats"))}
    assert medians[("equal", "per_split")] == pytest.approx(0.750, abs=0.005)
    assert medians[("unequal", "per_split")] == pytest.approx(0.763, abs=0.005)
    assert medians[("equal", "per_split", "all_repeats")] == pytest.approx(0.764, abs=0.005)


# --- config and metric wiring ------------------------------------------------------------------------------------
def _settings(name, **given):
    from workbench.alignment.metrics import METRICS

    return parse(METRICS.get(name).config, {"datasets": ["cowley_v4_210325"], **given}, f"align.settings.{name}")


def test_config_names_the_same_options_as_the_library():
    from workbench.alignment import ceiling
    from workbench.alignment import cka as cka_module
    from workbench.alignment.config import CKAConfig, EncodingConfig

    hints = typing.get_type_hints(EncodingConfig)
    assert typing.get_args(hints["ceiling_halves"]) == ceiling.HALVES
    assert typing.get_args(hints["ceiling_corrected_to"]) == ceiling.CORRECTED_TO
    assert typing.get_args(hints["ceiling_spearman_brown_order"]) == ceiling.SPEARMAN_BROWN_ORDERS
    hints = typing.get_type_hints(CKAConfig)
    assert typing.get_args(hints["kernel"]) == cka_module.KERNELS
    assert typing.get_args(hints["estimator"]) == cka_module.ESTIMATORS
    assert EncodingConfig().ceiling_halves == "equal" and CKAConfig().estimator == "unbiased"
    with pytest.raises(ConfigError, match="ceiling_halves: equal"):
        _settings("ridge", ceiling_halves="unequal", ceiling_corrected_to="all_repeats")
    with pytest.raises(ConfigError, match="rbf_bandwidth"):
        _settings("cka", rbf_bandwidth=0)
    with pytest.raises(ConfigError, match="estimator"):
        _settings("cka", estimator="debiased")


class _FakeActivations(dict):
    """What run.load_activations returns, as far as the metrics read it: layer -> array, and stimulus_ids."""

    def __init__(self, stimulus_ids, layers):
        super().__init__(layers)
        self.stimulus_ids = stimulus_ids


class _FakeRun:
    def __init__(self, stimulus_ids, layers):
        self.activations = _FakeActivations(stimulus_ids, layers)

    def load_activations(self, dataset):
        assert dataset == "cowley_v4_210325"
        return self.activations


def _fake_ctx(data_root, seed=0):
    """A context whose run holds two fake layers for V4 210325: a noisy copy of the responses and noise."""
    from workbench.data import load_responses

    responses = load_responses("cowley_v4_210325")
    ids = [str(s) for s in responses.stimulus_id.values]
    rng = np.random.default_rng(0)
    layers = {"copy": responses.values @ rng.normal(size=(50, 20)) + 5 * rng.normal(size=(len(ids), 20)),
              "noise": rng.normal(size=(len(ids), 20))}
    ctx = SimpleNamespace(run=_FakeRun(ids, layers), device="cpu", seed=seed, progress=lambda it, desc: it)
    return ctx, responses, layers


@pytest.mark.parametrize("estimator, kernel", [("unbiased", "linear"), ("biased", "linear"), ("biased", "rbf")])
def test_the_cka_metric_uses_the_configured_estimator(data_root, estimator, kernel):
    from workbench.alignment.metrics.cka import CKAMetric

    ctx, responses, layers = _fake_ctx(data_root)
    metric = CKAMetric("cka", _settings("cka", estimator=estimator, kernel=kernel, ceiling_splits=3))
    section = metric.score(ctx, ["copy", "noise"]).section
    sec = section["cowley_v4_210325"]
    for layer in ("copy", "noise"):
        assert sec["scores"][layer] == pytest.approx(cka(layers[layer], responses.values, kernel, estimator),
                                                     abs=1e-12)
    assert section["estimator"] == estimator and section["kernel"] == kernel and sec["best_layer"] == "copy"
    assert (sec["ceiling"] is not None) == (estimator == "unbiased" and kernel == "linear")


@pytest.mark.parametrize("options", [{}, {"ceiling_halves": "unequal", "ceiling_spearman_brown_order": "mean_r"},
                                     {"ceiling_corrected_to": "all_repeats"}])
def test_the_encoding_metric_passes_the_ceiling_options(data_root, options):
    from workbench.alignment.metrics.encoding import RidgeMetric
    from workbench.data import load_responses

    ctx, _, _ = _fake_ctx(data_root, seed=4)
    settings = _settings("ridge", ceiling_splits=3, n_folds=2, readouts=False, alphas=[1.0, 100.0], **options)
    section = RidgeMetric("ridge", settings).score(ctx, ["copy"]).section
    expected = split_half_ceiling(load_responses("cowley_v4_210325", trials=True), 3, 4,
                                  options.get("ceiling_halves", "equal"),
                                  options.get("ceiling_spearman_brown_order", "per_split"),
                                  options.get("ceiling_corrected_to", "kept_repeats"))
    assert section["cowley_v4_210325"]["ceiling_median"] == float(np.median(expected))
    assert section["ceiling_options"]["halves"] == options.get("ceiling_halves", "equal")
