"""Extraction over 2 DDP processes (``extract_sharded``, Lightning ``Trainer.predict``) against one process
(``extract_activations(..., store=)``), in the same script: wall time, median and range over repeats, the ratio,
and a check that every store is bitwise equal to the one-process store.

torchvision ResNet-18 (random init), layers layer2 + layer3 + layer4, synthetic images. Both sides run with one
torch thread per process (as Lightning sets it for 2 processes on a 2-core machine), so the ratio is what a second
core (or GPU) buys; on a machine whose cores are shared with other work it is lower. The first sharded call also
starts the second process (Lightning re-runs this script with LOCAL_RANK=1): it is reported apart, the later calls
find the process group's members running.

    python benchmarks/bench_sharded_extraction.py [--n 256] [--image-size 96] [--repeats 3] [--devices 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from workbench.data.stimuli import StimulusSet
from workbench.features.extract import extract_activations
from workbench.features.sharded import extract_sharded

LAYERS = ["layer2", "layer3", "layer4"]


def _same(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in ("meta.json", "layer_000.npy",
                                                                              "layer_001.npy", "layer_002.npy"))


def _summary(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds):.2f} s (range {min(seconds):.2f}-{max(seconds):.2f}, n={len(seconds)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--folder", default=None, help="where the stores go (default: a temporary folder)")
    args = parser.parse_args()
    extra_rank = "LOCAL_RANK" in os.environ  # Lightning started this copy: it only takes part in the sharded calls
    folder = Path(args.folder or os.environ.setdefault("BENCH_SHARDED_FOLDER", tempfile.mkdtemp()))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.resnet18(weights=None).eval()
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.image_size, args.image_size, 3), dtype=np.uint8)
    stimuli = StimulusSet("noise", pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(args.n)]}), images)
    options = dict(preprocess={"image_size": args.image_size, "mean": [0.5] * 3, "std": [0.25] * 3}, batch_size=32)
    one, sharded = [], []
    for repeat in range(args.repeats + 1):  # interleaved, so both see the same machine load; call 0 starts rank 1
        if not extra_rank:
            start = time.perf_counter()
            extract_activations(model, stimuli, LAYERS, progress=False, store=folder / f"one_{repeat}", **options)
            one.append(time.perf_counter() - start)
        start = time.perf_counter()
        extract_sharded(model, stimuli, folder / f"sharded_{repeat}", LAYERS, devices=args.devices,
                        accelerator="cpu", **options)
        sharded.append(time.perf_counter() - start)
    if extra_rank:
        return
    equal = all(_same(folder / f"sharded_{r}", folder / "one_0") and _same(folder / f"one_{r}", folder / "one_0")
                for r in range(args.repeats + 1))
    print(f"{args.n} images of {args.image_size} px, ResNet-18 {'+'.join(LAYERS)}, batch 32, 1 thread per process")
    print(f"1 process:            {_summary(one)}")
    print(f"{args.devices} processes (warm):  {_summary(sharded[1:])}")
    print(f"{args.devices} processes, first call (starts the other ranks): {sharded[0]:.2f} s")
    print(f"ratio 1 process / {args.devices} processes (medians, warm): "
          f"{statistics.median(one) / statistics.median(sharded[1:]):.2f}x")
    print(f"stores bitwise equal to the 1-process store: {equal}")


if __name__ == "__main__":
    main()
