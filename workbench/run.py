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
from typing import Any, Iterable, Mapping

from workbench.registry import nearest
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

    # -- artefacts: every path a stage writes or reads, with the reader next to the writer -------------------------
    @property
    def checkpoint_path(self) -> Path:
        """checkpoints/model.pt: weights + model config + cortical sheets (written by the train stage)."""
        return self.path / "checkpoints" / "model.pt"

    @property
    def training_resume_path(self) -> Path | None:
        """checkpoints/last.ckpt, Lightning's latest state of an interrupted fit (ModelCheckpoint(save_last=True) in
        ``checkpoints``), or None: the train stage resumes from it (model.pt is written only at the very end)."""
        last = self.path / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_model(self, model, model_cfg: dict, sheets=None, extra: dict | None = None) -> Path:
        from workbench.models import save_checkpoint

        return save_checkpoint(self.checkpoints / "model.pt", model, model_cfg, sheets, extra=extra)

    def load_model(self, map_location: str = "cpu"):
        from workbench.models import load_checkpoint

        return load_checkpoint(self.checkpoint_path, map_location=map_location)

    def activations_path(self, stimulus_set: str) -> Path:
        """cache/activations/<stimulus set>.npz (written by the extract stage)."""
        return self.cache / "activations" / f"{stimulus_set}.npz"

    @property
    def activations_work_dir(self) -> Path:
        """Per-layer pieces of an extraction in progress (a rerun after a crash reuses them)."""
        return self.subdir("cache/activations/keyed")

    def activation_sets(self) -> list[str]:
        folder = self.path / "cache" / "activations"
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []

    def save_activations(self, stimulus_set: str, activations) -> Path:
        return activations.save(self.activations_path(stimulus_set))

    def load_activations(self, stimulus_set: str):
        """The activations the extract stage wrote for ``stimulus_set`` in this run."""
        from workbench.features.extract import Activations

        path = self.activations_path(stimulus_set)
        if not path.exists():
            raise FileNotFoundError(
                f"no activations for stimulus set {stimulus_set!r} in {self.path}; extracted sets: "
                f"{self.activation_sets()}. Add it to extract.stimulus_sets and rerun the extract stage.")
        return Activations.load(path)

    def readout_path(self, source: str, layer: str) -> Path:
        """cache/readouts/<source>/<layer>.npz: a fitted linear readout from a layer to recorded neuroids
        (``source`` names the recordings, e.g. the stimulus set cowley_v4_201025)."""
        return self.cache / "readouts" / source / f"{layer}.npz"

    def save_readout(self, source: str, layer: str, **arrays) -> Path:
        return self.save_arrays(self.readout_path(source, layer), **arrays)

    def readout_layers(self, source: str) -> list[str]:
        folder = self.path / "cache" / "readouts" / source
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []

    def load_readout(self, source: str, layer: str) -> dict:
        path = self.readout_path(source, layer)
        if not path.is_file():
            raise FileNotFoundError(f"no fitted readout {path}; run the align stage with recordings {source!r} "
                                    f"first (readouts here: {self.readout_layers(source)})")
        return self.load_arrays(path)

    def _npz_artefact(self, relative: str) -> Path:
        return self.path / "cache" / relative

    @property
    def topography_maps_path(self) -> Path:
        """cache/topography/selectivity.npz: selectivity maps and sheet positions (the topography stage)."""
        return self._npz_artefact("topography/selectivity.npz")

    @property
    def lesions_path(self) -> Path:
        """cache/intervention/lesions.npz: the units of every lesion and the selectivity maps (the intervene stage)."""
        return self._npz_artefact("intervention/lesions.npz")

    def synthesis_path(self, name: str) -> Path:
        """cache/synthesis/<name>.npz: one target's synthesised images, their values and the natural rivals (the
        synthesize stage)."""
        return self._npz_artefact(f"synthesis/{name}.npz")

    def save_synthesis(self, name: str, **arrays) -> Path:
        return self.save_arrays(self.synthesis_path(name), **arrays)

    def synthesis_names(self) -> list[str]:
        folder = self.path / "cache" / "synthesis"
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []

    def load_synthesis(self, name: str) -> dict:
        return self.load_arrays(self.synthesis_path(name))

    def save_arrays(self, path: Path, **arrays) -> Path:
        from workbench.utils import atomic_save_npz

        return atomic_save_npz(path, **arrays)

    def load_arrays(self, path: Path) -> dict:
        import numpy as np

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; rerun the stage that writes it")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

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

    # -- a run that stopped ---------------------------------------------------------------------------------------
    @property
    def failure_path(self) -> Path:
        """failed.json: the stage that raised, its error and the stages not done (the report's banner); removed
        when a later call finishes every stage."""
        return self.path / "failed.json"

    def write_failure(self, stage: str, error: BaseException, missing: list[str]) -> None:
        atomic_write_json(self.failure_path, {"stage": stage, "error": f"{type(error).__name__}: {error}",
                                              "missing": missing})

    def failure(self) -> dict[str, Any] | None:
        if not self.failure_path.is_file():
            return None
        with open(self.failure_path) as f:
            return json.load(f)

    def clear_failure(self) -> None:
        self.failure_path.unlink(missing_ok=True)

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


def get_metric(metrics: Mapping[str, Any], dotted: str):
    """``metrics["align"]["summary"]["best_hIT_score"]`` for ``"align.summary.best_hIT_score"``; a key that itself
    holds dots (a torchvision layer ``layer4.1``) is matched whole, longest first."""
    node: Any = metrics
    parts = dotted.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            raise KeyError(f"metric {dotted!r} not found ({'.'.join(parts[:i])} is not a section)")
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            raise KeyError(f"metric {dotted!r} not found (no {parts[i]!r}{nearest(parts[i], node)}); keys there: "
                           f"{sorted(node)[:20]}")
    return node
