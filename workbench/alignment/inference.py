"""RSA inference: noise ceilings and bootstrap confidence intervals, batched over samples and models.

Definitions follow rsatoolbox (Schütt et al. 2023, eLife 12:e82566; Nili et al. 2014) so that the numbers can be
checked against it:

* A model's score is the mean over subjects of compare(model RDM, subject RDM).
* ``noise_ceiling``: upper bound = mean over subjects of compare(pooled RDM of all subjects, subject); lower bound =
  the same with the pooled RDM of all *other* subjects (leave one subject out). "Pooled" is the average that is
  optimal for the comparison method (rsatoolbox ``pool_rdm``): mean of rank-transformed RDMs for rank methods,
  of z-scored RDMs for Pearson, of RMS-normalised RDMs for cosine.
* Bootstrap over stimuli, over subjects, or both (rsatoolbox ``eval_bootstrap_pattern`` / ``eval_bootstrap_rdm`` /
  ``eval_bootstrap``): each sample draws stimuli and/or subjects with replacement, scores every model on the
  resampled data and recomputes the noise ceiling on it. Duplicated stimuli: the dissimilarity of a stimulus with
  its own copy is dropped, all other entries count as often as they occur (see ``workbench.alignment.rsa``).
  Samples with fewer than 3 distinct stimuli are NaN (as in rsatoolbox) and ignored by the intervals.
* Indices: ``bootstrap_indices(..., seed)`` draws them with ``np.random.RandomState(seed)`` in rsatoolbox's order
  (subjects, then stimuli, per sample), so ``np.random.seed(seed)`` + rsatoolbox's evaluation sees the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.logs import progress_disabled

from workbench.alignment import _rank_kernels
from workbench.alignment.rsa import (DTYPE, as_condensed, canonical_method, check_same_stimuli, compare_rows,
                                     n_from_condensed, pair_weights, subject_stack,
                                     weighted_rank, whitened_vectors)
from workbench.utils import get_device

SCHEMES = ("stimuli", "subjects", "both")
# Citations (rsatoolbox, Nili et al. 2014) live on the METRICS entry "rsa" (workbench.alignment.metrics.rsa).


def _data_vectors(data_rdms: Any, device, layout: str = "auto") -> torch.Tensor:
    data = subject_stack(data_rdms)
    return as_condensed(data, "data_rdms", device, layout)


def _pool_transform(v: torch.Tensor, w: torch.Tensor, method: str) -> torch.Tensor:
    """rsatoolbox pool_rdm's per-RDM transform, on weighted vectors. v: (S, P) or (B, S, P); w: (B, 1, P)."""
    if method in ("spearman", "kendall_tau_a"):
        B, S, P = w.shape[0], v.shape[-2], v.shape[-1]
        flat_w = w.expand(B, S, P).reshape(B * S, P)
        if v.ndim == 2:
            return torch.stack([weighted_rank(v[s], w[:, 0]) for s in range(S)], dim=1)
        return weighted_rank(v.reshape(B * S, P), flat_w).reshape(B, S, P)
    wsum = w.sum(-1, keepdim=True)
    if method in ("cosine", "whitened_cosine"):
        return v / torch.sqrt((w * v * v).sum(-1, keepdim=True) / wsum)
    mean = (w * v).sum(-1, keepdim=True) / wsum
    std = torch.sqrt((w * (v - mean) ** 2).sum(-1, keepdim=True) / wsum)
    return (v - mean) / std


def _ceiling_rows(data: torch.Tensor, counts_stim: torch.Tensor | None, counts_subj: torch.Tensor,
                  method: str) -> torch.Tensor:
    """Noise ceiling (lower, upper) for a batch of samples. data: (S, P); counts_stim: (B, n) or None (all stimuli
    once); counts_subj: (B, S). Returns (B, 2)."""
    S, P = data.shape
    B = counts_subj.shape[0]
    n = n_from_condensed(P)
    w = None if counts_stim is None else pair_weights(counts_stim, n)
    ww = torch.ones(B, 1, P, dtype=DTYPE, device=data.device) if w is None else w[:, None, :]
    if method in ("whitened_cosine", "whitened_pearson") and w is not None:
        raise ValueError(f"{method} is not defined for resampled stimuli; use scheme='subjects'")
    T = _pool_transform(data, ww, method)  # (B, S, P): each subject's transform within its sample
    if T.ndim == 2:
        T = T.expand(B, S, P)
    d = counts_subj.to(DTYPE)[:, :, None]
    total = (d * T).sum(1)  # (B, P)
    D = d.sum(1)  # (B, 1)
    pooled_all = total / D
    rest = (D[:, None, :] - d).clamp(min=1)
    pooled_minus = (total[:, None, :] - d * T) / rest  # (B, S, P); meaningless where the subject is all there is
    x = torch.cat([pooled_minus, pooled_all[:, None, :].expand(B, S, P)], dim=1).reshape(2 * B * S, P)
    y = data[None].expand(2 * B, S, P).reshape(2 * B * S, P)
    wr = None if w is None else w[:, None, :].expand(B, 2 * S, P).reshape(2 * B * S, P)
    if method == "spearman":
        rx = weighted_rank(x, wr)
        ry = weighted_rank(y, wr) if wr is not None else weighted_rank(data, None).repeat(2 * B, 1)
        scores = compare_rows(rx, ry, "pearson", wr)
    else:
        scores = compare_rows(x, y, method, wr)
    scores = scores.reshape(B, 2, S)
    present = counts_subj > 0
    n_present = present.sum(1)
    upper = (scores[:, 1] * present).sum(1) / n_present
    lower = (scores[:, 0] * present).sum(1) / n_present
    lower = torch.where(n_present > 1, lower, upper)  # one distinct subject: rsatoolbox trains and tests on it
    return torch.stack([lower, upper], dim=1)


def noise_ceiling(rdms: Any, method: str = "spearman", device=None, layout: str = "auto") -> tuple[float, float]:
    """(lower, upper) noise ceiling of subject RDMs as rsatoolbox's ``boot_noise_ceiling`` defines it.

    rdms: (subject x n x n) / (subject x P), or an xarray (subject x session x n x n), whose sessions are averaged;
    layout: how to read them (:func:`workbench.alignment.rsa.as_condensed`).
    Raises ValueError for a single subject: the leave-one-subject-out lower bound needs two or more.
    """
    method = canonical_method(method)
    dev = get_device(device)
    data = _data_vectors(rdms, dev, layout)
    if data.shape[0] < 2:
        raise ValueError("noise_ceiling needs RDMs of at least 2 subjects: the lower bound leaves one subject out "
                         "(with one subject there is no lower bound)")
    out = _ceiling_rows(data, None, torch.ones(1, data.shape[0], dtype=DTYPE, device=dev), method)
    return float(out[0, 0]), float(out[0, 1])


# ---------------------------------------------------------------------------------------------------------------
def bootstrap_indices(n_bootstrap: int, n_subjects: int, n_stimuli: int, scheme: str = "stimuli",
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(subject_idx (B, S), stimulus_idx (B, n)) drawn with replacement, in rsatoolbox's order of draws."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown bootstrap scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1; got {n_bootstrap}")
    rs = np.random.RandomState(seed)
    subj = np.tile(np.arange(n_subjects), (n_bootstrap, 1))
    stim = np.tile(np.arange(n_stimuli), (n_bootstrap, 1))
    for i in range(n_bootstrap):
        if scheme in ("subjects", "both"):
            subj[i] = rs.randint(0, n_subjects, size=n_subjects)
        if scheme in ("stimuli", "both"):
            stim[i] = rs.randint(0, n_stimuli, size=n_stimuli)
    return subj, stim


@dataclass
class RSAResult:
    """Scores of models against data RDMs, with bootstrap samples for intervals."""

    model_names: list[str]
    method: str
    scheme: str
    scores: np.ndarray  # (n_models,) on the full data
    noise_ceiling: tuple[float, float]  # on the full data (NaN when there is a single subject)
    samples: np.ndarray  # (n_bootstrap, n_models); NaN for unusable samples
    ceiling_samples: np.ndarray  # (n_bootstrap, 2)
    subject_indices: np.ndarray = field(repr=False)
    stimulus_indices: np.ndarray = field(repr=False)

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.samples).all(1)

    def ci(self, level: float = 0.95) -> np.ndarray:
        """(n_models, 2) percentile intervals of the scores."""
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        return np.percentile(self.samples[self.valid], q, axis=0).T

    def ceiling_ci(self, level: float = 0.95) -> np.ndarray:
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        ok = np.isfinite(self.ceiling_samples).all(1)
        if not ok.any():  # a single subject: no ceiling
            return np.full((2, 2), np.nan)
        return np.percentile(self.ceiling_samples[ok], q, axis=0).T  # rows: lower, upper bound

    def std(self) -> np.ndarray:
        return np.std(self.samples[self.valid], axis=0, ddof=1)

    def difference_ci(self, level: float = 0.95) -> np.ndarray:
        """(n_models, n_models, 2) percentile intervals of score[i] - score[j] over the same samples."""
        s = self.samples[self.valid]
        diff = s[:, :, None] - s[:, None, :]
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        return np.moveaxis(np.percentile(diff, q, axis=0), 0, -1)

    def difference_p(self) -> np.ndarray:
        """(n_models, n_models) two-sided bootstrap p-value of score[i] == score[j] (share of samples on the other
        side of zero, doubled, with the +1 correction of Davison & Hinkley)."""
        s = self.samples[self.valid]
        diff = s[:, :, None] - s[:, None, :]
        n = diff.shape[0]
        tail = np.minimum((diff <= 0).sum(0), (diff >= 0).sum(0))
        p = np.minimum(1.0, 2 * (tail + 1) / (n + 1))
        np.fill_diagonal(p, 1.0)
        return p

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        ci, dci = self.ci(level), self.difference_ci(level)
        nc_ci = self.ceiling_ci(level)
        return {
            "method": self.method, "scheme": self.scheme, "n_bootstrap": int(self.samples.shape[0]),
            "n_valid": int(self.valid.sum()), "ci_level": level,
            "scores": {m: {"score": float(self.scores[i]), "ci": [float(ci[i, 0]), float(ci[i, 1])],
                           "std": float(self.std()[i])} for i, m in enumerate(self.model_names)},
            "noise_ceiling": {"lower": float(self.noise_ceiling[0]), "upper": float(self.noise_ceiling[1]),
                              "lower_ci": [float(v) for v in nc_ci[0]], "upper_ci": [float(v) for v in nc_ci[1]]},
            "differences": {f"{a} - {b}": {"diff": float(self.scores[i] - self.scores[j]),
                                           "ci": [float(dci[i, j, 0]), float(dci[i, j, 1])],
                                           "p": float(self.difference_p()[i, j])}
                            for i, a in enumerate(self.model_names) for j, b in enumerate(self.model_names) if i < j},
        }


def _model_scores(models: torch.Tensor, data: torch.Tensor, counts_stim: torch.Tensor, method: str,
                  fold_subjects: bool) -> torch.Tensor:
    """Scores for unique stimulus samples: (B, M, S), or (B, M, 1) already averaged over subjects when
    ``fold_subjects`` (every sample holds every subject once)."""
    M, P = models.shape
    S = data.shape[0]
    n = n_from_condensed(P)
    w = pair_weights(counts_stim, n)  # (B, P)
    B = w.shape[0]
    if method == "kendall_tau_a" and B * M * S <= 512:  # few samples: the O(P log P) sweep is cheaper
        rows = compare_rows(models[None, :, None].expand(B, M, S, P).reshape(-1, P),
                            data[None, None].expand(B, M, S, P).reshape(-1, P), method,
                            w[:, None, None].expand(B, M, S, P).reshape(-1, P)).reshape(B, M, S)
        return rows.mean(-1, keepdim=True) if fold_subjects else rows
    if method == "kendall_tau_a":
        # Model and subject vectors are fixed; only the weights change from sample to sample, so the tau-a
        # numerator is the quadratic form w' (sign(dm) * sign(ds)) w / 2 for all samples in one matrix product.
        # Entries are small integers, so float32 products are exact; the final sums run in float64.
        nn = w.sum(1)
        tot = nn * (nn - 1) / 2
        w32 = w.float()
        sub_signs = [torch.sign(data[s][:, None] - data[s][None, :]).float() for s in range(S)]
        groups = [sum(sub_signs)] if fold_subjects else sub_signs
        out = torch.empty(B, M, len(groups), dtype=DTYPE, device=w.device)
        for m in range(M):
            sm = torch.sign(models[m][:, None] - models[m][None, :]).float()
            for g, sg in enumerate(groups):
                wm = (w32 @ (sm * sg)).double()
                out[:, m, g] = ((wm * w).sum(1) / 2) / tot
            del sm
        if fold_subjects:
            out = out / S
        return out.clamp(-1, 1)
    if method == "spearman":
        rm = torch.stack([weighted_rank(models[m], w) for m in range(M)], 1)  # (B, M, P)
        rs = torch.stack([weighted_rank(data[s], w) for s in range(S)], 1)  # (B, S, P)
        x, y, method = rm, rs, "pearson"
    elif method in ("whitened_cosine", "whitened_pearson"):
        center = method == "whitened_pearson"
        x = whitened_vectors(models, center)[None].expand(B, M, -1)
        y = whitened_vectors(data, center)[None].expand(B, S, -1)
        w, method = None, "cosine"
    else:
        x, y = models[None].expand(B, M, P), data[None].expand(B, S, P)
    out = torch.empty(B, M, S, dtype=DTYPE, device=models.device)
    for s in range(S):
        out[:, :, s] = compare_rows(x.reshape(B * M, -1), y[:, s:s + 1].expand(B, M, -1).reshape(B * M, -1),
                                    method, None if w is None else w[:, None].expand(B, M, -1).reshape(B * M, -1)
                                    ).reshape(B, M)
    return out.mean(-1, keepdim=True) if fold_subjects else out


RANK_KERNEL_METHODS = ("kendall_tau_a", "spearman")


def _use_rank_kernels(method: str, dev: torch.device) -> bool:
    """Compiled per-sample kernels for rank methods on CPU (see ``_rank_kernels``); else the batched torch path."""
    return method in RANK_KERNEL_METHODS and dev.type == "cpu" and _rank_kernels.available()


class _RankPlans:
    """Sort plans of the fixed model and subject vectors, shared by all samples; the kernels take stimulus counts
    (B, n) and run on chunks of samples in threads."""

    def __init__(self, models: np.ndarray, data: np.ndarray):
        self.M, self.S = models.shape[0], data.shape[0]
        n = n_from_condensed(models.shape[1])
        if n * n > 2 ** 31:  # the batched tau-a sweep sums pair weights (at most n(n-1)/2) in int32
            raise ValueError(f"RDMs of {n} stimuli are too large for the compiled rank kernels (at most 46340)")
        self.ii, self.jj = (np.ascontiguousarray(a, dtype=np.int64) for a in np.triu_indices(n, 1))
        self.mp = [_rank_kernels.sort_plan(v) for v in models]
        self.dp = [_rank_kernels.sort_plan(v) for v in data]
        self.m_orders, self.m_starts = np.stack([p[0] for p in self.mp]), np.stack([p[1] for p in self.mp])
        self.d_orders, self.d_starts = np.stack([p[0] for p in self.dp]), np.stack([p[1] for p in self.dp])
        self._tau = None

    def tau_plans(self):
        if self._tau is None:  # per (model, subject): sweep in the order of the vector with more distinct values,
            oidx, fidx = [], []  # Fenwick tree over the other's ranks (few distinct values: a small tree)
            for m in range(self.M):
                for s in range(self.S):
                    by_model = self.mp[m][3] >= self.dp[s][3]
                    oidx.append(m if by_model else self.M + s)
                    fidx.append(self.M + s if by_model else m)
            plans = self.mp + self.dp
            self._tau = tuple(np.stack([p[i] for p in plans]) for i in range(3)) + (
                np.array([p[3] for p in plans], dtype=np.int64), np.array(oidx, dtype=np.int64),
                np.array(fidx, dtype=np.int64))
        return self._tau

    def model_scores(self, counts: np.ndarray, method: str) -> np.ndarray:
        """(B, M, S) scores for stimulus counts (B, n)."""
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        if method == "kendall_tau_a":
            out = _rank_kernels.in_threads(_rank_kernels.model_tau_a, counts, self.ii, self.jj, *self.tau_plans())
            return out.reshape(counts.shape[0], self.M, self.S)
        return _rank_kernels.in_threads(_rank_kernels.model_spearman, counts, self.ii, self.jj, self.m_orders,
                                        self.m_starts, self.d_orders, self.d_starts)

    def ceilings(self, counts: np.ndarray, D: np.ndarray, method: str) -> np.ndarray:
        """(B, 2) noise ceilings for stimulus counts (B, n) and subject counts (B, S)."""
        kernel = _rank_kernels.ceiling_spearman if method == "spearman" else _rank_kernels.ceiling_tau_a
        return _rank_kernels.in_threads(kernel, np.ascontiguousarray(counts, dtype=np.int64),
                                        np.ascontiguousarray(D, dtype=np.int64), self.ii, self.jj, self.d_orders,
                                        self.d_starts, split=2)


def _counts(idx: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((idx.shape[0], size), dtype=np.int64)
    np.add.at(out, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1)
    return out


def _sample_indices(subject_indices: np.ndarray | None, stimulus_indices: np.ndarray | None, n_bootstrap: int,
                   n_subjects: int, n: int, scheme: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The given bootstrap samples, checked, or (for those not given) samples drawn with ``seed``."""
    S = n_subjects
    if subject_indices is None or stimulus_indices is None:
        subj_draw, stim_draw = bootstrap_indices(n_bootstrap, S, n, scheme, seed)
        subject_indices = subj_draw if subject_indices is None else subject_indices
        stimulus_indices = stim_draw if stimulus_indices is None else stimulus_indices
    subject_indices, stimulus_indices = np.asarray(subject_indices), np.asarray(stimulus_indices)
    B = subject_indices.shape[0]
    if stimulus_indices.shape[0] != B or subject_indices.ndim != 2 or stimulus_indices.ndim != 2:
        raise ValueError("subject_indices (B, S) and stimulus_indices (B, n) must describe the same B samples")
    if subject_indices.max() >= S or stimulus_indices.max() >= n or min(subject_indices.min(),
                                                                        stimulus_indices.min()) < 0:
        raise ValueError(f"bootstrap indices out of range (subjects < {S}, stimuli < {n})")
    return subject_indices, stimulus_indices


def _bootstrap_ceilings(data: torch.Tensor, plans: "_RankPlans | None", c_counts: np.ndarray, d_counts: np.ndarray,
                        method: str, batch_size: int, bar, dev) -> np.ndarray:
    """(B, 2) noise ceilings of every bootstrap sample (each distinct stimulus/subject draw computed once)."""
    n = c_counts.shape[1]
    combos = np.concatenate([c_counts, d_counts], axis=1)
    uniq, inv = np.unique(combos, axis=0, return_inverse=True)
    inv = inv.ravel()
    ceil_u = np.full((uniq.shape[0], 2), np.nan)
    ok = (uniq[:, :n] > 0).sum(1) >= 3
    todo = np.nonzero(ok)[0]
    all_stim = bool((uniq[:, :n] == 1).all())
    step = batch_size
    for i in range(0, len(todo), step):
        sel = todo[i:i + step]
        if plans is not None:
            ceil_u[sel] = plans.ceilings(uniq[sel, :n], uniq[sel, n:], method)
        else:
            cs = None if all_stim else torch.as_tensor(uniq[sel, :n], dtype=DTYPE, device=dev)
            ds = torch.as_tensor(uniq[sel, n:], dtype=DTYPE, device=dev)
            ceil_u[sel] = _ceiling_rows(data, cs, ds, method).cpu().numpy()
        bar.update(int(np.isin(inv, sel).sum()))
    return ceil_u[inv]


def _full_data_scores(models: torch.Tensor, data: torch.Tensor, plans: "_RankPlans | None", method: str, dev
                      ) -> tuple[np.ndarray, tuple[float, float]]:
    """Point estimates on the full data: every model's score and the noise ceiling (NaN for one subject)."""
    S, n = data.shape[0], n_from_condensed(data.shape[1])
    ones_c = torch.ones(1, n, dtype=DTYPE, device=dev)
    if plans is not None:
        once = np.ones((1, n), dtype=np.int64)  # every stimulus once
        full = plans.model_scores(once, method)[0].mean(-1)
        nc = plans.ceilings(once, np.ones((1, S), dtype=np.int64), method)[0] if S >= 2 else None
    else:
        full = _model_scores(models, data, ones_c, method, fold_subjects=False)[0].mean(-1).cpu().numpy()
        nc = _ceiling_rows(data, None, torch.ones(1, S, dtype=DTYPE, device=dev), method)[0].cpu().numpy() \
            if S >= 2 else None
    noise = (float(nc[0]), float(nc[1])) if nc is not None else (float("nan"), float("nan"))
    return full, noise


def bootstrap_rsa(model_rdms: Any, data_rdms: Any, method: str = "spearman", n_bootstrap: int = 1000,
                  scheme: str = "stimuli", seed: int = 0, model_names: Sequence[str] | None = None,
                  subject_indices: np.ndarray | None = None, stimulus_indices: np.ndarray | None = None,
                  ceiling: bool = True, batch_size: int = 1000, device=None, progress: bool = True,
                  layout: str = "auto") -> RSAResult:
    """Score models (k x n x n, e.g. one RDM per layer) against subject RDMs with bootstrap intervals.

    data_rdms: (subject x n x n) or xarray (subject x session x n x n; sessions are averaged). scheme: resample
    ``stimuli``, ``subjects`` or ``both``. Pass ``subject_indices`` (B, S) / ``stimulus_indices`` (B, n) to use given
    samples (e.g. to reproduce another tool's); otherwise they are drawn with ``seed``. layout: how to read both
    RDM arguments (:func:`workbench.alignment.rsa.as_condensed`; condensed stacks are (k x P)).
    """
    method = canonical_method(method)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown bootstrap scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if method in ("whitened_cosine", "whitened_pearson") and scheme != "subjects":
        raise ValueError(f"{method} cannot be bootstrapped over stimuli (duplicated stimuli break the whitening); "
                         "use scheme='subjects' or a rank/linear method")
    dev = get_device(device)
    check_same_stimuli(model_rdms, subject_stack(data_rdms), ("model_rdms", "data_rdms"))
    models = as_condensed(model_rdms, "model_rdms", dev, layout)
    data = _data_vectors(data_rdms, dev, layout)
    if models.shape[1] != data.shape[1]:
        raise ValueError(f"model and data RDMs have different sizes ({n_from_condensed(models.shape[1])} vs "
                         f"{n_from_condensed(data.shape[1])} stimuli); compare RDMs of the same stimuli")
    M, S, n = models.shape[0], data.shape[0], n_from_condensed(data.shape[1])
    if scheme in ("subjects", "both") and S < 2:
        raise ValueError("bootstrapping over subjects needs RDMs of at least 2 subjects; use scheme='stimuli'")
    if model_names is None:
        coord = getattr(model_rdms, "coords", {})
        dim0 = model_rdms.dims[0] if hasattr(model_rdms, "dims") and len(model_rdms.dims) == 3 else None
        model_names = [str(v) for v in coord[dim0].values] if dim0 in coord else [f"model{i}" for i in range(M)]
    model_names = list(model_names)
    if len(model_names) != M:
        raise ValueError(f"{len(model_names)} model_names for {M} model RDMs")
    subject_indices, stimulus_indices = _sample_indices(subject_indices, stimulus_indices, n_bootstrap, S, n, scheme,
                                                        seed)
    B = subject_indices.shape[0]
    d_counts = _counts(subject_indices, S)
    c_counts = _counts(stimulus_indices, n)
    usable = (c_counts > 0).sum(1) >= 3

    plans = _RankPlans(models.cpu().numpy(), data.cpu().numpy()) if _use_rank_kernels(method, dev) else None
    full, noise = _full_data_scores(models, data, plans, method, dev)

    samples = np.full((B, M), np.nan)
    ceilings = np.full((B, 2), np.nan)
    fold = bool((d_counts == 1).all())
    uniq_c, inv_c = np.unique(c_counts, axis=0, return_inverse=True)
    inv_c = inv_c.ravel()
    ok_c = (uniq_c > 0).sum(1) >= 3
    scores_u = np.full((uniq_c.shape[0], M, 1 if fold else S), np.nan)
    todo = np.nonzero(ok_c)[0]
    bar = tqdm(total=len(todo) + B * ceiling, desc=f"RSA bootstrap ({scheme}, {method})",
               disable=progress_disabled(progress),
               leave=False)
    for i in range(0, len(todo), batch_size):
        sel = todo[i:i + batch_size]
        if plans is not None:
            sc = plans.model_scores(uniq_c[sel], method)
            scores_u[sel] = sc.mean(-1, keepdims=True) if fold else sc
        else:
            c = torch.as_tensor(uniq_c[sel], dtype=DTYPE, device=dev)
            scores_u[sel] = _model_scores(models, data, c, method, fold).cpu().numpy()
        bar.update(len(sel))
    per_sample = scores_u[inv_c]  # (B, M, S or 1)
    if fold:
        samples = per_sample[:, :, 0]
    else:
        samples = (per_sample * d_counts[:, None, :]).sum(-1) / d_counts.sum(1)[:, None]
    samples[~usable] = np.nan
    if ceiling and S >= 2:
        ceilings = _bootstrap_ceilings(data, plans, c_counts, d_counts, method, batch_size, bar, dev)
        ceilings[~usable] = np.nan
    bar.close()
    return RSAResult(model_names, method, scheme, full, noise, samples, ceilings, subject_indices, stimulus_indices)


__all__ = ("noise_ceiling", "bootstrap_rsa", "bootstrap_indices", "RSAResult", "SCHEMES")
