"""Scale: streamed extraction's memory and speed against the number of images, and out-of-core ridge vs himalaya.

(a) Extraction. N synthetic 224-px images (seeded noise made per batch by a lazy image source, so the images never
    sit in RAM) through torchvision ResNet-18 (weights=None), layers layer2 + layer3 + layer4, streamed into an
    activation store. Each N runs in a fresh process that reports its wall time, images/s and peak RSS (its own
    ru_maxrss); right after it, another fresh process times the bare forward pass (the same image source and
    preprocessing, the model alone: no hooks, no copies, no writes) on min(N, --bare-n) images. Goals (issue 14):
    peak RSS at the largest N within 10% of that at the smallest; extraction throughput >= 90% of the bare pass.
(b) Out-of-core ridge. Synthetic features (n x p float32, a memory map on disk) and targets (low-rank signal plus
    noise), 5 folds: ``ridge_cv_predictions_blocked`` (one penalty per target, leave-one-out) against himalaya's
    ``KernelRidgeCV`` (numpy backend, one penalty per target by 5-fold inner cross-validation, linear kernel,
    intercept) on the same data, alphas and folds, in this process, timed alternately over --repeats. The two choose
    the penalty by different rules (leave-one-out vs inner 5-fold), so agreement is checked where the rule plays no
    part: on the first fold, himalaya's ``KernelRidge`` at exactly our chosen per-target alphas must give our
    predictions; the share of targets on which both choose the same alpha is printed for information.

    python benchmarks/bench_scale.py                        # the issue's sizes (a GPU machine with ~40 GB disk)
    python benchmarks/bench_scale.py --sizes 250 1000 2000 --n 4000 --features 20000 --targets 2000 --repeats 2
    python benchmarks/bench_scale.py --skip-ridge ...  /  --skip-extraction ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, torch, torchvision
from workbench.data.lazy import LazyImages, batches
from workbench.data.stimuli import StimulusSet
from workbench.features.extract import extract_activations
from workbench.features.preprocess import Preprocess
from workbench.features.store import store_files


class SyntheticImages(LazyImages):
    # seeded noise made when indexed, as a folder of files is decoded per batch: no image is held in RAM
    def __init__(self, n, size, seed=0):
        self.sources, self.size, self.archive, self.background = [str(i) for i in range(n)], size, None, None
        self._zip, self.seed, self.image_shape = None, seed, (size, size, 3)

    def _read(self, i):
        return f"synthetic seed={self.seed} size={self.size} image={self.sources[i]}".encode()

    def _decode(self, i):
        rng = np.random.default_rng([self.seed, int(self.sources[i])])
        return rng.integers(0, 256, self.image_shape, dtype=np.uint8)


mode, n, size, batch, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
images = SyntheticImages(n, size)
prep = {"image_size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
start = time.perf_counter()
stored_bytes = 0
if mode == "store":
    acts = extract_activations(model, StimulusSet("synthetic", pd.DataFrame({"stimulus_id": images.sources}), images),
                               ["layer2", "layer3", "layer4"], preprocess=prep, batch_size=batch, progress=False,
                               store=store)
    stored_bytes = sum(p.stat().st_size for p in store_files(store))
else:
    preprocess = Preprocess(**prep)
    with torch.no_grad():
        for _, chunk in batches(images, batch):
            model(preprocess(chunk))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "images_per_s": n / seconds, "stored_gb": stored_bytes / 1e9,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(mode: str, n: int, size: int, batch: int, store: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(size), str(batch), str(store)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the {mode} child (n={n}) failed:\n{out.stderr[-3000:]}")
    shutil.rmtree(store, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_extraction(sizes: list[int], size: int, batch: int, bare_n: int, folder: Path) -> None:
    print(f"(a) streamed extraction: ResNet-18 (weights=None) layer2+layer3+layer4, {size} px, batch {batch}, "
          f"one fresh process per run")
    rows = []
    for n in sizes:
        stored = _child("store", n, size, batch, folder / f"store_{n}")
        bare = _child("bare", min(n, bare_n), size, batch, folder / "unused")
        rows.append((n, stored, bare))
        print(f"  N={n:>6}: {stored['seconds']:8.1f} s  {stored['images_per_s']:7.1f} images/s  peak RSS "
              f"{stored['peak_mb']:7.0f} MB  store {stored['stored_gb']:.2f} GB | bare forward "
              f"{bare['images_per_s']:7.1f} images/s (peak {bare['peak_mb']:.0f} MB) | throughput "
              f"{stored['images_per_s'] / bare['images_per_s']:.0%} of bare")
    small, large = rows[0], rows[-1]
    growth = large[1]["peak_mb"] / small[1]["peak_mb"] - 1
    ratio = large[1]["images_per_s"] / large[2]["images_per_s"]
    print(f"  peak RSS at N={large[0]} is {growth:+.1%} vs N={small[0]}: "
          f"{'within' if abs(growth) <= 0.10 else 'NOT within'} 10%")
    print(f"  throughput at N={large[0]} is {ratio:.0%} of the bare forward pass: "
          f"{'meets' if ratio >= 0.90 else 'misses'} the 90% goal")


def _synthetic_ridge_data(n: int, p: int, t: int, folder: Path, seed: int = 0):
    """Features as a float32 memory map written in blocks of stimuli (never whole in RAM); targets = a rank-20 map
    of the features plus noise, so that the penalties chosen vary across targets."""
    rng = np.random.default_rng(seed)
    X = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=(n, p))
    Y = np.lib.format.open_memmap(folder / "targets.npy", mode="w+", dtype=np.float32, shape=(n, t))
    A = rng.standard_normal((p, 20)) / np.sqrt(p)
    B = rng.standard_normal((20, t)) * rng.uniform(0.05, 2.0, t)  # signal-to-noise varies by target
    for start in range(0, n, 1024):
        rows = slice(start, min(start + 1024, n))
        block = rng.standard_normal((rows.stop - rows.start, p)).astype(np.float32)
        X[rows] = block
        Y[rows] = (block @ A) @ B + rng.standard_normal((rows.stop - rows.start, t))
    X.flush()
    Y.flush()
    del X, Y
    return np.load(folder / "features.npy", mmap_mode="r"), np.load(folder / "targets.npy", mmap_mode="r")


def _himalaya_cv(X64: np.ndarray, Y64: np.ndarray, folds, alphas) -> tuple[np.ndarray, list]:
    from himalaya.kernel_ridge import KernelRidgeCV

    pred, chosen = np.empty_like(Y64), []
    for tr, te in folds:
        model = KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=True, cv=5,
                              solver_params={"local_alpha": True}, warn=False).fit(X64[tr], Y64[tr])
        pred[te] = model.predict(X64[te])
        chosen.append(np.asarray(model.best_alphas_))
    return pred, chosen


def bench_ridge(n: int, p: int, t: int, repeats: int, device: str | None, folder: Path) -> None:
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidge

    from workbench.alignment.regression import DEFAULT_ALPHAS, make_folds, pearson_per_column
    from workbench.alignment.ridge_blocked import ridge_cv_predictions_blocked

    set_backend("numpy")
    print(f"\n(b) out-of-core ridge: {n} stimuli x {p} features -> {t} targets, 5 folds, {len(DEFAULT_ALPHAS)} "
          f"alphas, one per target; ours on float32 memory maps (device {device or 'auto'}), himalaya "
          f"KernelRidgeCV (numpy backend) on the same values in RAM as float64")
    X, Y = _synthetic_ridge_data(n, p, t, folder)
    X64, Y64 = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)  # himalaya's input (not timed)
    folds = make_folds(n, 5, seed=0)
    alphas = list(DEFAULT_ALPHAS)
    times: dict[str, list[float]] = {"ours": [], "himalaya": []}
    for _ in range(repeats):  # alternated, so both see the same machine load
        start = time.perf_counter()
        ours, our_alphas = ridge_cv_predictions_blocked(X, Y, folds, alphas, alpha_per_target=True, device=device)
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs, their_alphas = _himalaya_cv(X64, Y64, folds, alphas)
        times["himalaya"].append(time.perf_counter() - start)
    tr, te = folds[0]
    # per-target alphas: himalaya forms (n, n, targets batch) at once, so its target batch is bounded (16)
    at_our_alphas = KernelRidge(alpha=np.asarray(our_alphas[0]), kernel="linear", solver="eigenvalues",
                                solver_params={"n_targets_batch": 16},
                                fit_intercept=True).fit(X64[tr], Y64[tr]).predict(X64[te])
    gap = float(np.abs(np.asarray(at_our_alphas) - ours[te]).max() / np.abs(ours[te]).max())
    same = float(np.mean([np.mean(np.asarray(a) == b) for a, b in zip(our_alphas, their_alphas)]))
    r_ours = np.median(pearson_per_column(ours, Y64))
    r_theirs = np.median(pearson_per_column(theirs, Y64))
    print(f"  fold 1 at our alphas: himalaya KernelRidge vs ours, max |difference| / max |prediction| = {gap:.1e} "
          f"({'agree' if gap < 1e-6 else 'DISAGREE'})")
    print(f"  same alpha chosen (leave-one-out vs himalaya's inner 5-fold) on {same:.0%} of targets; median "
          f"cross-validated r: ours {r_ours:.4f}, himalaya {r_theirs:.4f}")
    for name, values in times.items():
        print(f"  {name:<9} median {np.median(values):8.1f} s  range [{min(values):.1f}, {max(values):.1f}] "
              f"over {repeats} repeats")
    print(f"  himalaya / ours = {np.median(times['himalaya']) / np.median(times['ours']):.2f}x "
          f"(goal: ours faster, > 1)")
    if gap >= 1e-6:
        raise SystemExit("ours and himalaya disagree at the same alphas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="extraction: images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bare-n", type=int, default=1000, help="images of each bare forward-pass timing")
    parser.add_argument("--n", type=int, default=16000, help="ridge: stimuli")
    parser.add_argument("--features", type=int, default=100000, help="ridge: features")
    parser.add_argument("--targets", type=int, default=10000, help="ridge: targets")
    parser.add_argument("--repeats", type=int, default=3, help="ridge: timed repeats of each implementation")
    parser.add_argument("--device", default=None, help="ridge: torch device of ours (default: CUDA when present)")
    parser.add_argument("--folder", default=None, help="where the store and the ridge arrays go (default: a temp "
                                                       "folder, removed at the end)")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--skip-ridge", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.folder))
    try:
        if not args.skip_extraction:
            bench_extraction(args.sizes, args.image_size, args.batch_size, args.bare_n, folder)
        if not args.skip_ridge:
            bench_ridge(args.n, args.features, args.targets, args.repeats, args.device, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
