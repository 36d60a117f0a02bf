"""Bootstrap RSA inference: rsatoolbox vs workbench on the same samples.

8 shipped model RDMs vs hIT (4 subjects, sessions averaged), Kendall tau-a, N bootstrap samples over stimuli
(rsatoolbox eval_bootstrap_pattern) and over subjects (eval_bootstrap_rdm), noise ceilings recomputed per sample.
Both draw the same samples (np.random.seed(seed) for rsatoolbox, bootstrap_indices(seed) for us); the script
checks that every sample's evaluations and ceilings agree to 1e-6 and prints the time ratio.

    WORKBENCH_DATA=/work/shared/data python benchmarks/bench_rsa.py [--n 1000] [--method kendall_tau_a]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--method", default="kendall_tau_a")
    ap.add_argument("--seed", type=int, default=0)
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
    total_ref = total_ours = 0.0
    for scheme, fn in [("stimuli", eval_bootstrap_pattern), ("subjects", eval_bootstrap_rdm)]:
        np.random.seed(args.seed)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = fn(ref_models, data, method=RSATOOLBOX_NAMES[args.method], N=args.n)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = bootstrap_rsa(models, hit, args.method, n_bootstrap=args.n, scheme=scheme, seed=args.seed,
                             progress=False)
        t_ours = time.perf_counter() - t
        ev = ref.evaluations.reshape(args.n, -1)
        d_eval = np.nanmax(np.abs(ours.samples - ev))
        d_nc = np.nanmax(np.abs(ours.ceiling_samples - np.asarray(ref.noise_ceiling).T))
        same_nan = np.array_equal(np.isnan(ours.samples), np.isnan(ev))
        print(f"{scheme:9s} N={args.n} {args.method}: rsatoolbox {t_ref:7.2f} s | workbench {t_ours:6.2f} s | "
              f"ratio {t_ref / t_ours:5.1f}x | max |diff| evaluations {d_eval:.1e}, ceilings {d_nc:.1e}, "
              f"same NaN samples: {same_nan}")
        assert d_eval < 1e-6 and d_nc < 1e-6 and same_nan, "numbers differ"
        total_ref += t_ref
        total_ours += t_ours
    print(f"total: rsatoolbox {total_ref:.2f} s, workbench {total_ours:.2f} s, ratio {total_ref / total_ours:.1f}x "
          f"(goal >= 20x)")


if __name__ == "__main__":
    main()
