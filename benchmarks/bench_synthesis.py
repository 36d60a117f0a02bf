"""Synthesis: ``workbench.synthesis.synthesize`` vs torch-lucent's ``render_vis`` on the same model and objective.

    python benchmarks/bench_synthesis.py [--images 4] [--steps 128] [--size 32] [--width 16] [--repeats 5]
        [--device cpu|cuda] [--layer conv3] [--channel 0]

Peer: torch-lucent 0.1.8 (``pip install torch-lucent``; it imports kornia, decorator and IPython; for kornia >= 0.7
the script points lucent's two old kornia names at their new home, see ``kornia_shim``). The objective is
the mean of one channel of ``--layer`` of the workbench's small CNN (seeded random weights, eval mode), which is
lucent's ``objectives.channel`` (minus the mean over batch and space) and the workbench's ``UnitTarget(channel=)``.
Both sides: ``--images`` images in one batch, ``--steps`` Adam steps at lr 0.05, Fourier parametrisation with
decorrelated colour, images kept in [0, 1] (lucent: a sigmoid; workbench: a budget whose range is [0, 1] and whose
L2 radius, 0.5 sqrt(values), never binds inside that box). Two settings are timed:

- ``plain``: no transforms on either side (the cost of the optimisation loop itself);
- ``robust``: each side's own robustness transforms at the same strength (lucent: jitter(2), random_scale
  (0.95..1.05), random_rotate(-5..5); workbench: Transforms(jitter=2, rotate=5, scale=(0.95, 1.05))).

lucent's ``render_vis`` gets ``preprocess=False`` (the model takes [0, 1] inputs here) and ``fixed_image_size`` equal
to the image size (no upsampling to 224). The calls run interleaved, order alternating, ``--repeats`` times after
one warm-up each; printed: median and range of images per second and of the ratio workbench / lucent per repeat
(> 1: workbench faster), and the objective of both sides' final images under the same plain forward pass (they
optimise the same objective, so their values must be of the same size: the check fails when the medians differ by
more than a factor of 2). On a loaded machine the wall-clock times are noisy; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
AGREEMENT_FACTOR = 2.0


def build_model(width: int, device: torch.device):
    from workbench.models import build_model as build

    torch.manual_seed(0)
    return build({"name": "small_cnn", "num_classes": 10, "width": width}).to(device).eval()


def channel_value(model, layer: str, channel: int, images: torch.Tensor) -> np.ndarray:
    """Mean of ``channel`` of ``layer`` per image (the objective of both sides, without transforms)."""
    from workbench.attribution.targets import TargetForward, UnitTarget

    forward = TargetForward(model, UnitTarget(layer=layer, channel=channel), images[:1])
    with torch.no_grad():
        return forward(images).squeeze(1).double().cpu().numpy()


def kornia_shim() -> None:
    """lucent 0.1.8 calls ``kornia.get_rotation_matrix2d`` / ``kornia.warp_affine``, which kornia >= 0.7 keeps under
    ``kornia.geometry.transform`` only: the same functions, re-exported where lucent looks for them."""
    import kornia
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    kornia.get_rotation_matrix2d, kornia.warp_affine = get_rotation_matrix2d, warp_affine


def run_lucent(model, args, robust: bool) -> torch.Tensor:
    from lucent.optvis import objectives, param, render, transform

    transforms = ([transform.jitter(2), transform.random_scale([0.95 + 0.01 * i for i in range(11)]),
                   transform.random_rotate(list(range(-5, 6)))] if robust else [])
    captured = {}

    def param_f():
        params, image_f = param.image(args.size, batch=args.images, fft=True, decorrelate=True)
        captured["image_f"] = image_f
        return params, image_f

    render.render_vis(model, objectives.channel(args.layer, args.channel), param_f, transforms=transforms,
                      thresholds=(args.steps,), progress=False, show_image=False, preprocess=False,
                      fixed_image_size=args.size)
    return captured["image_f"]().detach()


def run_workbench(model, args, robust: bool) -> torch.Tensor:
    from workbench.attribution.targets import UnitTarget
    from workbench.synthesis import NormBudget, Transforms, synthesize

    shape = (3, args.size, args.size)
    values = 3 * args.size * args.size
    half = torch.full((3, 1, 1), 0.5)
    budget = NormBudget(0.5 * values ** 0.5, centre=half, low=torch.zeros(3, 1, 1), high=torch.ones(3, 1, 1))
    transforms = Transforms(2, 5, (0.95, 1.05)) if robust else Transforms(0, 0, (1.0, 1.0))
    result = synthesize(model, UnitTarget(layer=args.layer, channel=args.channel), shape=shape, budget=budget,
                        seeds=list(range(args.images)), steps=args.steps, lr=0.05, param="fourier",
                        transforms=transforms, device=args.device, progress=False)
    return result.images


def timed(fn, *a) -> tuple[float, torch.Tensor]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn(*a)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def compare(model, args, robust: bool) -> bool:
    name = "robust" if robust else "plain"
    for fn in (run_lucent, run_workbench):  # warm-up: imports, kernels, the target's shape probe
        fn(model, args, robust)
    seconds = {"lucent": [], "workbench": []}
    finals = {}
    for r in range(args.repeats):
        order = [("lucent", run_lucent), ("workbench", run_workbench)][::1 if r % 2 == 0 else -1]
        for side, fn in order:
            s, images = timed(fn, model, args, robust)
            seconds[side].append(s)
            finals[side] = images
    rate = {k: args.images / np.asarray(v) for k, v in seconds.items()}
    ratio = rate["workbench"] / rate["lucent"]
    values = {k: channel_value(model, args.layer, args.channel, v.to(args.device)) for k, v in finals.items()}
    print(f"\n[{name}] {args.images} images x {args.steps} steps, {args.size} px, {args.layer} channel "
          f"{args.channel}, {args.repeats} repeats")
    for side in ("lucent", "workbench"):
        print(f"  {side:10s} images/s median {np.median(rate[side]):8.2f}  range {rate[side].min():.2f}.."
              f"{rate[side].max():.2f}   objective per image {np.round(values[side], 4).tolist()}")
    print(f"  ratio workbench / lucent: median {np.median(ratio):.2f}  range {ratio.min():.2f}..{ratio.max():.2f}")
    a, b = np.median(values["lucent"]), np.median(values["workbench"])
    agree = b > 0 and a > 0 and max(a, b) / min(a, b) <= AGREEMENT_FACTOR
    print(f"  objective medians lucent {a:.4f}, workbench {b:.4f}: "
          f"{'same ballpark' if agree else 'DISAGREE'} (factor <= {AGREEMENT_FACTOR})")
    return agree


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layer", default="conv3")
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    try:
        import lucent.optvis.render  # noqa: F401  (the peer; a clear message when it is missing)
    except ImportError as err:
        raise SystemExit(f"the peer is torch-lucent: pip install torch-lucent kornia decorator ipython ({err})")
    if args.device == "cpu" and torch.cuda.is_available():
        raise SystemExit("lucent puts its images on CUDA whenever CUDA is present; run with --device cuda")
    kornia_shim()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    model = build_model(args.width, device)
    ok = [compare(model, args, robust) for robust in (False, True)]
    if not all(ok):
        raise SystemExit("the two sides' objectives disagree: the comparison is not like for like")


if __name__ == "__main__":
    main()
