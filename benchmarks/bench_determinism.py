"""The cost of deterministic training on CPU (configs/trainer/cpu.yaml ``deterministic: true``).

    python benchmarks/bench_determinism.py [--repeats 3] [override ...]

Runs the train stage of the tiny default study (``preset=tiny``, or the study the overrides give) in this process,
with ``trainer.deterministic`` true and false, interleaved (the order alternating), ``--repeats`` times each, each
into a fresh run folder. Checks that every deterministic run trains the same weights bit for bit, says whether the
non-deterministic runs did too, and prints the median and range of the fit seconds of each and of the ratio
deterministic / not per repeat (> 1: determinism costs time). On a loaded machine the wall-clock times are noisy:
compare the ratios, which interleaving keeps fair.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train(cfg: dict, deterministic: bool) -> tuple[float, str]:
    """(fit seconds, sha256 of the trained weights) of one train stage into a fresh folder."""
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    folder = tempfile.mkdtemp(prefix="bench_determinism_")
    cfg = {**cfg, "run_dir": folder, "stages": ["train"],
           "trainer": {**cfg["trainer"], "deterministic": deterministic, "enable_progress_bar": False}}
    metrics = run_pipeline(cfg, RunDir(folder), log=lambda _: None)
    weights = RunDir(folder).load_model().state_dict()
    digest = hashlib.sha256(b"".join(weights[k].cpu().numpy().tobytes() for k in sorted(weights))).hexdigest()
    return metrics["train"]["fit_seconds"], digest


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (range {min(values):.2f} - {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["preset=tiny"])
    args = parser.parse_args()
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_config

    cfg = compose_config(list(args.overrides) + ["run_dir=unused", "sweep_dir=unused", "trainer.accelerator=cpu"])
    seconds: dict[bool, list[float]] = {True: [], False: []}
    digests: dict[bool, set[str]] = {True: set(), False: set()}
    for repeat in range(args.repeats):
        for deterministic in ((True, False) if repeat % 2 == 0 else (False, True)):
            fit, digest = _train(cfg, deterministic)
            seconds[deterministic].append(fit)
            digests[deterministic].add(digest)
    import torch

    print(f"train stage of {' '.join(args.overrides)}, {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for deterministic in (True, False):
        print(f"  deterministic={deterministic!s:<5}: fit seconds {_summary(seconds[deterministic])}; "
              f"{len(digests[deterministic])} distinct weight hash(es)")
    ratios = [a / b for a, b in zip(seconds[True], seconds[False])]
    print(f"  ratio deterministic / not: {_summary(ratios)}")
    print(f"  deterministic and non-deterministic runs trained the same weights: {digests[True] == digests[False]}")
    if len(digests[True]) != 1:
        raise SystemExit("deterministic training gave different weights: determinism is broken")


if __name__ == "__main__":
    main()
