"""Bootstrap RSA inference: rsatoolbox vs workbench on the same samples.

8 shipped model RDMs vs hIT (4 subjects, sessions averaged), Kendall tau-a, N bootstrap samples over stimuli
(rsatoolbox eval_bootstrap_pattern) and over subjects (eval_bootstrap_rdm), noise ceilings recomputed per sample.
Both draw the same samples (np.random.seed(seed) for rsatoolbox, bootstrap_indices(seed) for us); every repeat
checks that every sample's evaluations and ceilings agree to 1e-6 and that the same samples are NaN.

Each repeat runs rsatoolbox and then workbench on both schemes, so the two see the same machine load; the script
prints the median and range of the times over the repeats and of the per-repeat ratios. Both run once on a few
samples first (not timed): one-time costs (numba's start-up and loading its cached kernels, ~2 s; rsatoolbox's
lazy imports) are printed apart from the repeats.

    WORKBENCH_DATA=/work/shared/data python benchmarks/bench_rsa.py [--n 1000] [--method kendall_tau_a]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import numpy as np

GOALS = {"stimuli": 50.0, "total": 60.0}


def _run_reference(fn, models, data, method: str, n: int, seed: int):
    np.random.seed(seed)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's progress bars
        warnings.simplefilter("ignore")
        return fn(models, data, method=method, N=n)


def _check_same(ours, ref, n: int) -> str:
    ev = ref.evaluations.reshape(n, -1)
    d_eval = np.nanmax(np.abs(ours.samples - ev))
    d_nc = np.nanmax(np.abs(ours.ceiling_samples - np.asarray(ref.noise_ceiling).T))
    same_nan = np.array_equal(np.isnan(ours.samples), np.isnan(ev))
    assert d_eval < 1e-6 and d_nc < 1e-6 and same_nan, f"numbers differ: {d_eval}, {d_nc}, same NaN {same_nan}"
    return f"max |diff| evaluations {d_eval:.1e}, ceilings {d_nc:.1e}, same NaN samples: {same_nan}"


def _summary(name: str, ref_t: list[float], ours_t: list[float], goal: float | None) -> None:
    ratios = np.array(ref_t) / np.array(ours_t)
    goal_txt = f" (goal >= {goal:.0f}x)" if goal else ""
    print(f"{name:9s} rsatoolbox median {np.median(ref_t):7.2f} s [{min(ref_t):.2f}, {max(ref_t):.2f}] | "
          f"workbench median {np.median(ours_t):6.2f} s [{min(ours_t):.2f}, {max(ours_t):.2f}] | "
          f"ratio of medians {np.median(ref_t) / np.median(ours_t):5.1f}x, per-repeat ratios median "
          f"{np.median(ratios):5.1f}x [{ratios.min():.1f}, {ratios.max():.1f}]{goal_txt}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--method", default="kendall_tau_a")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="rsatoolbox takes ~3-4 min per scheme per repeat")
    args = ap.parse_args()

    from rsatoolbox.inference import eval_bootstrap_pattern, eval_bootstrap_rdm
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs

    from workbench.alignment import RSATOOLBOX_NAMES, bootstrap_rsa
    from workbench.data import load_model_rdms, load_rdms

    hit = load_rdms("kriegeskorte2008", region="hIT").mean("session")
    models = load_model_rdms()
    ref_models = [ModelFixed(str(n), RDMs(m[None])) for n, m in zip(models.model.values, models.values)]
    data = RDMs(hit.values)
    ref_method = RSATOOLBOX_NAMES[args.method]
    schemes = [("stimuli", eval_bootstrap_pattern), ("subjects", eval_bootstrap_rdm)]

    for scheme, fn in schemes:  # warm-up: one-time costs, reported, not timed in the repeats
        t = time.perf_counter()
        _run_reference(fn, ref_models, data, ref_method, 2, args.seed)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        bootstrap_rsa(models, hit, args.method, n_bootstrap=2, scheme=scheme, seed=args.seed, progress=False)
        print(f"first call, N=2 {scheme}: rsatoolbox {t_ref:.2f} s, workbench {time.perf_counter() - t:.2f} s")

    times = {scheme: ([], []) for scheme, _ in schemes}
    for rep in range(args.repeats):
        for scheme, fn in schemes:
            t = time.perf_counter()
            ref = _run_reference(fn, ref_models, data, ref_method, args.n, args.seed)
            t_ref = time.perf_counter() - t
            t = time.perf_counter()
            ours = bootstrap_rsa(models, hit, args.method, n_bootstrap=args.n, scheme=scheme, seed=args.seed,
                                 progress=False)
            t_ours = time.perf_counter() - t
            check = _check_same(ours, ref, args.n)
            times[scheme][0].append(t_ref)
            times[scheme][1].append(t_ours)
            print(f"repeat {rep + 1}/{args.repeats} {scheme:9s} N={args.n} {args.method}: rsatoolbox {t_ref:7.2f} s"
                  f" | workbench {t_ours:6.2f} s | ratio {t_ref / t_ours:6.1f}x | {check}", flush=True)
    print(f"--- N={args.n} {args.method}, {args.repeats} repeats")
    for scheme, _ in schemes:
        _summary(scheme, *times[scheme], GOALS.get(scheme))
    total_ref = [sum(times[s][0][r] for s, _ in schemes) for r in range(args.repeats)]
    total_ours = [sum(times[s][1][r] for s, _ in schemes) for r in range(args.repeats)]
    _summary("total", total_ref, total_ours, GOALS["total"])


if __name__ == "__main__":
    main()
