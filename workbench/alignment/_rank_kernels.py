"""Compiled (numba) kernels for the stimulus bootstrap of rank-based RSA (Kendall tau-a, Spearman).

A stimulus-bootstrap sample with stimulus counts c gives the condensed RDM whose pair p = (i, j) occurs
w_p = c_i * c_j times (a stimulus paired with its own copy is dropped, as rsatoolbox does). So for every sample the
vectors being compared are fixed and only the integer weights w change:

* Kendall tau-a of the materialised multiset = sum_{p<q} w_p w_q sign(x_p - x_q) sign(y_p - y_q) / (n(n-1)/2),
  n = sum_p w_p (copies of one pair are tied in both vectors and only count in n). The numerator is swept in
  O(P log P): entries in x order, tie groups of x queried before they are inserted, a Fenwick tree over the dense
  ranks of y holds the weight seen so far (strictly smaller y: concordant, strictly larger: discordant).
* Ranks of the multiset (scipy ``rankdata``, ties averaged) are 2 * rank = 2 * (weight strictly below) +
  (weight of the tie group) + 1, integers, so pooled (summed) ranks and their ties are exact.

All kernels run one bootstrap sample per ``prange`` iteration. ``available()`` is False when numba is missing;
callers then use the torch implementation.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - the torch path is used instead
    njit = prange = None


def available() -> bool:
    return njit is not None


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
    @njit(cache=True, nogil=True)
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

    @njit(cache=True, nogil=True)
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

    @njit(cache=True, nogil=True)
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

    @njit(cache=True, nogil=True)
    def _compact(order, starts, w, out_order, out_starts, out_rank):  # pragma: no cover - compiled
        """The entries of weight > 0 in ``order``, their tie-group starts and their dense ranks among them; returns
        (how many entries, how many distinct values)."""
        j = 0
        g = -1
        pending = False
        for t in range(order.shape[0]):
            if starts[t]:
                pending = True
            e = order[t]
            if w[e] != 0:
                if pending or j == 0:
                    g += 1
                out_order[j] = e
                out_starts[j] = pending or j == 0
                out_rank[e] = g
                pending = False
                j += 1
        return j, g + 1

    @njit(cache=True, parallel=True)
    def model_tau_a(W, orders, starts, oidx, fidx):  # pragma: no cover - compiled
        """Tau-a of C fixed vector pairs under B weight vectors. W: (B, P) int64; orders/starts: (K, P) sort plans
        of the K vectors; comparison c sweeps in the order of vector oidx[c] with a Fenwick tree over the ranks of
        vector fidx[c] (ranks among the entries present in the sample). Returns (B, C)."""
        B, P = W.shape
        C = oidx.shape[0]
        K = orders.shape[0]
        out = np.empty((B, C))
        for b in prange(B):
            ao = np.empty((K, P), dtype=np.int64)
            ast = np.empty((K, P), dtype=np.bool_)
            ark = np.empty((K, P), dtype=np.int64)
            G = np.empty(K, dtype=np.int64)
            w = W[b]
            n = 0
            for p in range(P):
                n += w[p]
            na = 0
            for k in range(K):
                na, G[k] = _compact(orders[k], starts[k], w, ao[k], ast[k], ark[k])
            tree = np.zeros(2 * G.max() + 1, dtype=np.int64)
            den = n * (n - 1) / 2
            for c in range(C):
                k = oidx[c]
                f = fidx[c]
                v = _sweep(ao[k, :na], ast[k, :na], ark[f], G[f], w, tree) / den
                out[b, c] = min(1.0, max(-1.0, v))
        return out

    @njit(cache=True, parallel=True)
    def model_spearman(W, m_orders, m_starts, d_orders, d_starts):  # pragma: no cover - compiled
        """Spearman of M model x S subject vectors under B weight vectors (weighted ranks, weighted Pearson).
        Returns (B, M, S)."""
        B, P = W.shape
        M = m_orders.shape[0]
        S = d_orders.shape[0]
        out = np.empty((B, M, S))
        for b in prange(B):
            w = W[b]
            rm = np.empty((M, P), dtype=np.int64)
            rs = np.empty((S, P), dtype=np.int64)
            for m in range(M):
                _ranks2(m_orders[m], m_starts[m], w, rm[m])
            for s in range(S):
                _ranks2(d_orders[s], d_starts[s], w, rs[s])
            xm = rm.astype(np.float64)
            xs = rs.astype(np.float64)
            for m in range(M):
                for s in range(S):
                    out[b, m, s] = _wpearson(xm[m], xs[s], w)
        return out

    @njit(cache=True, parallel=True)
    def ceiling_rank(W, D, d_orders, d_starts, spearman):  # pragma: no cover - compiled
        """rsatoolbox boot_noise_ceiling for tau-a (spearman=False) or Spearman on B samples. W: (B, P) int64 pair
        weights; D: (B, S) subject counts; d_*: sort plans of the subject vectors. Subjects are pooled as the mean of
        their weighted ranks (pool_rdm); lower bound: pooled without the subject (all its copies), upper: all.
        Returns (B, 2) = (lower, upper), each the mean over the subjects present."""
        B, P = W.shape
        S = D.shape[1]
        out = np.empty((B, 2))
        for b in prange(B):
            w = W[b]
            d = D[b]
            tree = np.zeros(2 * P + 1, dtype=np.int64)
            T2 = np.empty((S, P), dtype=np.int64)
            crank = np.empty((S, P), dtype=np.int64)  # dense ranks among the entries present in the sample
            cG = np.empty(S, dtype=np.int64)
            buf_o = np.empty(P, dtype=np.int64)
            buf_s = np.empty(P, dtype=np.bool_)
            for s in range(S):
                _ranks2(d_orders[s], d_starts[s], w, T2[s])
                _, cG[s] = _compact(d_orders[s], d_starts[s], w, buf_o, buf_s, crank[s])
            na = 0
            n = 0
            for p in range(P):
                if w[p] != 0:
                    na += 1
                    n += w[p]
            act = np.empty(na, dtype=np.int64)
            k = 0
            for p in range(P):
                if w[p] != 0:
                    act[k] = p
                    k += 1
            tot = np.zeros(P, dtype=np.int64)
            for s in range(S):
                if d[s] != 0:
                    for p in range(P):
                        tot[p] += d[s] * T2[s, p]
            n_present = 0
            first = -1
            for s in range(S):
                if d[s] != 0:
                    n_present += 1
                    if first < 0:
                        first = s
            den = n * (n - 1) / 2
            x = np.empty(na, dtype=np.int64)
            xs = np.empty(na, dtype=np.int64)
            st = np.empty(na, dtype=np.bool_)
            rx2 = np.zeros(P, dtype=np.int64)
            fx = np.zeros(P)
            bounds = np.zeros(2)
            for which in range(2):  # 0: lower (leave subject out), 1: upper (all subjects)
                if which == 0 and n_present < 2:
                    continue
                for s in range(S):
                    if d[s] == 0:
                        continue
                    if which == 0 or s == first:  # the upper bound's pooled vector is the same for all subjects
                        for t in range(na):
                            p = act[t]
                            x[t] = tot[p] - d[s] * T2[s, p] if which == 0 else tot[p]
                        ordr = np.argsort(x)  # tie order is irrelevant: ties are found by value
                        for t in range(na):
                            xs[t] = act[ordr[t]]
                        st[0] = True
                        for t in range(1, na):
                            st[t] = x[ordr[t]] != x[ordr[t - 1]]
                        if spearman:
                            _ranks2(xs, st, w, rx2)
                            fx = rx2.astype(np.float64)
                    if spearman:
                        v = _wpearson(fx, T2[s].astype(np.float64), w)
                    else:
                        v = _sweep(xs, st, crank[s], cG[s], w, tree) / den
                        v = min(1.0, max(-1.0, v))
                    bounds[which] += v
                bounds[which] /= n_present
            out[b, 1] = bounds[1]
            out[b, 0] = bounds[0] if n_present > 1 else bounds[1]
        return out
