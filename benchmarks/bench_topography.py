"""Training-step time with the topographic loss divided by the time without it (same model, batch, device).

    python benchmarks/bench_topography.py [--model small_cnn] [--width 32] [--batch 128] [--steps 10]
                                          [--repeats 7] [--loss spatial_correlation] [--option key=value ...]
                                          [--device auto] [--threads N] [--clock wall|cpu]

Goal: median ratio <= 1.10 over at least 7 repeats. Each repeat times both settings back to back, in alternating
order, so thermal or background drift hits both alike; the ratio of each repeat is topographic / plain, and the
benchmark prints their median and range. ``--option neighbourhood=knn --option eps=1.0e-6`` times the earlier
form of the spatial loss (write 1.0e-6: YAML reads 1e-6 as a string).

On a CPU shared with other jobs, wall time mostly measures the wait for a core; ``--threads 1 --clock cpu`` times
the process's own CPU seconds instead (one thread never waits for a second one), which the load barely changes.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from workbench.models import build_model
from workbench.training.losses import parse_topography
from workbench.utils import get_device

ROOT = Path(__file__).resolve().parents[1]


def make_step(model_cfg: dict, device, topographic: bool):
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).train()
    objectives = parse_topography(model_cfg, model) if topographic else []
    for obj in objectives:
        obj.loss.to(device)
    captured = {}
    for layer in {o.layer for o in objectives if o.loss.needs_activations}:
        model.get_submodule(layer).register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        for obj in objectives:
            loss = loss + obj.weight * obj.loss(captured.get(obj.layer))
        loss.backward()
        opt.step()

    return step


def timed(step, x, y, steps: int, device, clock=time.perf_counter) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    for _ in range(steps):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - start) / steps


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--width", type=int, default=None, help="small_cnn width (default: the config's)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats (>= 7 for the goal)")
    ap.add_argument("--loss", default=None, help="override topography.loss (spatial_correlation | weight_smoothness)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the loss (model.topography.<loss>.KEY), YAML value; repeatable")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (a shared CPU, with --threads 1)")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    model_cfg = yaml.safe_load((ROOT / "configs" / "model" / f"{args.model}.yaml").read_text())
    if args.width is not None:
        model_cfg["width"] = args.width
    if args.loss:
        model_cfg["topography"]["loss"] = args.loss
    loss_name = model_cfg["topography"]["loss"]
    for option in args.option:
        key, _, value = option.partition("=")
        model_cfg["topography"].setdefault(loss_name, {})[key] = yaml.safe_load(value)
    if not model_cfg["topography"].get("weight"):
        model_cfg["topography"]["weight"] = 1.0
    device = get_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        ap.error(f"--clock cpu times CPU work only, and the device is {device}: use --device cpu")
    size = int(model_cfg["preprocess"]["image_size"])
    x = torch.randn(args.batch, 3, size, size, device=device)
    y = torch.randint(0, int(model_cfg["num_classes"]), (args.batch,), device=device)
    plain = make_step(copy.deepcopy(model_cfg), device, topographic=False)
    topo = make_step(copy.deepcopy(model_cfg), device, topographic=True)
    for step in (plain, topo):  # warm-up (allocator, cuDNN autotune, first-call overheads)
        timed(step, x, y, 2, device)
    t_plain, t_topo = [], []
    for repeat in range(args.repeats):
        order = ((plain, t_plain), (topo, t_topo))
        for step, times in order if repeat % 2 == 0 else order[::-1]:
            times.append(timed(step, x, y, args.steps, device, clock))
    ratios = [t / p for p, t in zip(t_plain, t_topo)]
    mp, mt, mr = statistics.median(t_plain), statistics.median(t_topo), statistics.median(ratios)
    layers = model_cfg["topography"]["layers"]
    print(f"device={device} model={args.model} width={model_cfg.get('width')} batch={args.batch} "
          f"threads={torch.get_num_threads()} clock={args.clock} layers={layers} loss={loss_name} "
          f"options={model_cfg['topography'].get(loss_name)}")
    print(f"plain step median {mp * 1000:.1f} ms (range {min(t_plain) * 1000:.1f}-{max(t_plain) * 1000:.1f}), "
          f"topographic step median {mt * 1000:.1f} ms (range {min(t_topo) * 1000:.1f}-{max(t_topo) * 1000:.1f})")
    print(f"overhead ratio median {mr:.3f} (range {min(ratios):.3f}-{max(ratios):.3f}) over {len(ratios)} "
          f"interleaved repeats; goal <= 1.10")
    return mr


if __name__ == "__main__":
    main()
