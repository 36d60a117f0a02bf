"""Images decoded when used: a stimulus set of 73,000 files never sits in RAM.

``LazyImages`` stands where a ``StimulusSet`` holds its (n, H, W, 3) uint8 array: it has that array's ``shape``,
``dtype`` and ``len``, and indexing it decodes only the rows asked for (``images[a:b]`` is a batch). Sources are the
files of a folder or the members of a zip archive. ``take`` makes a lazy subset (nothing decoded), and
``content_hash`` hashes the encoded files (what extraction's cache key needs) without decoding them.
``batches`` hands extraction its batches through a torch DataLoader, so worker processes decode while the model runs.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class LazyImages:
    """Encoded images (files of a folder, or members of ``archive``), decoded to uint8 RGB when indexed; all must
    have one size, or ``size`` resizes each to size x size."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, sources: Sequence[str | os.PathLike], size: int | None = None,
                 archive: str | os.PathLike | None = None, background: tuple[int, int, int] | None = None):
        if not len(sources):
            raise ValueError("LazyImages needs at least one image")
        self.sources = [str(s) for s in sources]
        self.size, self.archive, self.background = size, (str(archive) if archive is not None else None), background
        self._zip: zipfile.ZipFile | None = None
        first = self._decode(0)
        self.image_shape = first.shape

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.sources), *self.image_shape)

    def __len__(self) -> int:
        return len(self.sources)

    def __repr__(self) -> str:
        where = self.archive or (str(Path(self.sources[0]).parent) if self.sources else "")
        return f"LazyImages({len(self)} images {self.image_shape[0]}x{self.image_shape[1]} from {where})"

    def __getstate__(self) -> dict:  # an open zip handle does not cross into DataLoader workers
        return {**self.__dict__, "_zip": None}

    def _read(self, i: int) -> bytes:
        if self.archive is None:
            return Path(self.sources[i]).read_bytes()
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.archive)
        return self._zip.read(self.sources[i])

    def _decode(self, i: int) -> np.ndarray:
        from workbench.data.stimuli import decode_image  # 16-bit and translucent images as an eager set treats them

        array = decode_image(self._read(i), self.size, self.background, f"image {self.sources[i]}")
        if hasattr(self, "image_shape") and array.shape != self.image_shape:
            raise ValueError(f"image {self.sources[i]} is {array.shape[1]}x{array.shape[0]}, the first one "
                             f"{self.image_shape[1]}x{self.image_shape[0]}; pass size=... to resize them all")
        return array

    def _positions(self, index) -> np.ndarray:
        return np.arange(len(self))[index]

    def __getitem__(self, index) -> np.ndarray:
        positions = self._positions(index)
        if np.ndim(positions) == 0:
            return self._decode(int(positions))
        out = np.empty((len(positions), *self.image_shape), dtype=np.uint8)
        for row, i in enumerate(positions):
            out[row] = self._decode(int(i))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # a small set may be used whole (attribution, lesions)
        array = self[:]
        return array if dtype is None else array.astype(dtype)

    def take(self, index) -> "LazyImages":
        """The rows ``index`` selects, still lazy."""
        positions = np.atleast_1d(self._positions(index))
        subset = LazyImages.__new__(LazyImages)
        subset.__dict__.update(self.__getstate__())
        subset.sources = [self.sources[int(i)] for i in positions]
        return subset

    def content_hash(self) -> str:
        """sha256 over every encoded image (and the resize), in order: equal sets, equal hash."""
        digest = hashlib.sha256(f"size={self.size} background={self.background}".encode())
        for i in range(len(self)):
            digest.update(hashlib.sha256(self._read(i)).digest())
        return digest.hexdigest()

    @classmethod
    def from_zip(cls, archive: str | os.PathLike, members: Sequence[str] | None = None,
                 size: int | None = None) -> "LazyImages":
        from workbench.data.stimuli import IMAGE_SUFFIXES

        with zipfile.ZipFile(archive) as z:
            names = members if members is not None else sorted(
                n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES and not n.startswith("__MACOSX"))
        return cls(names, size, archive)


class _BatchDataset:
    """Batch k of ``images`` as one item, so that a DataLoader's workers decode whole batches."""

    def __init__(self, images: LazyImages, batch_size: int):
        self.images, self.batch_size = images, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.images[k * self.batch_size:(k + 1) * self.batch_size]


def _as_is(batch):
    return batch


def batches(images, batch_size: int, num_workers: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 batch) over ``images``: slices of an array, or batches decoded by ``num_workers`` DataLoader
    workers (0: in this process) for LazyImages."""
    if not isinstance(images, LazyImages) or num_workers == 0:
        for start in range(0, len(images), batch_size):
            yield start, images[start:start + batch_size]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_BatchDataset(images, batch_size), batch_size=None, num_workers=num_workers,
                        collate_fn=_as_is, prefetch_factor=2)
    for k, batch in enumerate(loader):
        yield k * batch_size, np.asarray(batch)
