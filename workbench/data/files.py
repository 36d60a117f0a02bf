"""Where data files live, how they are fetched, and how they are verified.

A file found under the data root is used (after its sha256 is checked against the registry below); a missing one is
downloaded from its public source with pooch and checked the same way. Tests and CI never download: they set
``WORKBENCH_DATA`` to a folder that holds the files, and ``WORKBENCH_OFFLINE=1`` turns any download into an error.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from workbench.utils import sha256_file

ENV_ROOT = "WORKBENCH_DATA"
ENV_OFFLINE = "WORKBENCH_OFFLINE"

RSATOOLBOX_COMMIT = "f1f83cadb7243492a1aae7460466e0f0140b20ac"
COWLEY_COMMIT = "f4552ad9d34a466ebc66658f72a08a8e5038f1cf"
_RSA_URL = f"https://raw.githubusercontent.com/rsagroup/rsatoolbox/{RSATOOLBOX_COMMIT}/demos/92imageData/"
_V4_URL = f"https://raw.githubusercontent.com/cowleygroup/V4_compact_models/{COWLEY_COMMIT}/data_V4_responses/"

# relative path under the data root -> (url or None, checksum). Checksums are "sha256:<hex>" for files used as
# published, or "gitblob:<sha1>" for originals whose only public checksum is their git blob id (the V4 .npy files,
# which we repack into session_<id>.npz after verifying them).
REGISTRY: dict[str, tuple[str | None, str]] = {
    "kriegeskorte2008/Kriegeskorte_Neuron2008_supplementalData.mat": (
        _RSA_URL + "Kriegeskorte_Neuron2008_supplementalData.mat",
        "sha256:06f21214399a5d43dc264eed19a7f4b8daf11c8622a59eec3e106064ce5e3504"),
    "kriegeskorte2008/92_brainRDMs.mat": (
        _RSA_URL + "92_brainRDMs.mat", "sha256:1743f90a15e895798a94318649e80e1123a7e5943a1703fa1dd7c31ea5780b7c"),
    "kriegeskorte2008/92_behavRDMs.mat": (
        _RSA_URL + "92_behavRDMs.mat", "sha256:7a8e118c144c3840adeeeef6ea0706a0be2b3e80df719af15fbb56fc62562f5f"),
    "kriegeskorte2008/92_modelRDMs.mat": (
        _RSA_URL + "92_modelRDMs.mat", "sha256:e1d2b58bb2f9508bc13da4c81b94d1ab07823b25ed30b9563bd9d6d730c2a00a"),
    "cowley2023_v4/images/images_190923.zip": (
        _V4_URL + "images/images_190923.zip",
        "sha256:e99a4df1c7476bdc4d565ff4408bc421976ecc3a22c41af6bfd0cfbddb508c0c"),
    "cowley2023_v4/images/images_201025.zip": (
        _V4_URL + "images/images_201025.zip",
        "sha256:3abb63679107665eab7220bdeaf7863832a1df943bf3d7792501f5082a55b2e8"),
    "cowley2023_v4/images/images_210225.zip": (
        _V4_URL + "images/images_210225.zip",
        "sha256:79bfb1066949a7f7bbd3c632ab420c2230b966b80cade76593d8745aea49b7f6"),
    "cowley2023_v4/images/images_210325.zip": (
        _V4_URL + "images/images_210325.zip",
        "sha256:992774eca3508a2ad01accb1a31f5f3e3d90248c49f4eec314f2a915a263e454"),
    # repacked files (as laid out by the workbench's data mirror); rebuilt from the originals below when absent
    "cowley2023_v4/session_190923.npz": (None, "sha256:46218f40016d9d72f24a194933c73696d5166c5534e5b8c1fd96f57539d244d9"),
    "cowley2023_v4/session_201025.npz": (None, "sha256:13536378b15bce59add9f8f3a4ade41480d9fe2521e58148ddfa9e9242bf87bc"),
    "cowley2023_v4/session_210225.npz": (None, "sha256:acf780a64ba54d642ad2974072b5be6715553551229fee8819f42ff9e3d118e3"),
    "cowley2023_v4/session_210325.npz": (None, "sha256:b83ac86a60229233bc9ec9d2183ef994cc46bef8f600616eaf49e3fca0729992"),
    "cowley2023_v4/original/responses_190923.npy": (
        _V4_URL + "responses_repeat_averaged/responses_190923.npy", "gitblob:e3759c8393d84f62c298f1eb094cf0177957aa0b"),
    "cowley2023_v4/original/responses_201025.npy": (
        _V4_URL + "responses_repeat_averaged/responses_201025.npy", "gitblob:c13d55a1a00b46b6adda6733f46ea45a8a66b4be"),
    "cowley2023_v4/original/responses_210225.npy": (
        _V4_URL + "responses_repeat_averaged/responses_210225.npy", "gitblob:32155435e5c33f160fe1222f423921014b47db96"),
    "cowley2023_v4/original/responses_210325.npy": (
        _V4_URL + "responses_repeat_averaged/responses_210325.npy", "gitblob:fe95f7e4e45a13b3436627d290b859a264239d99"),
    "cowley2023_v4/original/responses_raw_210325.npy": (
        _V4_URL + "responses_raw/responses_210325.npy", "gitblob:db45fd8f2b3b774d3d854d5bdf6b29ed60c801c5"),
}


class DataNotFoundError(FileNotFoundError):
    pass


class ChecksumError(ValueError):
    pass


def data_root() -> Path:
    """``$WORKBENCH_DATA`` if set, else the user cache dir (``~/.cache/workbench`` on Linux)."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("workbench"))


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").lower() in ("1", "true", "yes")


def git_blob_sha1(path: str | os.PathLike) -> str:
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_verified: dict[tuple[str, float, int], bool] = {}


def verify(path: Path, checksum: str) -> None:
    """Raise ChecksumError unless the file matches; each (file, mtime, size) is hashed once per process."""
    stat = path.stat()
    key = (str(path), stat.st_mtime, stat.st_size)
    if _verified.get(key):
        return
    kind, expected = checksum.split(":", 1)
    actual = sha256_file(path) if kind == "sha256" else git_blob_sha1(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} does not match its registered {kind} checksum (expected {expected}, got {actual}). "
            f"The file is corrupt or a different version: delete it so that it is fetched again, or restore the "
            f"original copy.")
    _verified[key] = True


def fetch(relpath: str, root: Path | None = None) -> Path:
    """Path of a registered data file under the data root: verified if present, else downloaded and verified."""
    root = Path(root) if root is not None else data_root()
    if relpath not in REGISTRY:
        raise KeyError(f"{relpath!r} is not a registered data file; known files: {', '.join(sorted(REGISTRY))}")
    url, checksum = REGISTRY[relpath]
    path = root / relpath
    if path.exists():
        verify(path, checksum)
        return path
    if url is None:
        raise DataNotFoundError(f"{path} does not exist and has no download source (it is built from other files)")
    if offline():
        raise DataNotFoundError(
            f"data file {relpath!r} is not under the data root {root} and downloads are disabled "
            f"({ENV_OFFLINE}=1). Set {ENV_ROOT} to the folder that holds the workbench data "
            f"(e.g. WORKBENCH_DATA=../shared/data), or unset {ENV_OFFLINE} to download it from {url}.")
    import pooch

    known = checksum if checksum.startswith("sha256:") else None
    try:
        pooch.retrieve(url, known_hash=known, fname=path.name, path=path.parent, progressbar=True)
    except ValueError as err:  # pooch's hash mismatch
        raise ChecksumError(f"download of {url} failed its checksum: {err}") from err
    except Exception as err:  # no network, HTTP error, ...
        raise DataNotFoundError(
            f"data file {relpath!r} is not under the data root {root} and could not be downloaded from {url} "
            f"({type(err).__name__}: {err}). Check the network, or set {ENV_ROOT} to a folder that holds the "
            f"data.") from err
    verify(path, checksum)
    return path
