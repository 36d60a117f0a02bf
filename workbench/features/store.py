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
store that looks finished.
"""

from __future__ import annotations

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
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)  # what an interrupted extraction left
        self.partial.mkdir(parents=True)
        self.stimulus_ids = np.asarray(stimulus_ids).astype(str)
        self.files = {layer: f"layer_{k:03d}.npy" for k, layer in enumerate(layers)}
        self.handles: dict[str, tuple] = {}  # layer -> (open file, data offset, width)

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        # plain writes at the rows' offset, not through a memory map: pages written through a map count as this
        # process's resident memory until the OS evicts them, so a mapped writer's RSS grows with the stimuli
        if layer not in self.handles:  # the width is known at the first batch: write the .npy header, size the file
            handle = open(self.partial / self.files[layer], "w+b")
            shape = (len(self.stimulus_ids), rows.shape[1])
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
            offset = handle.tell()
            handle.truncate(offset + shape[0] * shape[1] * 4)
            self.handles[layer] = (handle, offset, rows.shape[1])
        handle, offset, width = self.handles[layer]
        if rows.shape[1] != width:
            raise ValueError(f"layer {layer!r}: a batch of width {rows.shape[1]}, earlier batches {width}")
        handle.seek(offset + start * width * 4)
        handle.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())

    def close(self, unit_shapes: dict, projection: dict) -> Path:
        missing = [layer for layer in self.files if layer not in self.handles]
        if missing:
            raise RuntimeError(f"the store {self.folder} received no rows for layers {missing}")
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
            handle.close()
        self.handles.clear()
        shutil.rmtree(self.partial, ignore_errors=True)


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
