"""Compiled (numba) kernels for the stimulus bootstrap of rank-based RSA (Kendall tau-a, Spearman).

A stimulus-bootstrap sample with stimulus counts c gives the condensed RDM whose pair p = (i, j) occurs
w_p = c_i * c_j times (a stimulus paired with its own copy is dropped, as rsatoolbox does). So for every sample the
vectors being compared are fixed and only the integer weights w change:

* Kendall tau-a of the materialised multiset = sum_{p<q} w_p w_q sign(x_p - x_q) sign(y_p - y_q) / (n(n-1)/2),
  n = sum_p w_p (copies of one pair are tied in both vectors and only count in n). The numerator is swept in
  O(P log P): entries in x order, tie groups of x queried before they are inserted, a Fenwick tree over the dense
  ranks of y holds the weight seen so far (strictly smaller y: concordant, strictly larger: discordant).
  Model scores compare fixed vectors, so the sweep order and the tree positions are the same in every sample:
  ``model_tau_a`` sweeps ``LANES`` samples at once, each tree node holding one weight per sample (the inner loops
  over the lanes compile to SIMD instructions), with no per-sample sorting or compaction.
* Ranks of the multiset (scipy ``rankdata``, ties averaged) are 2 * rank = 2 * (weight strictly below) +
  (weight of the tie group) + 1, integers, so pooled (summed) ranks and their ties are exact. The noise ceiling's
  pooled vectors change from sample to sample; being small non-negative integers, they are sorted by radix sort.

All counting is in integers (no fastmath), so the numbers equal the direct formulas exactly. The kernels are
serial and release the GIL; ``in_threads`` runs them on chunks of samples in threads (one per core), which
avoids numba's parallel runtime (slow to compile and ~2 s to start in every process). Compiled kernels are
cached on disk (``cache=True``, in ``__pycache__`` or numba's user-wide cache dir; see ``_kernel``).
``available()`` is False when numba is missing; callers then use the torch implementation.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - the torch path is used instead
    njit = None

# Bootstrap samples per batched tau-a sweep. Lane loops of this length vectorise (LLVM checks aliasing once per
# loop) and the tree (P x LANES int16, ~0.5 MB for 92 stimuli) stays in the L2/L3 cache; 8 lanes ran 4x slower
# per sample, 128 no faster.
LANES = 64


def available() -> bool:
    return njit is not None


def _kernel(fn):
    """``njit(cache=True, nogil=True)``: compiled once, then loaded from numba's disk cache in later processes (the
    tiny preset would otherwise pay the compilation, several seconds, on every run). numba refuses ``cache=True``
    at decoration with a RuntimeError when it finds no writable cache location (neither ``__pycache__`` next to
    this file nor its user-wide cache dir): then the kernels compile in every process instead of failing the
    import."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError as err:  # "cannot cache function ...: no locator available for file ..."
        if "no locator available" not in str(err):
            raise
        global _warned_no_cache
        if not _warned_no_cache:  # once per process, not once per kernel
            _warned_no_cache = True
            warnings.warn(f"numba cannot cache the RSA bootstrap kernels ({err}); they compile in every process. "
                          "Set NUMBA_CACHE_DIR to a writable directory to cache them.", RuntimeWarning, stacklevel=2)
        return njit(nogil=True)(fn)


_warned_no_cache = False


def n_threads() -> int:
    """Threads for the kernels: numba's setting (NUMBA_NUM_THREADS / numba.set_num_threads), else the cores."""
    try:
        import numba

        return max(1, int(numba.get_num_threads()))
    except ImportError:  # pragma: no cover
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def in_threads(kernel, *args, split: int = 1) -> np.ndarray:
    """``kernel(*args)`` with the rows of the first ``split`` arguments (one row per sample; C-contiguous, so the
    row chunks are too and the kernel compiles once) split over ``n_threads()`` threads, in chunks of whole
    ``LANES`` groups; the results are concatenated in order."""
    B = args[0].shape[0]
    k = min(n_threads(), B // LANES)  # at least one whole lane group per thread
    if k <= 1:
        return kernel(*args)
    bounds = [min(B, -(-B * i // k) // LANES * LANES) for i in range(k + 1)]
    bounds[-1] = B
    chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def run(ab):
        return kernel(*(x[ab[0]:ab[1]] for x in args[:split]), *args[split:])

    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(run, chunks))
    return np.concatenate(parts)


def sort_plan(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For a vector (P,): stable argsort, tie-group starts in that order, dense ranks (0-based), #distinct."""
    order = np.argsort(v, kind="stable")
    vs = v[order]
    starts = np.ones(len(v), dtype=np.bool_)
    starts[1:] = vs[1:] != vs[:-1]
    dense = np.empty(len(v), dtype=np.int64)
    dense[order] = np.cumsum(starts) - 1
    return order.astype(np.int64), starts, dense, int(dense.max()) + 1


if njit is not None:
    @_kernel
    def _pair_weights(c, ii, jj, w):  # pragma: no cover - compiled
        """w[p] = c[ii[p]] * c[jj[p]] (the multiplicity of stimulus pair p); returns sum(w)."""
        n = 0
        for p in range(ii.shape[0]):
            w[p] = c[ii[p]] * c[jj[p]]
            n += w[p]
        return n

    @_kernel
    def _sweep(order, starts, frank, G, w, tree):  # pragma: no cover - compiled
        """sum_{p<q} w_p w_q sign(x_p - x_q) sign(y_p - y_q): ``order`` lists entries by x (may be a subset),
        ``starts`` marks x tie groups in that order, ``frank`` the dense rank of y (0..G-1). ``tree``: >= 2G + 1
        slots (a Fenwick tree over ranks, then the weight at each rank)."""
        for i in range(2 * G + 1):
            tree[i] = 0
        total = 0
        acc = 0
        L = order.shape[0]
        j = 0
        while j < L:
            k = j + 1
            while k < L and not starts[k]:
                k += 1
            for t in range(j, k):
                e = order[t]
                we = w[e]
                if we == 0:
                    continue
                r = frank[e]
                i = r
                lt = 0
                while i > 0:
                    lt += tree[i]
                    i &= i - 1
                acc += we * (2 * lt + tree[G + 1 + r] - total)  # lt - (total - lt - weight at rank r)
            for t in range(j, k):
                e = order[t]
                we = w[e]
                if we == 0:
                    continue
                r = frank[e]
                tree[G + 1 + r] += we
                i = r + 1
                while i <= G:
                    tree[i] += we
                    i += i & (-i)
                total += we
            j = k
        return acc

    @_kernel
    def sweep_rows(rxs, ws, earlier, n_active, P):  # pragma: no cover - compiled
        """The Fenwick sweep of ``rsa.tau_a_numerator``, one row at a time: entries already in (y, x) order with
        x ranks rxs, weights ws (float) and the weight before each (earlier); the first n_active[row] entries of
        a row are present. Returns per row sum_j w_j (weight before with smaller x - with larger x)."""
        out = np.zeros(rxs.shape[0])
        tree = np.empty(P + 1)
        for row in range(rxs.shape[0]):
            tree[:] = 0.0
            acc = 0.0
            for j in range(n_active[row]):
                rank = rxs[row, j]
                i = rank
                lt = 0.0
                while i > 0:
                    lt += tree[i]
                    i &= i - 1
                i = rank + 1
                le = 0.0
                while i > 0:
                    le += tree[i]
                    i &= i - 1
                wj = ws[row, j]
                acc += wj * (lt - (earlier[row, j] - le))
                i = rank + 1
                while i <= P:
                    tree[i] += wj
                    i += i & (-i)
            out[row] = acc
        return out

    @_kernel
    def _sweep_lanes(order, starts, frank, G, Wl, tree, eq, lt, total, acc):  # pragma: no cover - compiled
        """``_sweep`` for L weight vectors at once. Wl: (P, L) weights (entry, sample), int16 or int32 (sums of
        weights must fit); tree: (>= G + 1, L) Fenwick tree over the ranks of y; eq: (>= G, L) weight at each
        rank; lt, total: (L,) scratch of the same type. Writes the L numerators to acc (int64)."""
        L = Wl.shape[1]
        for i in range(G + 1):  # the arrays may be longer (sized for the largest G)
            for s in range(L):
                tree[i, s] = 0
        for i in range(G):
            for s in range(L):
                eq[i, s] = 0
        for s in range(L):
            total[s] = 0
            acc[s] = 0
        P = order.shape[0]
        j = 0
        while j < P:
            k = j + 1
            while k < P and not starts[k]:
                k += 1
            for t in range(j, k):  # a tie group of x is queried before any of it is inserted
                e = order[t]
                r = frank[e]
                for s in range(L):
                    lt[s] = 0
                i = r
                while i > 0:
                    for s in range(L):
                        lt[s] += tree[i, s]
                    i &= i - 1
                for s in range(L):
                    acc[s] += np.int64(Wl[e, s]) * (2 * np.int64(lt[s]) + eq[r, s] - total[s])
            for t in range(j, k):
                e = order[t]
                r = frank[e]
                for s in range(L):
                    eq[r, s] += Wl[e, s]
                    total[s] += Wl[e, s]
                i = r + 1
                while i <= G:
                    for s in range(L):
                        tree[i, s] += Wl[e, s]
                    i += i & (-i)
            j = k

    @_kernel
    def _model_tau_a(counts, ii, jj, orders, starts, dense, G, oidx, fidx, Wl, tree, eq, lt, total
                     ):  # pragma: no cover - compiled
        """``model_tau_a`` with its lane buffers (see there): Wl (P, L); tree (max G + 1, L); eq (max G, L);
        lt, total (L,), all of the lane type."""
        B = counts.shape[0]
        P = ii.shape[0]
        C = oidx.shape[0]
        L = Wl.shape[1]
        out = np.empty((B, C))
        acc = np.empty(L, dtype=np.int64)
        w = np.empty(P, dtype=np.int64)
        den = np.empty(L)
        for b0 in range(0, B, L):
            m = min(L, B - b0)
            Wl[:] = 0
            for s in range(m):
                n = _pair_weights(counts[b0 + s], ii, jj, w)
                den[s] = n * (n - 1) / 2
                for p in range(P):
                    Wl[p, s] = w[p]
            for c in range(C):
                k = oidx[c]
                f = fidx[c]
                _sweep_lanes(orders[k], starts[k], dense[f], G[f], Wl, tree, eq, lt, total, acc)
                for s in range(m):
                    out[b0 + s, c] = min(1.0, max(-1.0, acc[s] / den[s])) if den[s] > 0 else np.nan
        return out


def model_tau_a(counts: np.ndarray, ii: np.ndarray, jj: np.ndarray, orders: np.ndarray, starts: np.ndarray,
                dense: np.ndarray, G: np.ndarray, oidx: np.ndarray, fidx: np.ndarray) -> np.ndarray:
    """Tau-a of C fixed vector pairs in B bootstrap samples. counts: (B, n) int64 stimulus counts; ii, jj: (P,)
    the stimuli of each condensed entry; orders/starts/dense/G: sort plans of K vectors (``sort_plan``);
    comparison c sweeps in the order of vector oidx[c] with a Fenwick tree over the ranks of vector fidx[c].
    Returns (B, C); a sample with fewer than two pairs gets NaN.

    Up to ``LANES`` samples share a sweep. A tree node holds at most the total weight, sum_p w_p <= P (all
    stimuli once), so for P < 2^15 (up to 256 stimuli) the lanes are int16, twice as many per SIMD register."""
    B, P = counts.shape[0], ii.shape[0]
    lane_type = np.int16 if P < 2 ** 15 else np.int32
    L = min(LANES, -(-B // 8) * 8)
    Gmax = int(G.max())
    return _model_tau_a(counts, ii, jj, orders, starts, dense, G, oidx, fidx, np.zeros((P, L), lane_type),
                        np.empty((Gmax + 1, L), lane_type), np.empty((Gmax, L), lane_type),
                        np.empty(L, lane_type), np.empty(L, lane_type))


if njit is not None:
    @_kernel
    def _present_ranks(order, starts, w, pos, t2, g):  # pragma: no cover - compiled
        """One pass over a vector's sort plan in a sample with pair weights w: for each entry present (w > 0), at
        its compact position pos[e], 2 * its average rank in the weighted multiset (t2) and its dense rank among
        the present entries (g). Returns the number of distinct present values."""
        P = order.shape[0]
        before = 0
        n_groups = 0
        j = 0
        while j < P:
            k = j + 1
            gw = w[order[j]]
            while k < P and not starts[k]:
                gw += w[order[k]]
                k += 1
            if gw > 0:
                r2 = 2 * before + gw + 1
                for t in range(j, k):
                    e = order[t]
                    if w[e] != 0:
                        t2[pos[e]] = r2
                        g[pos[e]] = n_groups
                n_groups += 1
                before += gw
            j = k
        return n_groups

    @_kernel
    def _ranks2(order, starts, w, out):  # pragma: no cover - compiled
        """2 * average rank of each entry in the weighted multiset (entries of weight 0 get an unused value)."""
        P = order.shape[0]
        before = 0
        j = 0
        while j < P:
            k = j + 1
            gw = w[order[j]]
            while k < P and not starts[k]:
                gw += w[order[k]]
                k += 1
            r2 = 2 * before + gw + 1
            for t in range(j, k):
                out[order[t]] = r2
            before += gw
            j = k

    @_kernel
    def _wpearson(x, y, w):  # pragma: no cover - compiled
        sw = 0.0
        sx = 0.0
        sy = 0.0
        for p in range(x.shape[0]):
            if w[p] != 0:
                sw += w[p]
                sx += w[p] * x[p]
                sy += w[p] * y[p]
        mx = sx / sw
        my = sy / sw
        sxy = 0.0
        sxx = 0.0
        syy = 0.0
        for p in range(x.shape[0]):
            if w[p] != 0:
                dx = x[p] - mx
                dy = y[p] - my
                sxy += w[p] * dx * dy
                sxx += w[p] * dx * dx
                syy += w[p] * dy * dy
        den = np.sqrt(sxx) * np.sqrt(syy)
        return sxy / den if den > 0 else 0.0

    @_kernel
    def _compact_sample(c, ii, jj, w, pos, wc):  # pragma: no cover - compiled
        """Pair weights w of a sample, the compact position pos[e] of each present entry (in entry order) and the
        compact weights wc; returns (number present, total weight)."""
        n = _pair_weights(c, ii, jj, w)
        na = 0
        for p in range(w.shape[0]):
            if w[p] != 0:
                pos[p] = na
                wc[na] = w[p]
                na += 1
        return na, n

    @_kernel
    def model_spearman(counts, ii, jj, m_orders, m_starts, d_orders, d_starts):  # pragma: no cover - compiled
        """Spearman of M model x S subject vectors in B bootstrap samples (weighted ranks, weighted Pearson over
        the present entries). counts: (B, n) int64; ii, jj: (P,). Returns (B, M, S)."""
        B = counts.shape[0]
        P = ii.shape[0]
        M = m_orders.shape[0]
        S = d_orders.shape[0]
        out = np.empty((B, M, S))
        w = np.empty(P, dtype=np.int64)
        pos = np.empty(P, dtype=np.int64)
        wc = np.empty(P, dtype=np.int64)
        t2 = np.empty(P, dtype=np.int64)
        g = np.empty(P, dtype=np.int64)
        xm = np.empty((M, P))
        xs = np.empty((S, P))
        for b in range(B):
            na, _ = _compact_sample(counts[b], ii, jj, w, pos, wc)
            for m in range(M):
                _present_ranks(m_orders[m], m_starts[m], w, pos, t2, g)
                for t in range(na):
                    xm[m, t] = t2[t]
            for s in range(S):
                _present_ranks(d_orders[s], d_starts[s], w, pos, t2, g)
                for t in range(na):
                    xs[s, t] = t2[t]
            for m in range(M):
                for s in range(S):
                    out[b, m, s] = _wpearson(xm[m, :na], xs[s, :na], wc[:na])
        return out

    @_kernel
    def _sorted_groups(x, order, starts, buf, count):  # pragma: no cover - compiled
        """order: a stable argsort of the non-negative integers x (LSD radix sort, 8 bits a pass); starts: True
        where a new value begins in that order. buf: scratch of the length of x; count: 256 slots."""
        L = x.shape[0]
        top = 0
        for t in range(L):
            order[t] = t
            top = max(top, x[t])
        shift = 0
        while (top >> shift) > 0:
            count[:] = 0
            for t in range(L):
                count[(x[order[t]] >> shift) & 255] += 1
            start = 0
            for d in range(256):
                start += count[d]
                count[d] = start - count[d]
            for t in range(L):
                d = (x[order[t]] >> shift) & 255
                buf[count[d]] = order[t]
                count[d] += 1
            for t in range(L):  # copying back compiles faster than swapping the two arrays
                order[t] = buf[t]
            shift += 8
        starts[0] = True
        for t in range(1, L):
            starts[t] = x[order[t]] != x[order[t - 1]]

    @_kernel
    def _pooled_orders(c, d, ii, jj, d_orders, d_starts, w, pos, wc, t2, gr, Gs, x_all, x, orders, starts, buf,
                       count):  # pragma: no cover - compiled
        """One sample of the noise ceiling (stimulus counts c, subject counts d), over its present entries
        (compact positions; weights wc): each subject's 2 * weighted ranks t2[s], dense ranks gr[s] (Gs[s]
        values), and the sort order (orders, starts) of the pooled vector (rsatoolbox pool_rdm: the mean of the
        subjects' ranks; here the sum, which orders the same) of all subjects (row S) and, when two or more
        subjects are present, of all but subject s (row s, for the subjects present). Returns (present entries,
        total weight). The other arguments are scratch (see ``_ceiling_scratch``)."""
        S = d.shape[0]
        na, n = _compact_sample(c, ii, jj, w, pos, wc)
        n_present = 0
        for s in range(S):
            Gs[s] = _present_ranks(d_orders[s], d_starts[s], w, pos, t2[s], gr[s])
            if d[s] != 0:
                n_present += 1
        for t in range(na):
            tot = 0
            for s in range(S):
                tot += d[s] * t2[s, t]
            x_all[t] = tot
        _sorted_groups(x_all[:na], orders[S, :na], starts[S, :na], buf[:na], count)
        for s in range(S):
            if d[s] != 0 and n_present > 1:
                for t in range(na):
                    x[t] = x_all[t] - d[s] * t2[s, t]
                _sorted_groups(x[:na], orders[s, :na], starts[s, :na], buf[:na], count)
        return na, n

    @_kernel
    def _ceiling_tau_a(counts, D, ii, jj, d_orders, d_starts, w, pos, wc, t2, gr, Gs, x_all, x, orders, starts,
                       buf, count):  # pragma: no cover - compiled
        B, P, S = counts.shape[0], ii.shape[0], D.shape[1]
        tree = np.empty(2 * P + 1, dtype=np.int64)
        out = np.empty((B, 2))
        for b in range(B):
            na, n = _pooled_orders(counts[b], D[b], ii, jj, d_orders, d_starts, w, pos, wc, t2, gr, Gs, x_all,
                                   x, orders, starts, buf, count)
            den = n * (n - 1) / 2
            lower, upper, n_present = 0.0, 0.0, 0
            for s in range(S):
                n_present += D[b, s] != 0
            for s in range(S):
                if D[b, s] != 0:
                    v = _sweep(orders[S, :na], starts[S, :na], gr[s], Gs[s], wc[:na], tree) / den
                    upper += min(1.0, max(-1.0, v))
                    if n_present > 1:
                        v = _sweep(orders[s, :na], starts[s, :na], gr[s], Gs[s], wc[:na], tree) / den
                        lower += min(1.0, max(-1.0, v))
            out[b, 1] = upper / n_present
            out[b, 0] = lower / n_present if n_present > 1 else out[b, 1]
        return out

    @_kernel
    def _ceiling_spearman(counts, D, ii, jj, d_orders, d_starts, w, pos, wc, t2, gr, Gs, x_all, x, orders,
                          starts, buf, count):  # pragma: no cover - compiled
        B, P, S = counts.shape[0], ii.shape[0], D.shape[1]
        rx2 = np.empty(P, dtype=np.int64)
        fx, ft = np.empty((S + 1, P)), np.empty(P)
        out = np.empty((B, 2))
        for b in range(B):
            na, _ = _pooled_orders(counts[b], D[b], ii, jj, d_orders, d_starts, w, pos, wc, t2, gr, Gs, x_all,
                                   x, orders, starts, buf, count)
            n_present = 0
            for s in range(S):
                n_present += D[b, s] != 0
            for k in range(S + 1):  # the pooled vectors' weighted ranks
                if k == S or (D[b, k] != 0 and n_present > 1):
                    _ranks2(orders[k, :na], starts[k, :na], wc[:na], rx2)
                    for t in range(na):
                        fx[k, t] = rx2[t]
            lower, upper = 0.0, 0.0
            for s in range(S):
                if D[b, s] != 0:
                    for t in range(na):
                        ft[t] = t2[s, t]
                    upper += _wpearson(fx[S, :na], ft[:na], wc[:na])
                    if n_present > 1:
                        lower += _wpearson(fx[s, :na], ft[:na], wc[:na])
            out[b, 1] = upper / n_present
            out[b, 0] = lower / n_present if n_present > 1 else out[b, 1]
        return out


def _ceiling_scratch(P: int, S: int) -> tuple[np.ndarray, ...]:
    """Buffers of ``_pooled_orders`` after its first six arguments: w, pos, wc (P,); t2, gr (S, P); Gs (S,);
    x_all, x (P,); orders, starts (S + 1, P); buf (P,); count (256,)."""
    i64 = np.int64
    return (np.empty(P, i64), np.empty(P, i64), np.empty(P, i64), np.empty((S, P), i64), np.empty((S, P), i64),
            np.empty(S, i64), np.empty(P, i64), np.empty(P, i64), np.empty((S + 1, P), i64),
            np.empty((S + 1, P), np.bool_), np.empty(P, i64), np.empty(256, i64))


def ceiling_tau_a(counts: np.ndarray, D: np.ndarray, ii: np.ndarray, jj: np.ndarray, d_orders: np.ndarray,
                  d_starts: np.ndarray) -> np.ndarray:
    """rsatoolbox boot_noise_ceiling for tau-a on B samples. counts: (B, n) int64 stimulus counts; D: (B, S)
    subject counts; ii, jj: (P,); d_*: sort plans of the subject vectors. Lower bound: tau-a of each subject with
    the pooled RDM of the others (all copies of the subject left out), upper: with the pooled RDM of all. Returns
    (B, 2) = (lower, upper), each the mean over the subjects present (lower = upper when only one is)."""
    return _ceiling_tau_a(counts, D, ii, jj, d_orders, d_starts, *_ceiling_scratch(ii.shape[0], D.shape[1]))


def ceiling_spearman(counts: np.ndarray, D: np.ndarray, ii: np.ndarray, jj: np.ndarray, d_orders: np.ndarray,
                     d_starts: np.ndarray) -> np.ndarray:
    """``ceiling_tau_a`` for Spearman: the pooled vector's weighted ranks against the subject's, weighted Pearson
    over the present entries."""
    return _ceiling_spearman(counts, D, ii, jj, d_orders, d_starts, *_ceiling_scratch(ii.shape[0], D.shape[1]))
