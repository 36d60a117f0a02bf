"""Every statistic the report prints, pinned on a case whose answer is known or directly computable.

The headline numbers are checked against rsatoolbox / scikit-learn / captum elsewhere; this file pins the rest: the
layer-difference p-values and intervals of the RSA bootstrap, the bootstrap samples themselves (against scores
computed on the materialised resample), the noise ceiling (against scipy), the split-half ceiling on trial data with
unequal and minimal repeat counts, the ceiled scores at a ceiling of 0, the interventional-alignment permutation
p-value (against scipy's exact permutation test) and the lesion-specificity bootstrap (against the known sampling
distribution of a mean), and ``pearson_rows`` (against numpy). Each test names the wrong number it would catch.
"""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import squareform

from workbench.alignment import (RSAResult, bootstrap_rsa, ceiled_scores, compare_rdms, noise_ceiling,
                                 spearman_brown, split_half_ceiling, split_half_correlations, split_half_masks)
from workbench.alignment.ceiling import spearman_brown_factor
from workbench.intervention import interventional_alignment, lesion_specificity
from workbench.intervention.scoring import profile_correlations
from workbench.training.losses import pearson_rows


# -- RSA: the layer-difference p-value and the intervals -------------------------------------------------------------
def _direct_difference_p(samples: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p of score[i] == score[j], written out pair by pair (Davison & Hinkley's +1)."""
    samples = samples[np.isfinite(samples).all(1)]
    n, k = samples.shape
    p = np.ones((k, k))
    for i in range(k):
        for j in range(k):
            if i != j:
                diff = samples[:, i] - samples[:, j]
                on_the_rarer_side = min(np.sum(diff <= 0), np.sum(diff >= 0))
                p[i, j] = min(1.0, 2 * (on_the_rarer_side + 1) / (n + 1))
    return p


def _result(samples: np.ndarray) -> RSAResult:
    """An RSAResult holding given bootstrap samples (the statistics are functions of the samples alone)."""
    n, k = samples.shape
    return RSAResult([f"m{i}" for i in range(k)], "spearman", "stimuli", np.nanmean(samples, 0), (0.2, 0.4), samples,
                     np.tile([0.2, 0.4], (n, 1)), np.zeros((n, 2), int), np.zeros((n, 5), int))


def test_difference_p_on_samples_with_ties_equals_the_direct_count():
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    # m1 is tied with m0 in a third of the samples; m2 is above m0 in all but 4; NaN rows are unusable samples
    i = np.arange(200)
    m1 = base + np.where(i % 3 == 0, 0.0, np.where(i % 5 == 0, -1.0, 1.0))
    m2 = base + np.where(np.arange(200) < 4, -1.0, 1.0)
    samples = np.stack([base, m1, m2], 1)
    samples[[5, 50]] = np.nan
    p = _result(samples).difference_p()
    np.testing.assert_allclose(p, _direct_difference_p(samples), rtol=0, atol=1e-15)
    n = 198
    assert p[0, 2] == pytest.approx(2 * (4 + 1) / (n + 1))  # catches a p multiplied, not divided, by n + 1
    assert 0.0 < p[0, 1] < 1.0


def test_identical_layers_have_p_one_and_separated_layers_the_smallest_p():
    samples = np.random.default_rng(1).normal(size=(99, 1)) + np.array([0.0, 0.0, 5.0])
    p = _result(samples).difference_p()
    # identical samples: every difference is a tie, which counts on both sides of zero
    assert p[0, 1] == 1.0
    # always above: the smallest p the bootstrap can give, 2 / (n + 1)
    assert p[0, 2] == pytest.approx(2 / 100) and p[2, 1] == pytest.approx(2 / 100)
    np.testing.assert_array_equal(np.diag(p), 1.0)


def test_intervals_are_percentiles_of_the_usable_samples():
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(500, 3)) * [1.0, 2.0, 0.5]
    samples[7] = np.nan
    res = _result(samples)
    ok = samples[np.isfinite(samples).all(1)]
    np.testing.assert_allclose(res.ci(0.9), np.percentile(ok, [5, 95], axis=0).T)
    np.testing.assert_allclose(res.std(), ok.std(0, ddof=1))
    diff = ok[:, 0] - ok[:, 2]
    np.testing.assert_allclose(res.difference_ci(0.8)[0, 2], np.percentile(diff, [10, 90]))
    np.testing.assert_allclose(res.ceiling_ci(), [[0.2, 0.2], [0.4, 0.4]])
    summary = res.to_dict(0.9)
    assert summary["n_valid"] == 499 and summary["n_bootstrap"] == 500
    assert summary["differences"]["m0 - m2"]["p"] == pytest.approx(res.difference_p()[0, 2])
    assert summary["scores"]["m1"]["ci"] == pytest.approx(list(res.ci(0.9)[1]))


def _result_with_ceilings(samples: np.ndarray, ceilings: np.ndarray) -> RSAResult:
    n, k = samples.shape
    return RSAResult([f"m{i}" for i in range(k)], "pearson", "both", np.array([0.1, 0.3, 0.2][:k]), (0.25, 0.45),
                     samples, ceilings, np.zeros((n, 2), int), np.zeros((n, 5), int))


def test_summary_dict_holds_every_interval_and_p_under_its_documented_name():
    rng = np.random.default_rng(14)
    res = _result_with_ceilings(rng.normal(size=(300, 3)), rng.normal([0.25, 0.45], 0.05, size=(300, 2)))
    ci, dci, nc, p = res.ci(0.9), res.difference_ci(0.9), res.ceiling_ci(0.9), res.difference_p()
    expected = {
        "method": "pearson", "scheme": "both", "n_bootstrap": 300, "n_valid": 300, "ci_level": 0.9,
        "scores": {f"m{i}": {"score": res.scores[i], "ci": list(ci[i]), "std": res.std()[i]} for i in range(3)},
        "noise_ceiling": {"lower": 0.25, "upper": 0.45, "lower_ci": list(nc[0]), "upper_ci": list(nc[1])},
        "differences": {f"m{i} - m{j}": {"diff": res.scores[i] - res.scores[j], "ci": list(dci[i, j]), "p": p[i, j]}
                        for i in range(3) for j in range(3) if i < j},
    }
    assert res.to_dict(0.9) == expected
    assert res.to_dict() == res.to_dict(0.95)


def test_interval_defaults_and_the_ceiling_interval():
    rng = np.random.default_rng(15)
    ceilings = rng.normal([0.25, 0.45], [0.05, 0.02], size=(400, 2))
    ceilings[3] = np.nan   # an unusable sample
    res = _result_with_ceilings(rng.normal(size=(400, 2)), ceilings)
    ok = ceilings[np.isfinite(ceilings).all(1)]
    np.testing.assert_allclose(res.ceiling_ci(0.8), np.percentile(ok, [10, 90], axis=0).T)
    np.testing.assert_array_equal(res.ceiling_ci(), res.ceiling_ci(0.95))
    np.testing.assert_array_equal(res.ci(), res.ci(0.95))
    np.testing.assert_array_equal(res.difference_ci(), res.difference_ci(0.95))
    one_subject = _result_with_ceilings(rng.normal(size=(10, 2)), np.full((10, 2), np.nan))
    ceiling_ci = one_subject.ceiling_ci()
    assert ceiling_ci.shape == (2, 2) and np.isnan(ceiling_ci).all()


def _rsa_case(n_stimuli=10, n_subjects=5, seed=0):
    """Subject RDMs = a shared signal + subject noise; model 0 is the signal, model 1 a monotone transform of it
    (identical under Spearman), model 2 unrelated."""
    rng = np.random.default_rng(seed)
    p = n_stimuli * (n_stimuli - 1) // 2
    signal = rng.random(p) + 0.1
    subjects = np.stack([squareform(signal + rng.normal(0, 0.3, p) + 1) for _ in range(n_subjects)])
    models = np.stack([squareform(signal), squareform(signal ** 3), squareform(rng.random(p))])
    return models, subjects


def test_bootstrap_difference_p_of_real_samples_equals_the_direct_count():
    models, subjects = _rsa_case()
    models[1] = models[0]   # a copy of a layer
    res = bootstrap_rsa(models, subjects, "pearson", n_bootstrap=60, scheme="both", seed=3, progress=False)
    np.testing.assert_allclose(res.difference_p(), _direct_difference_p(res.samples), atol=1e-15)
    assert res.difference_p()[0, 1] == 1.0   # a layer is never different from its copy


def _materialised_score(model: np.ndarray, subject: np.ndarray, stimuli: np.ndarray, method: str) -> float:
    """Score on a bootstrap sample built as rsatoolbox builds it: the RDMs of the drawn stimuli, the pairs of a
    stimulus with its own copy dropped, every other pair kept as often as it occurs."""
    rows, cols = np.triu_indices(len(stimuli), 1)
    keep = stimuli[rows] != stimuli[cols]
    a = model[stimuli[rows], stimuli[cols]][keep]
    b = subject[stimuli[rows], stimuli[cols]][keep]
    return stats.spearmanr(a, b)[0] if method == "spearman" else stats.pearsonr(a, b)[0]


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_bootstrap_samples_equal_scores_on_the_materialised_resample(method):
    models, subjects = _rsa_case(n_stimuli=8, n_subjects=4, seed=1)
    res = bootstrap_rsa(models, subjects, method, n_bootstrap=6, scheme="both", seed=0, progress=False)
    for b in range(6):
        stim, subj = res.stimulus_indices[b], res.subject_indices[b]
        if len(np.unique(stim)) < 3:
            assert np.isnan(res.samples[b]).all()
            continue
        expected = [np.mean([_materialised_score(m, subjects[s], stim, method) for s in subj]) for m in models]
        np.testing.assert_allclose(res.samples[b], expected, rtol=1e-9, atol=1e-12)


def test_subject_bootstrap_is_the_bootstrap_of_a_mean_with_its_known_spread():
    """Resampling subjects: each sample is the mean of the drawn subjects' scores, and over many samples its standard
    deviation is the plug-in standard error sqrt(mean((x - mean x)^2) / S) of a mean of S values."""
    models, subjects = _rsa_case(n_stimuli=9, n_subjects=30, seed=2)
    per_subject = compare_rdms(models, subjects, "pearson")  # (3 models, 30 subjects)
    res = bootstrap_rsa(models, subjects, "pearson", n_bootstrap=2000, scheme="subjects", seed=1, progress=False)
    np.testing.assert_allclose(res.scores, per_subject.mean(1))
    np.testing.assert_allclose(res.samples, per_subject[:, res.subject_indices].mean(-1).T, rtol=1e-12)
    standard_error = np.sqrt(per_subject.var(1) / per_subject.shape[1])
    np.testing.assert_allclose(res.std(), standard_error, rtol=0.06)
    lo, hi = res.ci(0.95).T
    np.testing.assert_allclose(hi - lo, 2 * 1.96 * standard_error, rtol=0.1)


# -- RSA noise ceiling against scipy ---------------------------------------------------------------------------------
def test_noise_ceiling_equals_the_direct_leave_one_subject_out_computation():
    _, subjects = _rsa_case(n_stimuli=9, n_subjects=5, seed=4)
    vectors = np.stack([squareform(s) for s in subjects])
    ranks = np.stack([stats.rankdata(v) for v in vectors])   # rsatoolbox pools rank methods as mean ranks
    upper = np.mean([stats.spearmanr(ranks.mean(0), v)[0] for v in vectors])
    lower = np.mean([stats.spearmanr(np.delete(ranks, s, 0).mean(0), vectors[s])[0] for s in range(len(vectors))])
    assert noise_ceiling(subjects, "spearman") == pytest.approx((lower, upper), abs=1e-12)
    z = stats.zscore(vectors, axis=1)   # Pearson pools z-scored RDMs
    upper = np.mean([stats.pearsonr(z.mean(0), v)[0] for v in vectors])
    lower = np.mean([stats.pearsonr(np.delete(z, s, 0).mean(0), vectors[s])[0] for s in range(len(vectors))])
    assert noise_ceiling(subjects, "pearson") == pytest.approx((lower, upper), abs=1e-12)


# -- split-half ceilings on trial data -------------------------------------------------------------------------------
def _trials(counts: np.ndarray, noise: float, seed: int = 0, n_reps: int = 8) -> np.ndarray:
    """(stimulus, neuroid, repetition) = signal + noise, NaN beyond each cell's repeat count."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=counts.shape)
    trials = signal[..., None] + noise * rng.normal(size=(*counts.shape, n_reps))
    trials[np.arange(n_reps)[None, None, :] >= counts[..., None]] = np.nan
    return trials


def _direct_half_correlations(trials: np.ndarray, n_splits: int, seed: int, halves: str) -> np.ndarray:
    """The same split halves, averaged with nanmean and correlated with numpy."""
    out = []
    for first, second in split_half_masks(~np.isnan(trials), n_splits, seed, halves):
        means = [np.nanmean(np.where(mask, trials, np.nan), axis=2) for mask in (first, second)]
        out.append([np.corrcoef(means[0][:, k], means[1][:, k])[0, 1] for k in range(trials.shape[1])])
    return np.array(out)


@pytest.mark.parametrize("halves", ["equal", "unequal"])
def test_split_half_correlations_with_unequal_repeat_counts_equal_the_direct_computation(halves):
    counts = np.random.default_rng(5).integers(2, 9, size=(40, 3))   # 2 to 8 repeats, different per cell
    trials = _trials(counts, noise=1.0)
    r = split_half_correlations(trials, n_splits=7, seed=2, halves=halves)
    np.testing.assert_allclose(r, _direct_half_correlations(trials, 7, 2, halves), atol=1e-12)


def test_noise_free_trials_with_unequal_repeat_counts_have_ceiling_one():
    # every repeat equals the signal, so each half-mean is the signal whatever the number of repeats it averages
    counts = np.random.default_rng(6).integers(2, 7, size=(30, 4))
    trials = _trials(counts, noise=0.0)
    np.testing.assert_allclose(split_half_ceiling(trials, n_splits=5), 1.0, atol=1e-12)


def test_exactly_two_repeats_give_the_known_single_trial_reliability_and_one_repeat_is_refused():
    """Signal variance 1 and noise variance 1 per repeat: one repeat correlates 1 / 2 with another, and Spearman-Brown
    makes that 2/3 for the mean of both."""
    two = _trials(np.full((3000, 2), 2), noise=1.0, seed=1, n_reps=2)
    np.testing.assert_allclose(split_half_correlations(two, n_splits=4), 0.5, atol=0.05)
    np.testing.assert_allclose(split_half_ceiling(two, n_splits=4), 2 / 3, atol=0.05)
    assert spearman_brown_factor(two, "equal", "all_repeats") == pytest.approx([2.0, 2.0])
    one = two.copy()
    one[17, 1, 1] = np.nan
    with pytest.raises(ValueError, match=">= 2 valid repeats"):
        split_half_correlations(one)
    with pytest.raises(ValueError, match=">= 2 valid repeats"):
        spearman_brown_factor(one, "equal", "all_repeats")


def test_spearman_brown_factor_for_all_repeats_is_the_ratio_of_mean_noise_variances():
    counts = np.array([[2, 4], [3, 4], [5, 4], [8, 4]])   # neuroid 0 has odd counts, neuroid 1 only even ones
    trials = _trials(counts, noise=1.0)
    expected_0 = np.mean([1 / 1, 1 / 1, 1 / 2, 1 / 4]) / np.mean([1 / 2, 1 / 3, 1 / 5, 1 / 8])
    assert spearman_brown_factor(trials, "equal", "all_repeats") == pytest.approx([expected_0, 2.0])
    assert spearman_brown(0.5, 2.0) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, 3.0) == pytest.approx(0.75)


@pytest.mark.parametrize("halves", ["equal", "unequal"])
def test_split_halves_are_disjoint_random_halves_of_each_cells_valid_repeats(halves):
    """The masks themselves (the direct computation above reuses them): sizes, disjointness, validity, and every
    valid repeat equally likely to land in the first half."""
    counts = np.array([[2, 3], [4, 5], [7, 6]])
    valid = np.arange(8)[None, None, :] < counts[..., None]
    in_first = np.zeros(valid.shape)
    for first, second in split_half_masks(valid, 3000, seed=1, halves=halves):
        assert not (first & second).any() and not (first & ~valid).any() and not (second & ~valid).any()
        np.testing.assert_array_equal(first.sum(2), counts // 2)
        np.testing.assert_array_equal(second.sum(2), counts // 2 if halves == "equal" else counts - counts // 2)
        in_first += first
    share = np.where(valid, in_first / 3000, np.nan)
    expected = np.broadcast_to(((counts // 2) / counts)[..., None], valid.shape)
    np.testing.assert_allclose(share[valid], expected[valid], atol=0.04)
    # seeded: the same seed gives the same halves, another seed others
    again = [f for f, _ in split_half_masks(valid, 3, seed=1, halves=halves)]
    other = [f for f, _ in split_half_masks(valid, 3, seed=2, halves=halves)]
    assert all(np.array_equal(a, b) for a, b in zip(again, [f for f, _ in split_half_masks(valid, 3, 1, halves)]))
    assert not all(np.array_equal(a, b) for a, b in zip(again, other))


def test_ceiling_options_follow_their_definitions():
    counts = np.random.default_rng(10).integers(2, 8, size=(25, 3))
    trials = _trials(counts, noise=0.8, seed=3)
    r = split_half_correlations(trials, n_splits=6, seed=4)
    factor = (1 / (counts // 2)).mean(0) / (1 / counts).mean(0)
    np.testing.assert_allclose(split_half_ceiling(trials, 6, 4), spearman_brown(r, 2.0).mean(0))
    np.testing.assert_allclose(split_half_ceiling(trials, 6, 4, spearman_brown_order="mean_r"),
                               spearman_brown(r.mean(0), 2.0))
    np.testing.assert_allclose(split_half_ceiling(trials, 6, 4, corrected_to="all_repeats"),
                               spearman_brown(r, factor).mean(0))
    np.testing.assert_allclose(split_half_ceiling(trials, 6, 4, "unequal"),
                               spearman_brown(split_half_correlations(trials, 6, 4, "unequal"), 2.0).mean(0))
    np.testing.assert_allclose(split_half_ceiling(trials, 6, 4, spearman_brown_order="mean_r",
                                                  corrected_to="all_repeats"), spearman_brown(r.mean(0), factor))
    np.testing.assert_allclose(spearman_brown_factor(trials), 2.0)
    # three stimuli are the fewest a correlation across stimuli takes
    assert split_half_correlations(trials[:3], n_splits=2).shape == (2, 3)
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        split_half_correlations(trials[:2])


@pytest.mark.parametrize("option, value", [("halves", "halfs"), ("spearman_brown_order", "median"),
                                           ("corrected_to", "everything")])
def test_an_unknown_ceiling_option_is_named_in_the_error(option, value):
    trials = _trials(np.full((5, 1), 4), noise=1.0)
    with pytest.raises(ValueError, match=f"{option}='{value}'"):
        split_half_ceiling(trials, n_splits=2, **{option: value})


def test_all_repeats_needs_equal_halves():
    trials = _trials(np.full((5, 1), 4), noise=1.0)
    with pytest.raises(ValueError, match="needs halves='equal'"):
        split_half_ceiling(trials, n_splits=2, halves="unequal", corrected_to="all_repeats")


def test_ceilings_of_float32_trials_are_computed_in_float64():
    trials = _trials(np.random.default_rng(13).integers(2, 6, size=(15, 2)), noise=1.0, seed=6).astype(np.float32)
    np.testing.assert_array_equal(split_half_correlations(trials, 3), split_half_correlations(trials.astype(float), 3))
    r = np.float32([0.3, 0.55])
    assert spearman_brown(r, 2.0).dtype == np.float64
    np.testing.assert_array_equal(spearman_brown(r, 2.0), spearman_brown(r.astype(np.float64), 2.0))


def test_ceiling_defaults_are_the_documented_ones():
    trials = _trials(np.random.default_rng(11).integers(2, 6, size=(12, 2)), noise=1.0, seed=5)
    np.testing.assert_array_equal(split_half_ceiling(trials), split_half_ceiling(
        trials, n_splits=100, seed=0, halves="equal", spearman_brown_order="per_split", corrected_to="kept_repeats"))
    np.testing.assert_array_equal(split_half_correlations(trials), split_half_correlations(trials, 100, 0, "equal"))
    valid = ~np.isnan(trials)
    for (a, b), (c, d) in zip(split_half_masks(valid, 2), split_half_masks(valid, 2, seed=0, halves="equal")):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    np.testing.assert_array_equal(spearman_brown_factor(trials), spearman_brown_factor(trials, "equal", "kept_repeats"))
    assert spearman_brown(0.5) == pytest.approx(2 / 3)


def test_ceiled_scores_at_a_ceiling_of_zero_are_undefined_not_infinite():
    r = np.array([0.3, 0.5, -0.2, 0.4, 0.0])
    c = np.array([0.0, 0.25, 0.5, -0.1, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # undefined entries are NaN quietly: no divide / invalid warnings
        out = ceiled_scores(r, c)
    assert np.isnan(out["r2_over_c"][[0, 3, 4]]).all() and np.isnan(out["r_over_c_sq"][[0, 3, 4]]).all()
    np.testing.assert_allclose(out["r2_over_c"][1:3], [0.25 / 0.25, 0.04 / 0.5])
    np.testing.assert_allclose(out["r_over_c_sq"][1:3], [(0.5 / 0.25) ** 2, (0.2 / 0.5) ** 2])
    assert out["r2_over_c_median"] == pytest.approx(np.median([1.0, 0.08]))
    assert out["r_over_c_sq_median"] == pytest.approx(np.median([4.0, 0.16]))
    assert out["raw_r_median"] == pytest.approx(0.3) and out["ceiling_median"] == pytest.approx(0.0)


def test_ceiled_scores_are_computed_in_float64_whatever_the_input_precision():
    r, c = np.float32([0.3, 0.7]), np.float32([0.9, 0.6])
    out = ceiled_scores(r, c)
    r64, c64 = r.astype(np.float64), c.astype(np.float64)
    np.testing.assert_array_equal(out["r2_over_c"], r64 ** 2 / c64)
    np.testing.assert_array_equal(out["r_over_c_sq"], (r64 / c64) ** 2)


# -- interventional alignment and lesion specificity ----------------------------------------------------------------
def _site_case(n_sites: int, seed: int):
    """Sites of 4 units each with random preferences; each lesion hurts random classes (a weak relation at best)."""
    rng = np.random.default_rng(seed)
    n_classes = 4
    sel_labels = np.repeat(np.arange(n_classes), 10)
    x = rng.normal(size=(40, 4 * n_sites)) + rng.normal(size=(1, 4 * n_sites)) * (sel_labels[:, None] == 1)
    sites = [np.arange(4 * k, 4 * k + 4) for k in range(n_sites)]
    eval_labels = np.repeat(np.arange(n_classes), 50)
    clean = np.ones(200, bool)
    lesion = rng.random((n_sites, 200)) > rng.uniform(0.05, 0.5, size=(n_sites, 1, n_classes))[
        :, 0, eval_labels]
    return x, sel_labels, sites, clean, lesion, eval_labels, n_classes


def _exact_permutation_p(s_prof: np.ndarray, d_prof: np.ndarray) -> float:
    """scipy's exact test over all pairings of sites with deficits: share with statistic >= the observed."""
    def above_mismatched(d):
        c = profile_correlations(s_prof, d)
        return c["mean_matched"] - c["mean_mismatched"]

    pairing = np.arange(len(d_prof))   # permuting this one sample enumerates every pairing
    res = stats.permutation_test((pairing,), lambda order: above_mismatched(d_prof[order]),
                                 permutation_type="pairings", n_resamples=np.inf, alternative="greater",
                                 vectorized=False)
    return float(res.pvalue)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_p_converges_to_scipys_exact_permutation_test(seed):
    case = _site_case(n_sites=4, seed=seed)
    res = interventional_alignment(*case, n_bootstrap=2, n_permutations=3000, seed=seed)
    exact = _exact_permutation_p(np.array(res["selectivity_profiles"]), np.array(res["deficit_profiles"]))
    # 4 sites: 24 pairings, the observed one among them, so exact >= 1/24; Monte Carlo error of 3000 draws
    assert res["permutation_p"] == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 3000) + 1e-3)


def test_permutation_p_counts_the_pairings_equal_to_the_observed_one():
    # two sites: a permutation either keeps the pairing (statistic == observed, a tie) or swaps it (-observed)
    case = _site_case(n_sites=2, seed=4)
    res = interventional_alignment(*case, n_bootstrap=2, n_permutations=1000, seed=0)
    # about half of the draws are the identity, a tie: p ~ 1/2 when the observed statistic is above 0, else every
    # draw is at or above it and p = 1 (with the tie dropped, p would be ~ 1/1001 or ~ 1/2)
    expected = 0.5 if res["score_above_mismatched"] > 0 else 1.0
    assert res["permutation_p"] == pytest.approx(expected, abs=0.05)


def test_lesion_specificity_p_and_intervals_on_known_sampling_distributions():
    rng = np.random.default_rng(8)
    n, n_target = 1000, 400
    target = np.arange(n) < n_target
    # the selective lesion hurts the target no more than random ones: the index is below 0 in every resample
    selective = np.where(target, rng.random(n) < 0.1, rng.random(n) < 0.3).astype(float)
    random = (rng.random((4, n)) < 0.2).astype(float)
    res = lesion_specificity(selective, random, target, n_bootstrap=2000, seed=0)
    assert res["p_index_le_0"] == pytest.approx(1.0)
    # a mean of Bernoulli(q) damages over the target stimuli: its bootstrap interval is q +- 1.96 sqrt(q(1-q)/n)
    q = selective[target].mean()
    half_width = 1.96 * np.sqrt(q * (1 - q) / n_target)
    assert res["target_damage_selective_ci"] == pytest.approx((q - half_width, q + half_width), abs=0.15 * half_width)
    # a lesion that hurts its target far more than random ones: no resample at or below 0, the smallest p
    specific = np.where(target, rng.random(n) < 0.6, rng.random(n) < 0.1).astype(float)
    assert lesion_specificity(specific, random, target, n_bootstrap=500, seed=1)["p_index_le_0"] == \
        pytest.approx(1 / 501)


def test_interventional_alignment_reports_its_direct_computation():
    from workbench.intervention import category_dprime, class_deficits

    x, sel_labels, sites, clean, lesion, eval_labels, n_classes = _site_case(n_sites=3, seed=5)
    res = interventional_alignment(x, sel_labels, sites, clean, lesion, eval_labels, n_classes, n_bootstrap=300,
                                   n_permutations=50, seed=2, level=0.9)
    dprime = category_dprime(x, sel_labels[:, None] == np.arange(n_classes)[None, :])
    s_prof = np.stack([dprime[:, site].mean(1) for site in sites])
    d_prof = class_deficits(clean, lesion, eval_labels, n_classes)
    np.testing.assert_allclose(res["selectivity_profiles"], s_prof, atol=1e-12)
    np.testing.assert_allclose(res["deficit_profiles"], d_prof, atol=1e-12)
    r = np.array([[stats.pearsonr(a, b)[0] for b in d_prof] for a in s_prof])
    mismatched = r[~np.eye(3, dtype=bool)].mean()
    assert res["score"] == pytest.approx(np.diag(r).mean())
    assert res["mean_mismatched_r"] == pytest.approx(mismatched)
    assert res["score_above_mismatched"] == pytest.approx(np.diag(r).mean() - mismatched)
    np.testing.assert_allclose(res["per_site_r"], np.diag(r))
    assert (res["n_sites"], res["n_categories"], res["n_bootstrap"], res["n_permutations"], res["ci_level"]) == \
        (3, n_classes, 300, 50, 0.9)
    # percentile intervals of resampled statistics hold their own point estimate
    assert res["score_ci"][0] < res["score"] < res["score_ci"][1]
    assert res["score_above_mismatched_ci"][0] < res["score_above_mismatched"] < res["score_above_mismatched_ci"][1]


def _flat_profile_case(level: float) -> tuple[np.ndarray, np.ndarray]:
    s = np.array([[1.0, 2.0, 4.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    d = np.array([[0.1, 0.3, 0.2], [level] * 3, [0.5, 0.1, 0.0]])   # site 1's lesion hurt every class alike
    return s, d


def _check_flat_profile_left_out(s: np.ndarray, d: np.ndarray) -> None:
    out = profile_correlations(s, d)
    r = np.array([[np.nan if np.ptp(b) == 0 else stats.pearsonr(a, b)[0] for b in d] for a in s])
    assert np.isnan(out["matched"][1]) and out["n_sites_undefined"] == 1
    assert out["mean_matched"] == pytest.approx(np.nanmean(np.diag(r)))
    assert out["mean_mismatched"] == pytest.approx(np.nanmean(r[~np.eye(3, dtype=bool)]))


def test_profile_correlations_leave_a_flat_deficit_profile_out_of_the_means():
    _check_flat_profile_left_out(*_flat_profile_case(0.0))
    s, _ = _flat_profile_case(0.0)
    flat = profile_correlations(s, np.zeros((3, 3)))
    assert np.isnan(flat["mean_matched"]) and np.isnan(flat["mean_mismatched"])


@pytest.mark.parametrize("level", [0.2, 0.7, 935.0724237877682])
def test_a_flat_non_zero_deficit_profile_is_left_out_too(level):
    """Every class lost the same amount: centring leaves rounding noise (of 5e-17 for 0.2, 2e-13 for 935.07), not 0,
    and r stays undefined: the tolerance grows with the row's magnitude."""
    _check_flat_profile_left_out(*_flat_profile_case(level))


@pytest.mark.parametrize("row", [0.2 + np.array([1e-9, -1e-9, 0.0]), np.array([1e-15, 2e-15, 4e-15])])
def test_a_profile_with_a_tiny_real_spread_keeps_its_correlation(row):
    """The flatness tolerance is a few ulps of the row's own size (not of 1, not of the largest row): a spread of
    1e-9 on 0.2 beside a row of millions, or a profile of size 1e-15, is a real profile."""
    s, d = _flat_profile_case(0.2)
    d[0] *= 1e7
    d[1] = row
    out = profile_correlations(s, d)
    assert out["n_sites_undefined"] == 0
    assert out["matched"][1] == pytest.approx(stats.pearsonr(s[1], d[1])[0], abs=1e-6)


def test_lesion_specificity_reports_its_direct_computation():
    rng = np.random.default_rng(12)
    n = 300
    target = np.arange(n) < 120
    selective = rng.random(n) * np.where(target, 1.0, 0.3)
    random = rng.random((2, n)) * 0.5
    res = lesion_specificity(selective, random, target, n_bootstrap=200, seed=3, level=0.8)
    dt_s, do_s = selective[target].mean(), selective[~target].mean()
    dt_r, do_r = random[:, target].mean(), random[:, ~target].mean()
    expected = {"target_damage_selective": dt_s, "other_damage_selective": do_s, "target_damage_random": dt_r,
                "other_damage_random": do_r, "specificity_ratio": dt_s / dt_r,
                "specificity_index": (dt_s - do_s) - (dt_r - do_r)}
    for name, value in expected.items():
        assert res[name] == pytest.approx(value), name
        assert res[f"{name}_ci"][0] < value < res[f"{name}_ci"][1], name
    assert (res["n_target"], res["n_other"], res["n_controls"], res["n_bootstrap"], res["ci_level"]) == \
        (120, 180, 2, 200, 0.8)
    assert res["ratio_denominator_nonpositive_fraction"] == 0.0
    # strata given as the target itself are the default strata
    same = lesion_specificity(selective, random, target, strata=target.astype(int), n_bootstrap=200, seed=3, level=0.8)
    assert same == res


def test_lesion_specificity_resamples_the_random_controls():
    """Two controls of target damage 0.1 and 0.5: a resample of the controls averages two draws from {0.1, 0.5}, so
    its distribution puts a quarter of its mass on each end; the interval spans (about) 0.1 to 0.5."""
    n = 200
    target = np.arange(n) < 100
    random = np.stack([np.where(target, 0.1, 0.0), np.where(target, 0.5, 0.0)])
    res = lesion_specificity(np.where(target, 0.3, 0.0), random, target, n_bootstrap=400, seed=0)
    assert res["target_damage_random_ci"] == pytest.approx((0.1, 0.5))
    one = lesion_specificity(np.where(target, 0.3, 0.0), random[1], target, n_bootstrap=50)  # one control, 1-D
    assert one["n_controls"] == 1 and one["target_damage_random"] == pytest.approx(0.5)


def test_a_specificity_ratio_over_no_random_damage_is_undefined():
    n = 100
    target = np.arange(n) < 40
    res = lesion_specificity(np.where(target, 0.5, 0.0), np.zeros((3, n)), target, n_bootstrap=50)
    assert np.isnan(res["specificity_ratio"]) and res["ratio_denominator_nonpositive_fraction"] == 1.0
    assert res["specificity_index"] == pytest.approx(0.5)


def test_scoring_defaults_are_the_documented_ones():
    case = _site_case(n_sites=2, seed=6)
    explicit = interventional_alignment(*case, n_bootstrap=1000, n_permutations=1000, seed=0, level=0.95)
    assert interventional_alignment(*case) == explicit
    target = np.arange(60) < 20
    damage = np.random.default_rng(0).random((3, 60))
    assert lesion_specificity(damage[0], damage[1:], target) == \
        lesion_specificity(damage[0], damage[1:], target, None, 1000, 0, 0.95)


# -- pearson_rows (the spatial-correlation loss's correlation) against numpy -----------------------------------------
def test_pearson_rows_equals_numpy_corrcoef_row_by_row():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(6, 50)) * rng.uniform(0.5, 3, size=(6, 1)) + rng.normal(size=(6, 1)) * 4
    b = 0.6 * a + rng.normal(size=(6, 50)) + 2.0
    r = pearson_rows(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(r, [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)], rtol=1e-6)
    # any leading shape: rows are the last axis
    stacked = pearson_rows(torch.as_tensor(a.reshape(2, 3, 50)), torch.as_tensor(b.reshape(2, 3, 50))).numpy()
    np.testing.assert_allclose(stacked.ravel(), r, rtol=1e-12)


def test_pearson_rows_of_a_constant_row_is_zero_with_finite_gradients():
    a = torch.tensor([[1.0, 2.0, 4.0, 3.0]], dtype=torch.float64, requires_grad=True)
    constant = torch.full((1, 4), 3.0, dtype=torch.float64, requires_grad=True)
    r = pearson_rows(a, constant)
    assert r.item() == 0.0
    r.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(constant.grad).all()
