"""Images per second and peak memory of each attribution method: workbench wrappers vs plain captum / shap calls.

    python benchmarks/bench_attribution.py [--images 16] [--width 32] [--device cpu]

Plain calls use the libraries' defaults (captum IG: 50 steps, no internal batching; GradientShap: 5 samples;
shap GradientExplainer: 200 samples, batch 50). The wrappers run with the same method settings, so the difference
is the wrapper's overhead (safe copy, target hook, completeness bookkeeping) and its memory bound
(``internal_batch_size``). Peak memory: CUDA max allocated on GPU; on CPU the peak resident set size above the
level before the call, sampled every 2 ms from /proc (a lower bound for very short spikes).
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.peak, self._stop = _rss_bytes(), _rss_bytes(), False

        def sample():
            while not self._stop:
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.used = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._thread.join()
            self.used = max(self.peak, _rss_bytes()) - self.base


def timed(fn, device):
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return seconds, mem.used


def main() -> None:
    import captum.attr as ca
    import shap

    from workbench.attribution import attribute
    from workbench.models.networks import SmallCNN

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--internal-batch-size", type=int, default=64)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, width=args.width).eval().to(device)
    x = torch.randn(args.images, 3, 32, 32, device=device)
    background = torch.randn(8, 3, 32, 32, device=device)
    zeros = torch.zeros_like(x)
    target = 3
    ibs = args.internal_batch_size

    def plain_shap_gradient():
        e = shap.GradientExplainer(model, background)
        e.shap_values(x)  # defaults: nsamples=200

    def plain_shap_deep():
        e = shap.DeepExplainer(model, background)
        e.shap_values(x, check_additivity=False)

    cases = [
        ("saliency", lambda: ca.Saliency(model).attribute(x.clone().requires_grad_(), target=target),
         dict(), None),
        ("integrated_gradients", lambda: ca.IntegratedGradients(model).attribute(x, zeros, target=target),
         dict(n_steps=50), None),
        ("gradient_shap", lambda: ca.GradientShap(model).attribute(x, background, target=target),
         dict(n_samples=5), background),
        ("deeplift", lambda: ca.DeepLift(model).attribute(x, zeros, target=target), dict(), None),
        ("shap_gradient", plain_shap_gradient, dict(n_samples=200), background),
        ("shap_deep", plain_shap_deep, dict(), background),
    ]
    print(f"device {device}, {args.images} images 3x32x32, SmallCNN width {args.width}, "
          f"torch threads {torch.get_num_threads()}, wrapper internal_batch_size {ibs}")
    print("plain shap calls explain all 10 outputs of the model (their default); the wrapper explains one target.")
    header = f"{'method':22s} {'plain img/s':>12s} {'plain peak MiB':>15s} {'ours img/s':>11s} {'ours peak MiB':>14s}"
    print(header)
    print("-" * len(header))
    for name, plain, opts, base in cases:
        plain()  # warm-up (lazy imports, allocator)
        t_plain, m_plain = timed(plain, device)
        run_ours = lambda: attribute(model, x, target, name, baselines=base, progress=False,  # noqa: E731
                                     internal_batch_size=ibs, device=str(device), **opts)
        t_ours, m_ours = timed(run_ours, device)
        print(f"{name:22s} {args.images / t_plain:12.1f} {m_plain / 2**20:15.1f} {args.images / t_ours:11.1f} "
              f"{m_ours / 2**20:14.1f}")


if __name__ == "__main__":
    main()
