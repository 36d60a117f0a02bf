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

import contextlib
import json
import logging
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


log = logging.getLogger("workbench")


class NotARunError(FileNotFoundError):
    pass


class ArtefactError(RuntimeError):
    """A file a stage wrote into the run changed since (its sha256 differs from the one recorded when it was
    written) or cannot be read. The pipeline discards it and reruns ``stage``, the stage that writes it."""

    def __init__(self, path: Path, stage: str | None, problem: str):
        self.path, self.stage = Path(path), stage
        rerun = f"the {stage} stage, which writes it, reruns" if stage else "rerun the stage that writes it"
        super().__init__(f"{path} {problem}; it is not used: {rerun}")


ARTEFACTS_FILE = "artefacts.json"  # relative path -> {"sha256", "stage"} of every artefact a stage wrote
# the stage that writes each kind of artefact (for runs made before artefacts.json recorded it)
_WRITERS = {"checkpoints": "train", "cache/activations": "extract", "cache/readouts": "align",
            "cache/topography": "topography", "cache/intervention": "intervene", "cache/synthesis": "synthesize"}
_HASHED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: a process hashes a file once


class RunDir:
    """A results folder for one run; stages read what earlier stages wrote and add their own section."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        self.writing_stage: str | None = None  # set by the pipeline while a stage runs (recorded per artefact)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / "metrics.json").exists() and not (self.path / "config.yaml").exists():
            raise NotARunError(
                f"{self.path} is not a workbench run directory (no config.yaml or metrics.json in it)"
            )

    # -- one process at a time -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold ``<run>/.lock`` while this process writes the run; another process gets RunLockedError naming the
        holder. Re-entrant within a process; released by the OS if the process dies."""
        with folder_lock(self.path, "run"):
            yield self

    def remove_temporary_files(self) -> list[Path]:
        """Delete the temporary files of atomic writes that a killed process left (call with the lock held)."""
        found = [p for p in self.path.rglob(".*.tmp") if p.is_file()]
        for path in found:
            path.unlink(missing_ok=True)
        return found

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
        import zipfile

        last = self.path / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None
        if not zipfile.is_zipfile(last):  # emptied or cut short (torch writes a zip archive): train afresh
            aside = last.with_name("last.ckpt.corrupt")
            os.replace(last, aside)
            log.warning(f"[workbench] {last} is unreadable (empty or cut short); moved to {aside.name}, and training "
                        f"starts again from epoch 0")
            return None
        return last

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_model(self, model, model_cfg: dict, sheets=None, extra: dict | None = None) -> Path:
        from workbench.models import save_checkpoint

        return self.record_artefact(save_checkpoint(self.checkpoints / "model.pt", model, model_cfg, sheets,
                                                    extra=extra))

    def load_model(self, map_location: str = "cpu"):
        from workbench.models import load_checkpoint

        path = self.verify_artefact(self.checkpoint_path)
        return self._readable(path, lambda: load_checkpoint(path, map_location=map_location))

    def activations_path(self, stimulus_set: str) -> Path:
        """cache/activations/<stimulus set>.npz (written by the extract stage)."""
        return self.cache / "activations" / f"{stimulus_set}.npz"

    @property
    def activations_work_dir(self) -> Path:
        """Per-layer pieces of an extraction in progress (a rerun after a crash reuses them)."""
        return self.subdir("cache/activations/keyed")

    def activations_store_path(self, stimulus_set: str) -> Path:
        """cache/activations/<stimulus set>.store/: activations streamed to disk (``workbench.features.store``)."""
        return self.cache / "activations" / f"{stimulus_set}.store"

    def activation_sets(self) -> list[str]:
        from workbench.features.store import is_store

        folder = self.path / "cache" / "activations"
        if not folder.is_dir():
            return []
        stores = [p.name.removesuffix(".store") for p in folder.glob("*.store") if is_store(p)]
        return sorted({p.stem for p in folder.glob("*.npz")} | set(stores))

    def save_activations(self, stimulus_set: str, activations) -> Path:
        import shutil

        shutil.rmtree(self.activations_store_path(stimulus_set), ignore_errors=True)  # an earlier streamed extraction
        return self.record_artefact(activations.save(self.activations_path(stimulus_set)))

    def record_store(self, stimulus_set: str) -> Path:
        """Record the hashes of a store's files (the extract stage wrote it batch by batch)."""
        from workbench.features.store import store_files

        folder = self.activations_store_path(stimulus_set)
        for path in store_files(folder):
            self.record_artefact(path)
        self.activations_path(stimulus_set).unlink(missing_ok=True)  # a store replaces an in-memory extraction
        return folder

    def load_activations(self, stimulus_set: str):
        """The activations the extract stage wrote for ``stimulus_set`` in this run (a store reads lazily)."""
        from workbench.features.extract import Activations
        from workbench.features.store import is_store, open_store, store_files

        store = self.activations_store_path(stimulus_set)
        if is_store(store):
            for path in store_files(store):
                self.verify_artefact(path)
            return self._readable(store / "meta.json", lambda: open_store(store))
        path = self.activations_path(stimulus_set)
        if not path.exists():
            raise FileNotFoundError(
                f"no activations for stimulus set {stimulus_set!r} in {self.path}; extracted sets: "
                f"{self.activation_sets()}. Add it to extract.stimulus_sets and rerun the extract stage.")
        self.verify_artefact(path)
        return self._readable(path, lambda: Activations.load(path))

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

        return self.record_artefact(atomic_save_npz(path, **arrays))

    def load_arrays(self, path: Path) -> dict:
        import numpy as np

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; rerun the stage that writes it")
        self.verify_artefact(path)

        def read():
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return self._readable(path, read)

    # -- artefact integrity: each file's sha256 recorded when written, checked when read -----------------------------
    def _artefacts(self) -> dict[str, dict]:
        path = self.path / ARTEFACTS_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:  # an unreadable record protects nothing: start a new one (files then load unchecked)
            log.warning(f"[workbench] {path} was unreadable; artefact hashes are recorded afresh")
            return {}

    def _relative(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.path.resolve())).as_posix()

    def record_artefact(self, path: Path) -> Path:
        """Record ``path``'s sha256 and the stage writing it (call right after writing it)."""
        record = self._artefacts()
        record[self._relative(path)] = {"sha256": _sha256_cached(path), "stage": self.writing_stage}
        atomic_write_json(self.path / ARTEFACTS_FILE, record)
        return path

    def verify_artefact(self, path: Path) -> Path:
        """``path`` if its sha256 is the one recorded when it was written (or none was recorded: an older run)."""
        entry = self._artefacts().get(self._relative(path))
        if entry and _sha256_cached(path) != entry["sha256"]:
            raise ArtefactError(path, entry.get("stage") or self.artefact_writer(path),
                                "changed after it was written (its sha256 differs from the one recorded then)")
        return path

    def artefact_writer(self, path: Path) -> str | None:
        """The stage that writes ``path``: as recorded, else by where it lives."""
        relative = self._relative(path)
        entry = self._artefacts().get(relative) or {}
        if entry.get("stage"):
            return entry["stage"]
        return next((stage for prefix, stage in _WRITERS.items() if relative.startswith(prefix + "/")), None)

    def discard_artefact(self, path: Path) -> None:
        """Delete an artefact that failed its check (a store's file: the whole store), and its record."""
        import shutil

        if Path(path).parent.name.endswith(".store"):
            shutil.rmtree(Path(path).parent, ignore_errors=True)
        Path(path).unlink(missing_ok=True)
        record = self._artefacts()
        if record.pop(self._relative(path), None) is not None:
            atomic_write_json(self.path / ARTEFACTS_FILE, record)

    def _readable(self, path: Path, read):
        """``read()``, with a file that cannot be parsed (truncated, emptied) reported as an ArtefactError."""
        import zipfile

        try:
            return read()
        except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError, RuntimeError) as err:
            # a RuntimeError is torch's unreadable archive only; others (a state_dict that no longer fits) propagate
            if isinstance(err, FileNotFoundError) or (
                    type(err) is RuntimeError and "PytorchStreamReader" not in str(err)):
                raise
            raise ArtefactError(path, self.artefact_writer(path),
                                f"cannot be read ({type(err).__name__}: {err})") from err

    # -- metrics ---------------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def metrics(self) -> dict[str, Any]:
        """metrics.json's sections (non-finite values restored). An unreadable file (emptied or cut short outside
        the workbench, which writes atomically) is moved aside to metrics.json.corrupt and its stages rerun."""
        from workbench.utils import decode_nonfinite

        if not self.metrics_path.exists():
            return {}
        try:
            data = json.loads(self.metrics_path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        except ValueError as err:
            aside = self.metrics_path.with_name("metrics.json.corrupt")
            os.replace(self.metrics_path, aside)
            log.warning(f"[workbench] {self.metrics_path} was unreadable ({err}); moved to {aside.name}, and every "
                        f"stage of this run reruns (caches whose hashes still match are reused)")
            return {}
        return decode_nonfinite(data)

    def has_stage(self, stage: str) -> bool:
        return stage in self.metrics()

    def write_stage(self, stage: str, section: dict[str, Any]) -> None:
        from workbench.utils import encode_nonfinite

        metrics = self.metrics()
        metrics[stage] = section
        atomic_write_json(self.metrics_path, encode_nonfinite(metrics))

    def drop_stage(self, stage: str) -> None:
        """Forget a stage's section, so that the next call reruns it."""
        from workbench.utils import encode_nonfinite

        metrics = self.metrics()
        if metrics.pop(stage, None) is not None:
            atomic_write_json(self.metrics_path, encode_nonfinite(metrics))

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

    def add_provenance(self, **fields: Any) -> None:
        """Add fields to provenance.json (the train stage records the hashes of the training data it read)."""
        path = self.path / "provenance.json"
        prov = json.loads(path.read_text()) if path.is_file() else {}
        atomic_write_json(path, {**prov, **fields})

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


class RunLockedError(RuntimeError):
    pass


_HELD_LOCKS: dict[str, list] = {}  # resolved folder -> [open lock file, depth]


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run"):
    """An exclusive lock on ``<folder>/.lock`` (flock: the OS drops it when the holder dies, so none goes stale)."""
    import fcntl

    folder = Path(folder).resolve()
    key = str(folder)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key][1] += 1
    else:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"the {what} folder {folder} is in use by {holder}; two processes writing one {what} would lose "
                f"results. Wait for it to finish (or stop it), or use another "
                f"{'run_dir' if what == 'run' else 'sweep_dir'}.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()} (since "
                     f"{datetime.now(timezone.utc).isoformat(timespec='seconds')})")
        handle.flush()
        _HELD_LOCKS[key] = [handle, 1]
    try:
        yield
    finally:
        _HELD_LOCKS[key][1] -= 1
        if _HELD_LOCKS[key][1] == 0:
            handle = _HELD_LOCKS.pop(key)[0]
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _sha256_cached(path: Path) -> str:
    from workbench.utils import sha256_file

    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


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
