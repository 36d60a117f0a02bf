"""Activations written to disk batch by batch, so that extraction's memory does not grow with the stimuli.

A store is a folder: ``meta.json`` (stimulus ids, layers, unit shapes, projections, and which file holds each
layer) and one ``layer_<k>.npy`` per layer, float32, (n_stimuli, n_features). Extraction writes every batch into
its rows of each file; reading opens the files as read-only memory maps, so a layer's rows come off disk only when
used.

Why ``.npy`` memory maps rather than zarr: numpy reads and writes them with no extra dependency, a memory map is an
``np.ndarray`` every alignment function already accepts (no copy, no API to learn), and rows are contiguous, which
is the access pattern of extraction (append rows) and of blockwise alignment (read row blocks). zarr would add
compression and cloud object stores; activations are dense floats that barely compress, and the run directory is
local, so it would buy little here.

A store is written to ``<folder>.partial`` and renamed when complete: an interrupted extraction never leaves a
store that looks finished. Bad places fail early and leave nothing behind: a folder that cannot be written is
refused before the first forward pass (naming the folder and the fix), layer files that will not fit on the disk at
the first batch, and a disk that fills mid-way (ENOSPC) removes the ``.partial`` folder; a rerun never reads a
``.partial`` (it is only ever replaced), and an existing folder that is not a store is never overwritten.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from workbench.utils import atomic_write_text

META = "meta.json"


def is_store(path: str | os.PathLike) -> bool:
    return (Path(path) / META).is_file()


class StoreWriter:
    """Rows of each layer written into ``<folder>.partial/layer_<k>.npy`` as they come; ``close`` renames the
    folder into place. Peak memory is one batch, whatever the number of stimuli."""

    def __init__(self, folder: str | os.PathLike, stimulus_ids: Sequence, layers: Sequence[str],
                 key: str | None = None):
        self.folder, self.key = Path(folder), key
        if self.folder.exists() and not is_store(self.folder) and any(self.folder.iterdir()):
            # close() replaces the folder: never delete what is not a store
            raise FileExistsError(f"{self.folder} exists and is not an activation store (no {META}); choose another "
                                  f"store folder or empty this one")
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)  # what an interrupted extraction left
        try:
            self.partial.mkdir(parents=True)
        except OSError as err:  # before any extraction work: the folder is known before the first batch
            raise type(err)(err.errno, f"cannot write the activation store {self.folder} ({err.strerror}): make "
                                       f"{_existing_ancestor(self.partial)} writable (e.g. chmod u+w) or choose a "
                                       f"writable store folder") from err
        self.stimulus_ids = np.asarray(stimulus_ids).astype(str)
        self.files = {layer: f"layer_{k:03d}.npy" for k, layer in enumerate(layers)}
        self.handles: dict[str, tuple] = {}  # layer -> (open file, data offset, width)
        self.reserved = self.written = 0  # bytes: the layer files' sizes, the rows written so far

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        # plain writes at the rows' offset, not through a memory map: pages written through a map count as this
        # process's resident memory until the OS evicts them, so a mapped writer's RSS grows with the stimuli
        if layer not in self.handles:  # the width is known at the first batch: write the .npy header, size the file
            handle = open(self.partial / self.files[layer], "w+b")
            shape = (len(self.stimulus_ids), rows.shape[1])
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
            offset = handle.tell()
            handle.truncate(offset + shape[0] * shape[1] * 4)  # sparse: the disk fills as rows are written
            self.handles[layer] = (handle, offset, rows.shape[1])
            self.reserved += shape[0] * shape[1] * 4
            self._check_free_space()
        handle, offset, width = self.handles[layer]
        if rows.shape[1] != width:
            raise ValueError(f"layer {layer!r}: a batch of width {rows.shape[1]}, earlier batches {width}")
        data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
        try:
            _write_at(handle, offset + start * width * 4, data)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise OSError(errno.ENOSPC, f"the disk filled while writing the activation store {self.folder} "
                                        f"({self.reserved / 1e9:.2f} GB in all); the unfinished store is removed. "
                                        f"Free space, choose a store folder on a larger disk, or reduce the "
                                        f"features (extract.projection_dim, reduction='pool')") from err
        self.written += len(data)

    def _check_free_space(self) -> None:
        """Refuse at the first batch, not hours later, when the layers' files will not fit on the disk."""
        needed, free = self.reserved - self.written, shutil.disk_usage(self.partial).free
        if needed > free:
            raise OSError(errno.ENOSPC, f"the activation store {self.folder} needs {needed / 1e9:.2f} GB more but "
                                        f"its disk has {free / 1e9:.2f} GB free; free space, choose a store folder "
                                        f"on a larger disk, or reduce the features (extract.projection_dim, "
                                        f"reduction='pool')")

    def close(self, unit_shapes: dict, projection: dict) -> Path:
        missing = [layer for layer in self.files if layer not in self.handles]
        if missing:
            self.abort()
            raise RuntimeError(f"the store {self.folder} received no rows for layers {missing}")
        try:
            return self._finish(unit_shapes, projection)
        except BaseException:  # a disk filled by the flush or the metadata: leave nothing a rerun could trust
            self.abort()
            raise

    def _finish(self, unit_shapes: dict, projection: dict) -> Path:
        for handle, _, _ in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self.handles.clear()
        meta = {"key": self.key, "stimulus_ids": self.stimulus_ids.tolist(), "layers": list(self.files),
                "files": self.files, "unit_shapes": {k: list(v) for k, v in unit_shapes.items()},
                "projection": projection}
        atomic_write_text(self.partial / META, json.dumps(meta))
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.partial, self.folder)
        return self.folder

    def abort(self) -> None:
        for handle, _, _ in self.handles.values():
            try:
                handle.close()
            except OSError:  # a full disk refuses the buffered rest: the files are removed anyway
                pass
        self.handles.clear()
        shutil.rmtree(self.partial, ignore_errors=True)


def _write_at(handle, position: int, data: bytes) -> None:
    handle.seek(position)
    handle.write(data)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def read_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an activation store (no {META}); extract again")
    return json.loads(path.read_text())


def store_files(folder: str | os.PathLike) -> list[Path]:
    """Every file of a store (for hashing): meta.json and the layer files."""
    meta = read_meta(folder)
    return [Path(folder) / META] + [Path(folder) / name for name in meta["files"].values()]


def open_store(folder: str | os.PathLike):
    """The store as ``Activations`` whose layers are read-only memory maps (nothing is read until used)."""
    from workbench.features.extract import Activations

    meta = read_meta(folder)
    arrays = {layer: np.load(Path(folder) / meta["files"][layer], mmap_mode="r") for layer in meta["layers"]}
    return Activations(arrays, np.asarray(meta["stimulus_ids"]), meta["unit_shapes"], meta["projection"])
