"""More statistics pinned on known answers: the RSA core (RDMs, comparisons, weighted multiset statistics) against
scipy / numpy written out directly. Each test names the wrong number it would catch; tiny sizes, no data files.

These tests exist to kill the single-operator mutants of ``workbench/alignment/rsa.py`` that survived the rest of the
suite (``make mutation-fast MUTATION_TARGETS='workbench.alignment.rsa.*'``).
"""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from workbench.alignment import rsa
from workbench.alignment.rsa import (as_condensed, compare_rdms, compare_rows, compute_rdm, pair_weights,
                                     tau_a_numerator, weighted_rank, weighted_tau_a, whitened_vectors)

T = torch.float64


def _features(seed: int, n: int = 7, units: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, units)) + 0.5


# -- RDMs ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, scipy_metric, scale", [("correlation", "correlation", 1.0),
                                                         ("cosine", "cosine", 1.0),
                                                         ("euclidean", "sqeuclidean", 1 / 5)])
def test_rdms_equal_scipys_distances(metric, scipy_metric, scale):
    """1 - r, 1 - cos, and squared Euclidean / n_units (rsatoolbox's euclidean): a wrong centring, norm or divisor."""
    x = _features(1)
    expected = squareform(pdist(x, scipy_metric)) * scale
    np.testing.assert_allclose(compute_rdm(x, metric), expected, atol=1e-12)


def test_crossnobis_rdm_equals_its_leave_one_repetition_out_definition():
    """d(i, j) = mean over folds of (mean of the other repetitions' difference) . (left-out difference) / n_units."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4))                       # 3 repetitions, 5 stimuli, 4 units
    precision = np.diag([1.0, 2.0, 0.5, 1.5])
    expected = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            for fold in range(3):
                train = np.delete(x, fold, axis=0).mean(0)
                expected[i, j] += (train[i] - train[j]) @ precision @ (x[fold, i] - x[fold, j])
    expected = (expected + expected.T) / 2 / (3 * 4)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(compute_rdm(x, "crossnobis", noise_precision=precision), expected, atol=1e-12)
    identity = compute_rdm(x, "crossnobis")
    np.testing.assert_allclose(identity, compute_rdm(x, "crossnobis", noise_precision=np.eye(4)), atol=1e-15)


def test_rdm_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown RDM metric 'manhattan'"):
        compute_rdm(_features(0), "manhattan")
    with pytest.raises(ValueError, match="constant pattern"):
        compute_rdm(np.vstack([np.ones(4), [1.0, 2, 3, 4], [4.0, 1, 2, 3]]), "correlation")
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        compute_rdm(_features(0, n=2), "euclidean")
    with pytest.raises(ValueError, match=r"n_repetitions >= 2"):
        compute_rdm(_features(0)[None], "crossnobis")
    with pytest.raises(ValueError, match=r"noise_precision must be \(5, 5\)"):
        compute_rdm(np.stack([_features(0), _features(1)]), "crossnobis", noise_precision=np.eye(4))


# -- comparisons -----------------------------------------------------------------------------------------------------
def _pair(seed: int, n: int = 8, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = n * (n - 1) // 2
    a, b = rng.random(p), rng.random(p)
    if ties:
        a, b = np.round(a * 4), np.round(b * 3)
    return a, b


def _tau_a(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a written out: (concordant - discordant) / (n (n - 1) / 2), ties counting 0."""
    n = len(a)
    s = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i in range(n) for j in range(i + 1, n))
    return s / (n * (n - 1) / 2)


@pytest.mark.parametrize("ties", [False, True])
def test_comparisons_equal_scipy_and_their_definitions(ties):
    """spearman = Pearson of average ranks, pearson, tau-a, cosine: a wrong rank, mean or normalisation."""
    a, b = _pair(3, ties=ties)
    expected = {"spearman": stats.spearmanr(a, b)[0], "pearson": stats.pearsonr(a, b)[0], "kendall_tau_a": _tau_a(a, b),
                "cosine": a @ b / np.linalg.norm(a) / np.linalg.norm(b)}
    for method, value in expected.items():
        assert compare_rdms(a, b, method) == pytest.approx(value, abs=1e-12), method


def _whitened_numpy(v: np.ndarray, center: bool) -> np.ndarray:
    v = v - v.mean() if center else v
    d = squareform(v)
    n = len(d)
    h = np.eye(n) - 1.0 / n
    g = h @ (-d / 2) @ h
    r, c = np.triu_indices(n, 1)
    return np.concatenate([g[r, c] * np.sqrt(2), np.diag(g)])


@pytest.mark.parametrize("method, center", [("whitened_cosine", False), ("whitened_pearson", True)])
def test_whitened_comparisons_are_cosines_of_double_centred_second_moments(method, center):
    """rsatoolbox cosine_cov / corr_cov with identity covariance: G = H(-D/2)H, off-diagonal scaled by sqrt 2."""
    a, b = _pair(4)
    wa, wb = _whitened_numpy(a, center), _whitened_numpy(b, center)
    np.testing.assert_allclose(whitened_vectors(torch.tensor(a[None]), center)[0].numpy(), wa, atol=1e-12)
    expected = wa @ wb / np.linalg.norm(wa) / np.linalg.norm(wb)
    assert compare_rdms(a, b, method) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="scheme='subjects'"):
        compare_rows(torch.tensor(a[None]), torch.tensor(b[None]), method, torch.ones(1, len(a), dtype=T))


def test_a_stack_against_a_stack_gives_every_pair():
    """(k_a, k_b) matrix: entry (i, j) compares a[i] with b[j], not a[j] with b[i]."""
    rng = np.random.default_rng(5)
    a, b = rng.random((3, 10)), rng.random((2, 10))
    out = compare_rdms(a, b, "pearson")
    assert out.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert out[i, j] == pytest.approx(stats.pearsonr(a[i], b[j])[0], abs=1e-12)
    one = compare_rdms(squareform(a[0]), b, "spearman")
    assert one.shape == (1, 2) and one[0, 1] == pytest.approx(stats.spearmanr(a[0], b[1])[0], abs=1e-12)


def test_a_zero_vector_compares_as_zero_not_nan():
    """rsatoolbox's convention: no pattern to compare gives 0."""
    a, b = _pair(6)
    assert compare_rdms(np.zeros_like(a), b, "cosine") == 0.0
    assert compare_rdms(np.full_like(a, 2.0), b, "pearson") == 0.0


# -- weighted multiset statistics (the bootstrap's resampled stimuli) ------------------------------------------------
def _multiset(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.repeat(v, w.astype(int))


def test_pair_weights_are_products_of_stimulus_counts_in_squareform_order():
    counts = torch.tensor([[2, 0, 1, 3], [1, 1, 1, 1]])
    expected = [[0, 2, 6, 0, 0, 3], [1, 1, 1, 1, 1, 1]]
    assert pair_weights(counts, 4).tolist() == expected


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_statistics_equal_them_on_the_materialised_multiset(ties):
    """Every weighted statistic = the plain one on the vector with entry j repeated w_j times."""
    a, b = _pair(7, n=7, ties=ties)
    w = np.random.default_rng(8).integers(0, 4, size=len(a)).astype(float)
    w[:2] = [0.0, 3.0]
    ma, mb = _multiset(a, w), _multiset(b, w)
    x, y, wt = torch.tensor(a[None]), torch.tensor(b[None]), torch.tensor(w[None])
    ranks = weighted_rank(x, wt)[0].numpy()
    np.testing.assert_allclose(_multiset(ranks, w), stats.rankdata(ma), atol=1e-12)
    shared = weighted_rank(torch.tensor(a), wt)[0].numpy()   # one ordering shared by all rows
    np.testing.assert_allclose(_multiset(shared, w), stats.rankdata(ma), atol=1e-12)
    expected = {"pearson": stats.pearsonr(ma, mb)[0], "spearman": stats.spearmanr(ma, mb)[0],
                "kendall_tau_a": _tau_a(ma, mb), "cosine": ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb)}
    for method, value in expected.items():
        assert float(compare_rows(x, y, method, wt)[0]) == pytest.approx(value, abs=1e-12), method


@pytest.mark.parametrize("ties", [False, True])
def test_tau_numerator_without_numba_equals_the_pair_count(monkeypatch, ties):
    """The batched torch Fenwick sweep (GPU path) and the numba sweep both count concordant - discordant pairs."""
    a, b = _pair(9, n=9, ties=ties)
    w = np.random.default_rng(10).integers(0, 3, size=len(a)).astype(float)
    ma, mb = _multiset(a, w), _multiset(b, w)
    expected = _tau_a(ma, mb) * len(ma) * (len(ma) - 1) / 2
    x, y, wt = torch.tensor(a), torch.tensor(b), torch.tensor(np.stack([w, np.ones_like(w)]))
    with_numba = tau_a_numerator(x, y, wt)
    monkeypatch.setattr(rsa, "_numba_sweep", lambda: None)
    torch_sweep = tau_a_numerator(x, y, wt)
    chunked = tau_a_numerator(x, y, wt, max_rows=1)
    for got in (with_numba, torch_sweep, chunked):
        assert float(got[0]) == pytest.approx(expected, abs=1e-9)
        assert float(got[1]) == pytest.approx(_tau_a(a, b) * len(a) * (len(a) - 1) / 2, abs=1e-9)
    assert float(weighted_tau_a(x[None], y[None], wt[:1])[0]) == pytest.approx(_tau_a(ma, mb), abs=1e-12)


def test_methods_have_their_rsatoolbox_aliases():
    a, b = _pair(11)
    for alias, name in [("corr", "pearson"), ("tau-a", "kendall_tau_a"), ("cosine_cov", "whitened_cosine"),
                        ("corr_cov", "whitened_pearson"), ("correlation", "pearson"), ("tau_a", "kendall_tau_a")]:
        assert compare_rdms(a, b, alias) == compare_rdms(a, b, name), alias
    with pytest.raises(ValueError, match="unknown RDM comparison method 'kendall_b'"):
        compare_rdms(a, b, "kendall_b")


def test_condensed_input_is_read_as_is_and_square_input_by_its_upper_triangle():
    v = np.random.default_rng(12).random(10)
    np.testing.assert_array_equal(as_condensed(v).numpy(), v[None])
    np.testing.assert_array_equal(as_condensed(squareform(v)).numpy(), v[None])
    np.testing.assert_array_equal(as_condensed(np.stack([squareform(v)] * 2)).numpy(), np.stack([v, v]))
    assert as_condensed(v).dtype == torch.float64


# -- interventional alignment and lesion specificity (workbench/intervention/scoring.py) -----------------------------
def _sites_case(seed: int, n_sites: int = 3, n_classes: int = 4):
    """Selectivity responses (40 images) and per-image lesion correctness (200 images) of sites of 4 units each."""
    rng = np.random.default_rng(seed)
    sel_labels = np.repeat(np.arange(n_classes), 10)
    x = rng.normal(size=(40, 4 * n_sites)) + 2 * rng.normal(size=(n_classes, 4 * n_sites))[sel_labels]
    sites = [np.arange(4 * k, 4 * k + 4) for k in range(n_sites)]
    eval_labels = np.repeat(np.arange(n_classes), 50)
    lesion = rng.random((n_sites, 200)) > rng.uniform(0.05, 0.6, size=(n_sites, n_classes))[:, eval_labels]
    return x, sel_labels, sites, np.ones(200, bool), lesion, eval_labels, n_classes


def _direct_permutation_p(res: dict, n_permutations: int, seed: int) -> float:
    """(1 + #{permuted statistic >= observed}) / (1 + n), the permutations drawn first from the seeded stream."""
    from workbench.intervention.scoring import profile_correlations

    s, d = np.array(res["selectivity_profiles"]), np.array(res["deficit_profiles"])
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_permutations):
        c = profile_correlations(s, d[rng.permutation(len(s))])
        null.append(c["mean_matched"] - c["mean_mismatched"])
    return (1 + np.sum(np.array(null) >= res["score_above_mismatched"])) / (1 + n_permutations)


def test_permutation_p_is_exactly_the_direct_count_and_nan_without_a_defined_statistic():
    from workbench.intervention import interventional_alignment

    case = _sites_case(1)
    res = interventional_alignment(*case, n_bootstrap=2, n_permutations=40, seed=3)
    assert res["permutation_p"] == _direct_permutation_p(res, 40, 3)
    x, sel_labels, sites, clean, _, eval_labels, n_classes = case
    unharmed = np.ones((3, 200), bool)          # no lesion changes any class: every r is undefined
    flat = interventional_alignment(x, sel_labels, sites, clean, unharmed, eval_labels, n_classes, n_bootstrap=2,
                                    n_permutations=10, seed=0)
    assert np.isnan(flat["permutation_p"]) and np.isnan(flat["score"]) and flat["n_sites_undefined"] == 3


def test_interval_level_is_used_and_both_image_splits_are_resampled():
    """A 50% interval sits inside a 99% one; with deficits fixed by class only the selectivity images vary, with
    responses fixed by class only the evaluation images do: each alone gives intervals of non-zero width."""
    from workbench.intervention import interventional_alignment, lesion_specificity

    case = _sites_case(2)
    narrow = interventional_alignment(*case, n_bootstrap=200, n_permutations=2, seed=1, level=0.5)
    wide = interventional_alignment(*case, n_bootstrap=200, n_permutations=2, seed=1, level=0.99)
    for key in ("score_ci", "score_above_mismatched_ci"):
        assert wide[key][0] < narrow[key][0] < narrow[key][1] < wide[key][1], key
    x, sel_labels, sites, clean, lesion, eval_labels, n_classes = case
    by_class = np.random.default_rng(0).random((3, n_classes)) > 0.5
    fixed_deficits = interventional_alignment(x, sel_labels, sites, clean, by_class[:, eval_labels], eval_labels,
                                              n_classes, n_bootstrap=50, n_permutations=2, seed=0)
    fixed_responses = interventional_alignment(np.random.default_rng(1).normal(size=(n_classes, 12))[sel_labels],
                                               sel_labels, sites, clean, lesion, eval_labels, n_classes,
                                               n_bootstrap=50, n_permutations=2, seed=0)
    for res in (fixed_deficits, fixed_responses):
        assert res["score_ci"][1] - res["score_ci"][0] > 1e-3
    damage = np.random.default_rng(3).random(100)
    target = np.arange(100) < 40
    controls = np.random.default_rng(4).random((3, 100))
    lo = lesion_specificity(damage, controls, target, n_bootstrap=300, seed=0, level=0.5)
    hi = lesion_specificity(damage, controls, target, n_bootstrap=300, seed=0, level=0.99)
    assert hi["specificity_index_ci"][0] < lo["specificity_index_ci"][0] < lo["specificity_index_ci"][1] < \
        hi["specificity_index_ci"][1]


def test_sites_may_be_selections_float_indices_and_single_units():
    from types import SimpleNamespace

    from workbench.intervention import interventional_alignment
    from workbench.intervention.scoring import site_profiles

    d = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(site_profiles(d, [[1], np.array([0.0, 2.0]), SimpleNamespace(units=[3])]),
                                  np.stack([d[:, 1], d[:, [0, 2]].mean(1), d[:, 3]]))
    for bad in ([4], [-1], [1, 4]):
        with pytest.raises(ValueError, match="unit indices outside"):
            site_profiles(d, [bad])
    x, sel_labels, sites, clean, lesion, eval_labels, n_classes = _sites_case(5)
    as_arrays = interventional_alignment(x, sel_labels, sites, clean, lesion, eval_labels, n_classes,
                                         n_bootstrap=3, n_permutations=3)
    as_objects = interventional_alignment(x, sel_labels, [SimpleNamespace(units=s.astype(float)) for s in sites],
                                          clean, lesion, eval_labels, n_classes, n_bootstrap=3, n_permutations=3)
    assert as_objects == as_arrays
    with pytest.raises(ValueError, match=r"lesion_correct must be \(n_sites=3"):
        interventional_alignment(x, sel_labels, sites, clean, lesion[:2], eval_labels, n_classes)


def test_profile_correlation_matrix_and_shape_checks():
    from workbench.intervention.scoring import profile_correlations

    rng = np.random.default_rng(6)
    s, d = rng.random((3, 5)), rng.random((3, 5))
    out = profile_correlations(s, d)
    np.testing.assert_allclose(out["matrix"], [[stats.pearsonr(a, b)[0] for b in d] for a in s], atol=1e-12)
    with pytest.raises(ValueError, match="must both be"):
        profile_correlations(s, d[:, :4])
    with pytest.raises(ValueError, match="at least 3 categories"):
        profile_correlations(s[:, :2], d[:, :2])
    assert not np.isnan(profile_correlations(s[:, :3], d[:, :3])["matrix"]).any()


def test_lesion_specificity_inputs_strata_seed_and_counts():
    from workbench.intervention import lesion_specificity

    rng = np.random.default_rng(7)
    target01 = (np.arange(60) < 20).astype(int)            # a 0/1 target, as a saved label column would be
    damage, controls = rng.random(60), rng.random((1, 60))
    res = lesion_specificity(damage, controls, target01, n_bootstrap=100, seed=0)
    assert res["target_damage_selective"] == pytest.approx(damage[:20].mean())
    assert res["other_damage_selective"] == pytest.approx(damage[20:].mean())
    # strata other than the target change the resamples; with one control the seed acts through the stimuli only
    other = lesion_specificity(damage, controls, target01, strata=np.arange(60) % 3, n_bootstrap=100, seed=0)
    assert other["specificity_index_ci"] != res["specificity_index_ci"]
    assert lesion_specificity(damage, controls, target01, n_bootstrap=100, seed=1)["specificity_index_ci"] != \
        res["specificity_index_ci"]
    with pytest.raises(ValueError, match="shapes do not match"):
        lesion_specificity(damage, controls[:, :50], target01)
    with pytest.raises(ValueError, match="shapes do not match"):
        lesion_specificity(damage, controls, target01[:50])
    with pytest.raises(ValueError, match="some but not all"):
        lesion_specificity(damage, controls, np.zeros(60, bool))


def test_specificity_p_counts_ties_and_the_zero_denominator_fraction():
    """A selective lesion that does exactly what the random one does: index 0 in every resample, p = 1 (ties count).
    Two controls, one without target damage: a resample draws it twice a quarter of the time."""
    from workbench.intervention import lesion_specificity

    rng = np.random.default_rng(9)
    target = np.arange(80) < 30
    damage = rng.random(80)
    assert lesion_specificity(damage, damage[None], target, n_bootstrap=50, seed=0)["p_index_le_0"] == 1.0
    silent = np.where(target, 0.0, rng.random(80))
    res = lesion_specificity(damage, np.stack([silent, rng.random(80)]), target, n_bootstrap=2000, seed=0)
    assert res["ratio_denominator_nonpositive_fraction"] == pytest.approx(0.25, abs=0.03)


def test_each_split_is_resampled_from_the_seeded_stream_and_the_progress_bar_runs():
    """Only the selectivity split varies (deficits fixed by class), or only the evaluation split (responses fixed by
    class): either way a different seed gives a different interval, and progress=True gives the same numbers."""
    from workbench.intervention import interventional_alignment

    x, sel_labels, sites, clean, lesion, eval_labels, n_classes = _sites_case(2)
    by_class = (np.random.default_rng(0).random((3, n_classes)) > 0.5)[:, eval_labels]
    fixed_x = np.random.default_rng(1).normal(size=(n_classes, 12))[sel_labels]
    for case in ((x, sel_labels, sites, clean, by_class), (fixed_x, sel_labels, sites, clean, lesion)):
        cis = [interventional_alignment(*case, eval_labels, n_classes, n_bootstrap=30, n_permutations=2,
                                        seed=seed)["score_ci"] for seed in (1, 2)]
        assert cis[0] != cis[1]
    quiet = interventional_alignment(x, sel_labels, sites, clean, lesion, eval_labels, n_classes, n_bootstrap=5,
                                     n_permutations=2)
    shown = interventional_alignment(x, sel_labels, sites, clean, lesion, eval_labels, n_classes, n_bootstrap=5,
                                     n_permutations=2, progress=True)
    assert shown == quiet


def test_the_interval_above_mismatched_is_of_matched_minus_mismatched():
    """Every site prefers class 0 and every lesion hurts class 0 most: matched and mismatched r are both high, so
    their difference is near 0 and its interval far below their sum (~2)."""
    from workbench.intervention import interventional_alignment

    rng = np.random.default_rng(11)
    n_classes = 4
    sel_labels = np.repeat(np.arange(n_classes), 10)
    x = rng.normal(size=(40, 12)) + 3.0 * (sel_labels == 0)[:, None]
    eval_labels = np.repeat(np.arange(n_classes), 50)
    miss = np.where(eval_labels == 0, 0.9, 0.1)
    lesion = rng.random((3, 200)) > miss
    res = interventional_alignment(x, sel_labels, [np.arange(4 * k, 4 * k + 4) for k in range(3)], np.ones(200, bool),
                                   lesion, eval_labels, n_classes, n_bootstrap=100, n_permutations=2, seed=0)
    assert res["score"] > 0.8 and res["mean_mismatched_r"] > 0.8
    low, high = res["score_above_mismatched_ci"]
    assert low <= res["score_above_mismatched"] <= high < 0.5


def test_scoring_computes_in_float64_whatever_the_input_precision():
    from workbench.intervention import interventional_alignment, lesion_specificity
    from workbench.intervention.scoring import profile_correlations, site_profiles

    rng = np.random.default_rng(12)
    s32, d32 = rng.random((3, 5)).astype(np.float32), rng.random((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(profile_correlations(s32, d32)["matrix"],
                                  profile_correlations(s32.astype(np.float64), d32.astype(np.float64))["matrix"])
    sel32 = rng.random((4, 12)).astype(np.float32)
    np.testing.assert_array_equal(site_profiles(sel32, [[0, 1, 2]]), site_profiles(sel32.astype(np.float64),
                                                                                   [[0, 1, 2]]))
    damage, controls, target = (rng.random(50) / 3).astype(np.float32), rng.random((2, 50)).astype(np.float32), \
        np.arange(50) < 20
    assert lesion_specificity(damage, controls, target, n_bootstrap=20) == \
        lesion_specificity(damage.astype(np.float64), controls.astype(np.float64), target, n_bootstrap=20)
    x, *rest = _sites_case(3)
    x32 = (x / 3).astype(np.float32)
    assert interventional_alignment(x32, *rest, n_bootstrap=3, n_permutations=3) == \
        interventional_alignment(x32.astype(np.float64), *rest, n_bootstrap=3, n_permutations=3)
