"""Peak memory of extraction against the number of stimuli: in memory vs streamed to an on-disk store.

torchvision ResNet-18 (random init), layers layer2 + layer3 + layer4, synthetic images. Each (mode, n) runs in a
fresh process, which reports its peak resident memory (ru_maxrss) and time; the streamed run's activations are
checked equal to the in-memory run's on the first stimuli. The peer is the workbench's own in-memory path (which is
what every extractor in the field does: THINGSvision and Net2Brain keep the features in RAM), so the script prints
the memory growth per 1,000 stimuli of each mode and their ratio at the largest n.

    python benchmarks/bench_extraction_memory.py [--sizes 256 1024 4096] [--image-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, resource, sys, tempfile, time
import numpy as np, pandas as pd, torch, torchvision
from workbench.data.stimuli import StimulusSet
from workbench.features.extract import extract_activations

mode, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
torch.set_num_threads(2)
model = torchvision.models.resnet18(weights=None).eval()
images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
stimuli = StimulusSet("noise", pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(n)]}), images)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prep = {"image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3}
start = time.perf_counter()
store = tempfile.mkdtemp() + "/store" if mode == "store" else None
acts = extract_activations(model, stimuli, ["layer2", "layer3", "layer4"], preprocess=prep, batch_size=64,
                           progress=False, store=store)
head = {layer: np.asarray(acts[layer][:8]).tolist() for layer in acts.layers}
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mb": base / 1024,
                  "seconds": time.perf_counter() - start, "head": head}))
"""


def _run(mode: str, n: int, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(size)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    peaks: dict[str, dict[int, list[float]]] = {"memory": {}, "store": {}}
    for n in args.sizes:
        for _ in range(args.repeats):  # interleaved, so both modes see the same machine load
            results = {mode: _run(mode, n, args.image_size) for mode in ("memory", "store")}
            for layer, rows in results["memory"]["head"].items():
                if not np.allclose(rows, results["store"]["head"][layer], atol=1e-6):
                    raise SystemExit(f"streamed activations of {layer} differ from the in-memory ones")
            for mode, result in results.items():
                peaks[mode].setdefault(n, []).append(result["peak_mb"])
                print(f"n={n:>6} {mode:>6}: peak {result['peak_mb']:8.1f} MB  {result['seconds']:6.1f} s")
    print("\nmode     " + "  ".join(f"n={n} median [range] MB" for n in args.sizes))
    slopes = {}
    for mode, by_n in peaks.items():
        medians = [float(np.median(by_n[n])) for n in args.sizes]
        slopes[mode] = np.polyfit(args.sizes, medians, 1)[0] * 1000
        cells = "  ".join(f"{np.median(by_n[n]):8.1f} [{min(by_n[n]):.0f}-{max(by_n[n]):.0f}]" for n in args.sizes)
        print(f"{mode:<8} {cells}   growth {slopes[mode]:.1f} MB per 1,000 stimuli")
    big = args.sizes[-1]
    ratio = np.median(peaks["memory"][big]) / np.median(peaks["store"][big])
    print(f"\nat n={big}: in-memory peak / streamed peak = {ratio:.2f}x")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
