"""RSA against rsatoolbox on the real 92-image data: hIT (4 subjects, sessions averaged) and the shipped models."""

import warnings

import numpy as np
import pytest

rsatoolbox = pytest.importorskip("rsatoolbox")
from rsatoolbox.data import Dataset  # noqa: E402
from rsatoolbox.inference import boot_noise_ceiling, eval_bootstrap, eval_bootstrap_pattern, eval_bootstrap_rdm  # noqa: E402
from rsatoolbox.model import ModelFixed  # noqa: E402
from rsatoolbox.rdm import RDMs, calc_rdm, compare  # noqa: E402

from workbench.alignment import (COMPARE_METHODS, RSATOOLBOX_NAMES, bootstrap_rsa, compare_rdms,  # noqa: E402
                                 compute_rdm, noise_ceiling)

TOL = 1e-6


@pytest.fixture(scope="module")
def hit(data_root):
    from workbench.data import load_rdms

    return load_rdms("kriegeskorte2008", region="hIT").mean("session")


@pytest.fixture(scope="module")
def models(data_root):
    from workbench.data import load_model_rdms

    return load_model_rdms()


@pytest.mark.parametrize("method", COMPARE_METHODS)
def test_compare_and_noise_ceiling_equal_rsatoolbox(hit, models, method):
    ours = compare_rdms(models, hit, method)
    ref = compare(RDMs(models.values), RDMs(hit.values), RSATOOLBOX_NAMES[method])
    assert ours.shape == (8, 4)
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_nc = boot_noise_ceiling(RDMs(hit.values), method=RSATOOLBOX_NAMES[method])
    np.testing.assert_allclose(noise_ceiling(hit, method), ref_nc, atol=TOL, rtol=0)


def test_compare_layouts(hit, models):
    a, b = models.values[2], hit.values[0]
    iu = np.triu_indices(92, 1)
    single = compare_rdms(a, b, "kendall_tau_a")
    assert isinstance(single, float)
    assert single == pytest.approx(compare_rdms(a[iu], b[iu], "kendall_tau_a"), abs=1e-12)
    stack = compare_rdms(models.values[:, iu[0], iu[1]], b, "kendall_tau_a")
    assert stack.shape == (8, 1) and stack[2, 0] == pytest.approx(single, abs=1e-12)


def test_a_stack_of_k_condensed_rdms_with_k_pairs_is_read_by_its_layout():
    """Six condensed RDMs of 4 stimuli form a (6, 6) array, the shape of one RDM of 6 stimuli: the layout decides."""
    from scipy.spatial.distance import squareform

    from workbench.alignment import as_condensed

    rng = np.random.default_rng(5)
    stack = rng.random((6, 6)) + 0.1                     # k = 6 condensed RDMs of n = 4 stimuli (P = 6)
    target = rng.random(6)
    with pytest.raises(ValueError, match=r"one 6 x 6 RDM or a stack of 6 condensed RDMs of 4 stimuli.*"
                                         r"layout='condensed'"):
        compare_rdms(stack, target, "pearson")
    scores = compare_rdms(stack, target, "pearson", layout="condensed")
    assert scores.shape == (6, 1)
    np.testing.assert_allclose(scores[:, 0], [np.corrcoef(row, target)[0, 1] for row in stack], atol=1e-12)
    squares = np.stack([squareform(row) for row in stack])
    assert noise_ceiling(stack, "pearson", layout="condensed") == pytest.approx(noise_ceiling(squares, "pearson"))
    # a real 6 x 6 RDM keeps being read as one RDM under "auto", and "square" says so explicitly
    one = squareform(rng.random(15))
    np.testing.assert_array_equal(as_condensed(one).numpy(), squareform(one)[None])
    np.testing.assert_array_equal(as_condensed(one, layout="square").numpy(), squareform(one)[None])
    assert isinstance(compare_rdms(one, one, "pearson", layout="square"), float)
    with pytest.raises(ValueError, match="not symmetric"):
        as_condensed(stack, layout="square")
    with pytest.raises(ValueError, match=r"layout='square' needs \(n, n\)"):
        as_condensed(target, layout="square")
    with pytest.raises(ValueError, match=r"layout='condensed' needs \(P,\) or \(k, P\)"):
        as_condensed(squares, layout="condensed")
    with pytest.raises(ValueError, match="unknown RDM layout 'flat'"):
        as_condensed(stack, layout="flat")


def _rsatoolbox_models(models):
    return [ModelFixed(str(n), RDMs(m[None])) for n, m in zip(models.model.values, models.values)]


@pytest.mark.parametrize("scheme,method", [("stimuli", "kendall_tau_a"), ("stimuli", "spearman"),
                                           ("subjects", "pearson"), ("both", "kendall_tau_a"),
                                           ("both", "cosine")])
def test_bootstrap_equals_rsatoolbox_on_same_indices(hit, models, scheme, method):
    # rsatoolbox draws from numpy's global RNG in the order bootstrap_indices uses, so one seed gives the same
    # resampled subjects/stimuli to both (and so duplicated stimuli, whose self-pairs rsatoolbox drops)
    n = 4
    fn = {"stimuli": eval_bootstrap_pattern, "subjects": eval_bootstrap_rdm, "both": eval_bootstrap}[scheme]
    np.random.seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fn(_rsatoolbox_models(models), RDMs(hit.values), method=RSATOOLBOX_NAMES[method], N=n)
    ours = bootstrap_rsa(models, hit, method, n_bootstrap=n, scheme=scheme, seed=7, progress=False)
    np.testing.assert_allclose(ours.samples, ref.evaluations.reshape(n, -1), atol=TOL, rtol=0)
    np.testing.assert_allclose(ours.ceiling_samples, np.asarray(ref.noise_ceiling).T, atol=TOL, rtol=0)
    if scheme == "stimuli":
        assert (np.bincount(ours.stimulus_indices[0], minlength=92) > 1).any()  # duplicates were exercised


def test_bootstrap_result_intervals(hit, models):
    res = bootstrap_rsa(models, hit, "spearman", n_bootstrap=30, scheme="both", seed=0, progress=False)
    ci = res.ci()
    assert ci.shape == (8, 2) and (ci[:, 0] <= ci[:, 1]).all()
    d = res.difference_ci()
    assert d.shape == (8, 8, 2)
    np.testing.assert_allclose(d[1, 0], -d[0, 1][::-1])
    out = res.to_dict()
    assert out["scores"]["animacy"]["score"] == pytest.approx(compare_rdms(models[0], hit, "spearman").mean())
    assert out["noise_ceiling"]["lower"] < out["noise_ceiling"]["upper"]
    # same seed, same samples
    again = bootstrap_rsa(models, hit, "spearman", n_bootstrap=30, scheme="both", seed=0, progress=False)
    np.testing.assert_array_equal(res.samples, again.samples)


def test_compute_rdm_equals_rsatoolbox():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 30))
    for ours_name, ref_name in [("correlation", "correlation"), ("euclidean", "euclidean")]:
        ref = calc_rdm(Dataset(x), method=ref_name).get_matrices()[0]
        np.testing.assert_allclose(compute_rdm(x, ours_name), ref, atol=1e-10)
    from scipy.spatial.distance import pdist, squareform
    np.testing.assert_allclose(compute_rdm(x, "cosine"), squareform(pdist(x, "cosine")), atol=1e-10)
    reps = rng.normal(size=(3, 12, 30))
    ds = Dataset(reps.reshape(-1, 30), obs_descriptors={"stim": np.tile(np.arange(12), 3),
                                                         "run": np.repeat(np.arange(3), 12)})
    ref = calc_rdm(ds, method="crossnobis", descriptor="stim", cv_descriptor="run").get_matrices()[0]
    np.testing.assert_allclose(compute_rdm(reps, "crossnobis"), ref, atol=1e-10)
    prec = np.linalg.inv(np.cov(rng.normal(size=(100, 30)), rowvar=False))
    ref = calc_rdm(ds, method="crossnobis", descriptor="stim", cv_descriptor="run", noise=prec).get_matrices()[0]
    np.testing.assert_allclose(compute_rdm(reps, "crossnobis", noise_precision=prec), ref, atol=1e-10)


def test_bad_inputs(hit, models):
    with pytest.raises(ValueError, match="different sizes"):
        compare_rdms(models.values[0], hit.values[0][:50, :50])
    bad = hit.values[0].copy()
    bad[3, 5] = bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compare_rdms(models.values[0], bad)
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        compare_rdms(np.array([[0, 1.0], [1.0, 0]]), np.array([[0, 2.0], [2.0, 0]]))
    with pytest.raises(ValueError, match="at least 2 subjects"):
        noise_ceiling(hit.values[:1])
    shuffled = hit.isel(stimulus=slice(None, None, -1), stimulus_b=slice(None, None, -1))
    with pytest.raises(ValueError, match="different stimuli"):
        compare_rdms(models[0], shuffled)
    with pytest.raises(ValueError, match="unknown RDM comparison"):
        compare_rdms(models[0], hit, "kendall_b")
    with pytest.raises(ValueError, match="not symmetric"):
        asym = hit.values[0].copy()
        asym[0, 1] += 1
        compare_rdms(models.values[0], asym)
    with pytest.raises(ValueError, match="scheme='subjects'"):
        bootstrap_rsa(models, hit, "whitened_cosine", n_bootstrap=2, scheme="stimuli", progress=False)
    with pytest.raises(ValueError, match="constant pattern"):
        compute_rdm(np.vstack([np.ones(5), np.arange(5.0), np.arange(5.0)[::-1] ** 2]), "correlation")


def _tied_rdms(rng, k, n, levels):
    """k symmetric n x n RDMs with few distinct values (many ties in every vector and in pooled ranks)."""
    iu = np.triu_indices(n, 1)
    out = np.zeros((k, n, n))
    for i in range(k):
        out[i][iu] = rng.integers(1, levels + 1, size=len(iu[0]))
        out[i] += out[i].T
    return out


@pytest.mark.parametrize("scheme", ["stimuli", "both"])
@pytest.mark.parametrize("method", ["kendall_tau_a", "spearman"])
def test_rank_kernels_equal_rsatoolbox_with_ties(scheme, method):
    # the compiled per-sample kernels (weighted Fenwick sweep, weighted ranks of the pooled subjects) on vectors
    # full of ties, where tie-group handling in the sweeps and in the pooled ranks matters; 135 samples are two
    # full groups of the 64 samples that the tau-a kernel sweeps together, and a partly filled third
    rng = np.random.default_rng(1)
    models, data = _tied_rdms(rng, 3, 9, 3), _tied_rdms(rng, 3, 9, 4)
    n = 135
    fn = {"stimuli": eval_bootstrap_pattern, "both": eval_bootstrap}[scheme]
    np.random.seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fn([ModelFixed(str(i), RDMs(m[None])) for i, m in enumerate(models)], RDMs(data),
                 method=RSATOOLBOX_NAMES[method], N=n)
    ours = bootstrap_rsa(models, data, method, n_bootstrap=n, scheme=scheme, seed=3, progress=False)
    ev = ref.evaluations.reshape(n, -1)
    assert np.array_equal(np.isnan(ours.samples), np.isnan(ev))
    np.testing.assert_allclose(ours.samples, ev, atol=TOL, rtol=0)
    np.testing.assert_allclose(ours.ceiling_samples, np.asarray(ref.noise_ceiling).T, atol=TOL, rtol=0)


@pytest.mark.parametrize("scheme", ["stimuli", "both", "subjects"])
@pytest.mark.parametrize("method", ["kendall_tau_a", "spearman"])
def test_rank_kernels_equal_torch_path(hit, models, monkeypatch, scheme, method):
    import workbench.alignment.inference as inference

    if not inference._rank_kernels.available():
        pytest.skip("numba missing: only the torch path exists")
    fast = bootstrap_rsa(models, hit, method, n_bootstrap=12, scheme=scheme, seed=5, progress=False)
    monkeypatch.setattr(inference, "_use_rank_kernels", lambda *a: False)
    slow = bootstrap_rsa(models, hit, method, n_bootstrap=12, scheme=scheme, seed=5, progress=False)
    np.testing.assert_allclose(fast.samples, slow.samples, atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast.ceiling_samples, slow.ceiling_samples, atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast.noise_ceiling, slow.noise_ceiling, atol=1e-12, rtol=0)


def _tau_a_materialised(x, y, w):
    """Reference: Kendall tau-a (rsatoolbox's definition) of the multiset in which entry p occurs w[p] times,
    written out copy by copy: sum over copy pairs of sign products / number of copy pairs."""
    X, Y = np.repeat(x, w), np.repeat(y, w)
    s = np.sign(X[:, None] - X[None, :]) * np.sign(Y[:, None] - Y[None, :])
    N = len(X)
    return np.triu(s, 1).sum() / (N * (N - 1) / 2)


@pytest.mark.parametrize("lane_type", [np.int16, np.int32])
def test_batched_tau_kernel_equals_materialised_multiset(lane_type):
    # model_tau_a sweeps up to LANES samples at once (int16 lanes up to 256 stimuli, int32 beyond); check every
    # sample of several lane groups, the last one partly filled, on vectors with many ties and on continuous ones
    from workbench.alignment import _rank_kernels as rk

    if not rk.available():
        pytest.skip("numba missing")
    rng = np.random.default_rng(4)
    n = 14
    ii, jj = (np.ascontiguousarray(a, dtype=np.int64) for a in np.triu_indices(n, 1))
    P = len(ii)
    vecs = [rng.integers(0, 3, P).astype(float), rng.integers(0, 6, P).astype(float), rng.normal(size=P),
            rng.normal(size=P)]
    plans = [rk.sort_plan(v) for v in vecs]
    orders, starts, dense = (np.stack([p[i] for p in plans]) for i in range(3))
    G = np.array([p[3] for p in plans], dtype=np.int64)
    oidx, fidx = np.array([0, 2, 1, 3, 2]), np.array([1, 0, 3, 2, 3])  # ties in the sweep order and in the tree
    B = 2 * rk.LANES + 5
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(B)]).astype(np.int64)
    L = rk.LANES
    got = rk._model_tau_a(counts, ii, jj, orders, starts, dense, G, oidx, fidx, np.zeros((P, L), lane_type),
                          np.empty((G.max() + 1, L), lane_type), np.empty((G.max(), L), lane_type),
                          np.empty(L, lane_type), np.empty(L, lane_type))
    assert got.shape == (B, len(oidx))
    for b in range(B):
        w = counts[b, ii] * counts[b, jj]
        want = [_tau_a_materialised(vecs[o], vecs[f], w) for o, f in zip(oidx, fidx)]
        np.testing.assert_allclose(got[b], want, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(rk.model_tau_a(counts, ii, jj, orders, starts, dense, G, oidx, fidx), got)


def test_radix_sorted_groups_equal_stable_argsort():
    from workbench.alignment import _rank_kernels as rk

    if not rk.available():
        pytest.skip("numba missing")
    rng = np.random.default_rng(2)
    for top in (1, 200, 70000, 2 ** 40):  # one to six 8-bit passes, and all-zero input
        x = rng.integers(0, top, 500).astype(np.int64)
        order, starts = np.empty(500, np.int64), np.empty(500, np.bool_)
        rk._sorted_groups(x, order, starts, np.empty(500, np.int64), np.empty(256, np.int64))
        np.testing.assert_array_equal(order, np.argsort(x, kind="stable"))
        np.testing.assert_array_equal(starts, np.r_[True, np.diff(x[order]) != 0])


@pytest.mark.parametrize("method", ["kendall_tau_a", "spearman"])
def test_rank_kernels_in_threads_equal_one_thread(hit, models, monkeypatch, method):
    # enough samples for several lane groups per thread; three threads split them at lane-group boundaries
    import workbench.alignment.inference as inference

    if not inference._rank_kernels.available():
        pytest.skip("numba missing")
    monkeypatch.setattr(inference._rank_kernels, "n_threads", lambda: 1)
    one = bootstrap_rsa(models, hit, method, n_bootstrap=300, scheme="both", seed=2, progress=False)
    monkeypatch.setattr(inference._rank_kernels, "n_threads", lambda: 3)
    three = bootstrap_rsa(models, hit, method, n_bootstrap=300, scheme="both", seed=2, progress=False)
    np.testing.assert_array_equal(one.samples, three.samples)
    np.testing.assert_array_equal(one.ceiling_samples, three.ceiling_samples)
    assert np.isfinite(one.samples).all()


def test_rank_kernels_compile_without_a_writable_cache(monkeypatch):
    # numba raises at decoration ("no locator available") when it can write neither __pycache__ next to the file
    # nor its user-wide cache dir (a read-only install): the kernels must then compile uncached, with one warning
    import importlib.util

    from workbench.alignment import _rank_kernels as rk

    if not rk.available():
        pytest.skip("numba missing")
    from numba.core import caching

    cache_impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # _CacheImpl in older numba
    monkeypatch.setattr(cache_impl, "_locator_classes", [])  # as if no cache location were writable
    monkeypatch.setattr(caching.config, "CACHE_LOCATOR_CLASSES", "", raising=False)
    spec = importlib.util.spec_from_file_location("_rank_kernels_uncached", rk.__file__)
    uncached = importlib.util.module_from_spec(spec)
    with pytest.warns(RuntimeWarning, match="cannot cache.*NUMBA_CACHE_DIR") as caught:
        spec.loader.exec_module(uncached)
    assert len([w for w in caught if "cannot cache" in str(w.message)]) == 1
    c, ii, jj = np.array([1, 2, 3]), np.array([0, 0, 1]), np.array([1, 2, 2])
    w = np.empty(3, np.int64)
    assert uncached._pair_weights(c, ii, jj, w) == 11 and w.tolist() == [2, 3, 6]
    assert isinstance(uncached._pair_weights._cache, caching.NullCache)
    assert isinstance(rk._pair_weights._cache, caching.FunctionCache)  # the installed module does cache
