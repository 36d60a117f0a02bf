"""Small helpers shared by all stages: devices, seeding, atomic writes, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def get_device(device: str | None = None):
    """`device` as given, else CUDA when present, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave a renamed empty file
        # mkstemp makes the file private (0600); results are meant to be read by others (a web server, a team)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """Strict JSON (what any parser reads): a non-finite float is written as null. metrics.json records which
    values those were (``encode_nonfinite``), so nothing is lost."""
    return json.dumps(_finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.ndarray)):
        return _finite_or_none(obj.tolist())
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


NONFINITE_KEY = "nonfinite"  # a metrics section's record of the values written as null: {"a/b/0": "nan"}


def _nonfinite_paths(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, (float, np.floating)):
        return {} if np.isfinite(obj) else {prefix: str(float(obj))}
    if isinstance(obj, np.ndarray):
        return _nonfinite_paths(obj.tolist(), prefix)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out: dict[str, str] = {}
    for key, value in items:
        escaped = str(key).replace("~", "~0").replace("/", "~1")  # JSON-pointer escaping: keys may hold '/'
        out.update(_nonfinite_paths(value, f"{prefix}/{escaped}" if prefix else escaped))
    return out


def encode_nonfinite(sections: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's sections with, in each, ``nonfinite: {path: "nan" | "inf" | "-inf"}`` naming the values that
    JSON will hold as null (an undefined correlation is NaN, and strict JSON has no NaN)."""
    out = {}
    for name, section in sections.items():
        paths = _nonfinite_paths({k: v for k, v in section.items() if k != NONFINITE_KEY}) \
            if isinstance(section, dict) else {}
        out[name] = {**section, NONFINITE_KEY: paths} if paths else (
            {k: v for k, v in section.items() if k != NONFINITE_KEY} if isinstance(section, dict) else section)
    return out


def decode_nonfinite(sections: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``encode_nonfinite``: the recorded nulls become float NaN / inf again."""
    for section in sections.values():
        paths = section.pop(NONFINITE_KEY, None) if isinstance(section, dict) else None
        for path, value in (paths or {}).items():
            keys = [k.replace("~1", "/").replace("~0", "~") for k in path.split("/")]
            node = section
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node[key]
            last = keys[-1]
            node[int(last) if isinstance(node, list) else last] = float(value)
    return sections


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()
