"""Ridge cross-validation of a CNN layer -> V4 session 201025: scikit-learn RidgeCV vs workbench.

Features: one layer of the lead's small CNN (untrained, seeded; or a run's checkpoint with --run) on the session's
1200 images. Both fit RidgeCV(alphas) (efficient leave-one-out over the alphas) on each training fold of the same
seeded 5-fold split and predict the held-out fold; the script checks the predictions agree to 1e-6 and prints the
time ratio. sklearn gets float64 features (as RidgeCV would cast them anyway).

    WORKBENCH_DATA=/work/shared/data python benchmarks/bench_regression.py [--layer conv2] [--run results/...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default=None, help="layer name (default: the widest layer under 20k units)")
    ap.add_argument("--run", default=None, help="a run directory whose extracted cowley_v4_201025 features to use")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from sklearn.linear_model import RidgeCV

    from workbench.alignment import DEFAULT_ALPHAS, make_folds, ridge_cv_predictions
    from workbench.data import load_responses, load_stimuli

    if args.run:
        from workbench.run import RunDir

        acts = RunDir(args.run, create=False).load_activations("cowley_v4_201025")
    else:
        import yaml
        from pathlib import Path

        from workbench.features import extract_activations
        from workbench.features.preprocess import Preprocess
        from workbench.models import build_model

        root = Path(__file__).resolve().parents[1]
        model_cfg = yaml.safe_load(open(root / "configs/model/small_cnn.yaml"))
        import torch

        torch.manual_seed(0)
        model = build_model(model_cfg)
        acts = extract_activations(model, load_stimuli("cowley_v4_201025"), None,
                                   preprocess=Preprocess.from_config(model_cfg.get("preprocess")), device="cpu")
    layer = args.layer or max((l for l in acts if acts[l].shape[1] <= 20000), key=lambda l: acts[l].shape[1])
    X = acts[layer].astype(np.float64)
    Y = load_responses("cowley2023_v4", session="201025").values
    folds = make_folds(len(Y), args.folds, seed=0)
    print(f"layer {layer}: {X.shape[1]} units, {X.shape[0]} stimuli, {Y.shape[1]} neuroids, {args.folds} folds, "
          f"{len(DEFAULT_ALPHAS)} alphas")

    t = time.perf_counter()
    ref = np.empty_like(Y)
    ref_alphas = []
    for tr, te in folds:
        m = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X[tr], Y[tr])
        ref[te] = m.predict(X[te])
        ref_alphas.append(m.alpha_)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    ours, alphas = ridge_cv_predictions(X, Y, folds, DEFAULT_ALPHAS)
    t_ours = time.perf_counter() - t
    diff = np.abs(ours - ref).max()
    print(f"sklearn RidgeCV {t_ref:.2f} s | workbench {t_ours:.2f} s | ratio {t_ref / t_ours:.1f}x (goal >= 3x) | "
          f"max |prediction diff| {diff:.1e} | alphas equal: {alphas == ref_alphas}")
    assert diff < 1e-6 and alphas == ref_alphas, "predictions differ"


if __name__ == "__main__":
    main()
