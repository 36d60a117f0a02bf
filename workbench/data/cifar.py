"""CIFAR-10's python batches, loaded without running anything they hold and only after their hash is checked.

The batches are pickles. ``pickle.load`` on a replaced ``data_batch_1`` runs whatever its ``__reduce__`` names, so
this module unpickles with a restricted unpickler that admits only what the format holds (dicts, lists, bytes,
str, int and numpy arrays) and refuses every other global. Before that, each file's hash must be one of:

- the original release's md5 (torchvision's list, the files of ``cifar-10-python.tar.gz``);
- the sha256 of the workbench data mirror's rebuild (``shared/data/cifar10``, see its README);
- the sha256 a rebuilt mirror lists in ``SHA256SUMS`` next to its batches (``sha256sum`` format), for a lab that
  rebuilds its own copy (``workbench.data.cifar.write_manifest`` writes it).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

from workbench.data.files import ChecksumError

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META_FILE = "batches.meta"
MANIFEST = "SHA256SUMS"

# md5 of the original release's files (Krizhevsky 2009), as torchvision lists them
ORIGINAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# sha256 of the workbench data mirror's batches, rebuilt from JPEGs (shared/data/cifar10/README.md)
MIRROR_SHA256 = {
    "data_batch_1": "47ccfc666db8022c8e6e5680d4ff42d0d0be02abf80c8dc2a3700016ef987477",
    "data_batch_2": "ec3f4b4872ab9f6805df5d883ab1294cc5159ca14d96dc4371962122d5ae536f",
    "data_batch_3": "fb9d8997594843d0f4db2df424feb021ed7a69463ac2af5fc14471aad4b5715d",
    "data_batch_4": "bf3bfd5f14c8065da78db73d29e6b8393516d3f01107b5aff61e79ef164fd6bb",
    "data_batch_5": "805aec6667f05de2a4c8295287dcd6aed9b6cf67256cb203c4f8122bbb3f7503",
    "test_batch": "8dda628add10666f5b4bcfdb989dd27a19583b7051a1a241f39d8095db2ae8dd",
    "batches.meta": "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb",
}

# the only globals a CIFAR batch names: numpy's array reconstruction (numpy 1 and 2 spell its module differently)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, so a process hashes a file once


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"the file names {module}.{name}, which a CIFAR-10 batch never holds (only dicts, lists, bytes, str, "
                f"int and numpy arrays); refusing to load it")
        return super().find_class(module, name)


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` next to the batches: file name -> sha256 (empty when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*").strip()] = digest.lower()
    return entries


def write_manifest(folder: str | os.PathLike) -> Path:
    """Record the sha256 of a rebuilt mirror's batches in ``<folder>/SHA256SUMS`` (run once, after rebuilding)."""
    from workbench.utils import atomic_write_text

    folder = Path(folder)
    names = [n for n in (*TRAIN_BATCHES, *TEST_BATCHES, META_FILE) if (folder / n).is_file()]
    return atomic_write_text(folder / MANIFEST, "".join(f"{_hashes(folder / n)[0]}  {n}\n" for n in names))


def verify_batch(path: str | os.PathLike) -> str:
    """The file's sha256, once it matches the original release, the workbench mirror or the folder's manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file {path} is missing; restore the folder {path.parent} (or delete it "
                                f"and let the workbench download the original release when online)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    sha, md5 = _hashes(path)
    known = {MIRROR_SHA256.get(path.name), read_manifest(path.parent).get(path.name)}
    if sha not in known and md5 != ORIGINAL_MD5.get(path.name):
        raise ChecksumError(
            f"CIFAR-10 file {path} matches neither the original release (md5 {ORIGINAL_MD5.get(path.name)}), the "
            f"workbench mirror (sha256 {MIRROR_SHA256.get(path.name)}) nor a {MANIFEST} beside it (its sha256 is "
            f"{sha}). It was changed or replaced: restore it from the source. If you rebuilt this mirror yourself, "
            f"record its hashes with `python -c \"from workbench.data.cifar import write_manifest; "
            f"write_manifest('{path.parent}')\"`.")
    _VERIFIED[key] = sha
    return sha


def load_batch(path: str | os.PathLike) -> dict:
    """One verified batch as a dict with str keys (``data``, ``labels``, ...), unpickled with no code run."""
    verify_batch(path)
    with open(path, "rb") as f:
        return _BatchUnpickler(io.BytesIO(f.read()), encoding="latin1").load()


def load_split(root: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(images N x 32 x 32 x 3 uint8, labels N int64, {file: sha256}) of the training or test split under ``root``
    (the folder holding ``cifar-10-batches-py/``)."""
    folder = Path(root) / BATCH_FOLDER
    images, labels, hashes = [], [], {}
    for name in TRAIN_BATCHES if train else TEST_BATCHES:
        batch = load_batch(folder / name)
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{folder / name}: 'data' has shape {data.shape}; a CIFAR-10 batch holds N x 3072")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64))
        hashes[str(folder / name)] = verify_batch(folder / name)
    return np.concatenate(images), np.concatenate(labels), hashes
