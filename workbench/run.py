"""The run directory: the contract between stages, and with users.

    <run>/config.yaml        resolved config
    <run>/provenance.json    versions, git hash, seed, device, data sha256
    <run>/metrics.json       {"train": {...}, "extract": {...}, "align": {...}, ...}
    <run>/checkpoints/       model weights (+ cortical sheet positions)
    <run>/cache/             activations, fitted readouts
    <run>/figures/           PNG + PDF
    <run>/report.html

Every write goes to a temporary name and is renamed, so an interrupted run never leaves a half-written file, and a
stage whose section is already in metrics.json is skipped on rerun.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from workbench.utils import atomic_write_json, atomic_write_text

TRACKED_PACKAGES = (
    "workbench", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "captum", "shap",
    "scikit-learn", "scipy", "numpy", "xarray", "pandas", "matplotlib", "pooch", "rsatoolbox",
)


class NotARunError(FileNotFoundError):
    pass


class RunDir:
    """A results folder for one run; stages read what earlier stages wrote and add their own section."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / "metrics.json").exists() and not (self.path / "config.yaml").exists():
            raise NotARunError(
                f"{self.path} is not a workbench run directory (no config.yaml or metrics.json in it)"
            )

    # -- folders -------------------------------------------------------------------------------------------
    def subdir(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def checkpoints(self) -> Path:
        return self.subdir("checkpoints")

    @property
    def cache(self) -> Path:
        return self.subdir("cache")

    @property
    def figures(self) -> Path:
        return self.subdir("figures")

    # -- metrics ---------------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def metrics(self) -> dict[str, Any]:
        if not self.metrics_path.exists():
            return {}
        with open(self.metrics_path) as f:
            return json.load(f)

    def has_stage(self, stage: str) -> bool:
        return stage in self.metrics()

    def write_stage(self, stage: str, section: dict[str, Any]) -> None:
        metrics = self.metrics()
        metrics[stage] = section
        atomic_write_json(self.metrics_path, metrics)

    # -- config and provenance -------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def config(self) -> dict[str, Any]:
        import yaml

        path = self.path / "config.yaml"
        if not path.exists():
            return {}
        with open(path) as f:
            return yaml.safe_load(f) or {}

    def write_provenance(self, seed: int | None = None, device: str | None = None,
                         data_files: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
        prov = provenance(seed=seed, device=device, data_files=data_files)
        previous = self.path / "provenance.json"
        if previous.exists():
            # A resumed run keeps the history of the sessions that wrote into it.
            with open(previous) as f:
                old = json.load(f)
            prov["previous"] = old.get("previous", []) + [{k: old.get(k) for k in ("started", "git", "workbench")}]
        atomic_write_json(previous, prov)
        return prov

    def save_figure(self, fig, name: str, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
        """Save a matplotlib figure as figures/<name>.<fmt> for each format (atomically)."""
        import io

        from workbench.utils import atomic_write_bytes

        out = []
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
            out.append(atomic_write_bytes(self.figures / f"{name}.{fmt}", buf.getvalue()))
        return out

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def git_hash(cwd: str | os.PathLike | None = None) -> str | None:
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(seed: int | None = None, device: str | None = None,
               data_files: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    from workbench.utils import sha256_file

    import torch

    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workbench": package_versions(["workbench"])["workbench"],
        "git": git_hash(),
        "seed": seed,
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
        "packages": package_versions(),
        "data_files": {str(p): sha256_file(p) for p in data_files if Path(p).is_file()},
    }
