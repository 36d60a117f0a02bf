"""Stimulus sets in the Brain-Score spirit: a metadata table keyed by ``stimulus_id`` plus the images."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from workbench.data.files import fetch
from workbench.registry import Registry

STIMULUS_SETS: Registry[Callable[[], "StimulusSet"]] = Registry("stimulus set")
Background = tuple[int, int, int] | None  # the (r, g, b) screen translucent images were shown on

V4_SESSIONS = ("190923", "201025", "210225", "210325")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

KRIEGESKORTE_CITATION = (
    "Kriegeskorte, N., Mur, M., Ruff, D.A., Kiani, R., Bodurka, J., Esteky, H., Tanaka, K., Bandettini, P.A. (2008). "
    "Matching categorical object representations in inferior temporal cortex of man and monkey. Neuron 60(6), "
    "1126-1141.")
COWLEY_CITATION = (
    "Cowley, B.R., Stan, P.L., Pillow, J.W., Smith, M.A. (2023). Compact deep neural network models of visual "
    "cortex. bioRxiv.")


@dataclass
class StimulusSet:
    """Images with a metadata table; row i of ``metadata`` describes ``images[i]``."""

    name: str
    metadata: pd.DataFrame
    images: np.ndarray  # uint8, (n, H, W, 3), or LazyImages (decoded when indexed: sets too large for RAM)
    citation: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if "stimulus_id" not in self.metadata.columns:
            raise ValueError(f"stimulus set {self.name!r}: metadata needs a 'stimulus_id' column")
        ids = self.metadata["stimulus_id"]
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].tolist()[:5]
            raise ValueError(f"stimulus set {self.name!r}: stimulus ids must be unique; repeated: {dup}")
        from workbench.data.lazy import LazyImages

        images = self.images if isinstance(self.images, LazyImages) else np.asarray(self.images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"stimulus set {self.name!r}: images must be uint8 (n, H, W, 3), got "
                             f"{images.dtype} {images.shape}")
        if len(images) != len(self.metadata):
            raise ValueError(f"stimulus set {self.name!r}: {len(images)} images but {len(self.metadata)} metadata "
                             f"rows; they must describe the same stimuli in the same order")
        self.images = images
        self.metadata = self.metadata.reset_index(drop=True)

    @property
    def stimulus_ids(self) -> np.ndarray:
        return self.metadata["stimulus_id"].to_numpy()

    def content_hash(self) -> str:
        """sha256 of the images (of the encoded files for a lazy set: nothing is decoded)."""
        from workbench.utils import sha256_bytes

        from workbench.data.lazy import LazyImages

        if isinstance(self.images, LazyImages):
            return self.images.content_hash()
        return sha256_bytes(np.ascontiguousarray(self.images).tobytes())

    def __repr__(self) -> str:  # the dataclass default would print every pixel
        n, h, w, _ = self.images.shape
        columns = [c for c in self.metadata.columns if c != "stimulus_id"]
        return (f"StimulusSet({self.name!r}: {n} images {h}x{w}, metadata columns {columns}, "
                f"ids {list(self.stimulus_ids[:3])}{' ...' if n > 3 else ''})")

    def __len__(self) -> int:
        return len(self.metadata)

    def subset(self, index) -> "StimulusSet":
        """A new set of the rows ``index`` selects (positions, a boolean mask, or a slice)."""
        index = np.arange(len(self))[index]
        from workbench.data.lazy import LazyImages

        images = self.images.take(index) if isinstance(self.images, LazyImages) else self.images[index]
        return StimulusSet(self.name, self.metadata.iloc[index].reset_index(drop=True), images,
                           self.citation, dict(self.extra))

    def select_ids(self, stimulus_ids) -> "StimulusSet":
        """The stimuli with these ids, in that order; unknown ids are an error that names them."""
        position = {sid: i for i, sid in enumerate(self.stimulus_ids)}
        missing = [s for s in stimulus_ids if s not in position]
        if missing:
            raise KeyError(f"stimulus set {self.name!r} has no stimuli with ids {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}")
        return self.subset([position[s] for s in stimulus_ids])

    @classmethod
    def from_folder(cls, folder: str | Path, name: str | None = None, metadata: pd.DataFrame | None = None,
                    size: int | None = None, background: Background = None, lazy: bool = False) -> "StimulusSet":
        """Images of a folder (stimulus_id = file stem). With ``metadata``, its stimulus ids must match the files.

        Images of different sizes need ``size`` (they are resized to size x size). 16-bit grey images are scaled to
        8 bits. Images with translucent pixels need ``background`` (r, g, b in 0-255), the screen they were shown
        on, to be composited on; without it they are refused (a fully opaque alpha channel is simply dropped).
        ``lazy``: keep the file paths and decode each batch when it is used (``workbench.data.lazy``), for sets too
        large for memory.
        """
        background = check_background(background)
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        by_id = {p.stem: p for p in files}
        if metadata is None:
            metadata = pd.DataFrame({"stimulus_id": list(by_id)})
        else:
            ids = metadata["stimulus_id"].astype(str).tolist()
            missing = sorted(set(ids) - set(by_id))
            extra = sorted(set(by_id) - set(ids))
            if missing or extra:
                raise ValueError(
                    f"stimulus ids do not match the images in {folder}: ids without an image {missing[:5]}, "
                    f"images without an id {extra[:5]} (stimulus_id must equal the image file name without "
                    f"its extension)")
            metadata = metadata.assign(stimulus_id=ids)
        ids = list(metadata["stimulus_id"])
        if lazy:
            from workbench.data.lazy import LazyImages

            images = LazyImages([by_id[s] for s in ids], size, background=background)
        else:
            images = _load_images([by_id[s].read_bytes() for s in ids], size, folder, background,
                                  [by_id[s].name for s in ids])
        return cls(name or folder.name, metadata, images, extra={"background": background} if background else {})


def _load_images(blobs: list[bytes], size: int | None, where, background: Background = None,
                 names: list[str] | None = None) -> np.ndarray:
    from PIL import Image

    arrays = [decode_image(blob, size, background, f"image {names[i] if names is not None else f'#{i}'} in {where}")
              for i, blob in enumerate(blobs)]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {where} have different sizes {sorted(shapes)[:3]}; pass size=... to resize")
    return np.stack(arrays)


def decode_image(blob: bytes, size: int | None, background: Background, what: str) -> np.ndarray:
    """One encoded image as uint8 (H, W, 3) (see ``_rgb8``), resized to size x size when ``size`` is given."""
    from PIL import Image

    img = Image.fromarray(_rgb8(Image.open(io.BytesIO(blob)), background, what))
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _rgb8(img, background: Background, what: str) -> np.ndarray:
    """uint8 (H, W, 3) of a PIL image: 16-bit grey scaled to 8 bits (PIL's own RGB conversion clips it to white),
    translucent pixels composited on ``background`` (refused without one: the screen behind them is unknown)."""
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):
        grey = np.asarray(img).astype(np.int64)
        grey = (np.clip(grey, 0, 65535) * 255 + 32767) // 65535  # 0 -> 0, 65535 -> 255, rounded
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise ValueError(f"{what} holds {'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels, whose "
                         "range to map onto 0-255 is unknown; save it as an 8-bit (or 16-bit PNG) image")
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in img.info:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    if (alpha == 1).all():
        return rgba[..., :3].astype(np.uint8)
    if background is None:
        raise ValueError(
            f"{what} has {(alpha < 1).sum()} translucent pixels (alpha < 255), and the images carry no record of "
            "the screen they were shown on: pass background=(r, g, b) (0-255; e.g. (128, 128, 128) for a mid-grey "
            "screen; `background: [128, 128, 128]` in a benchmark YAML) to composite them on it, or flatten them")
    flat = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float64) * (1 - alpha)
    return np.round(flat).astype(np.uint8)


def check_background(background) -> Background:
    """``background`` as an (r, g, b) tuple of ints in 0-255 (None stays None), else a ValueError."""
    if background is None:
        return None
    values = list(background) if isinstance(background, (list, tuple, np.ndarray)) else [background]
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in values):
        raise ValueError(f"background must be three integers in 0-255 (r, g, b), e.g. (128, 128, 128); got "
                         f"{background!r}")
    return tuple(int(v) for v in values)


def load_stimuli(name: str) -> StimulusSet:
    """A registered stimulus set by name (``workbench.data.STIMULUS_SETS.names()`` lists them)."""
    return STIMULUS_SETS.get(name)()


@STIMULUS_SETS.register("kriegeskorte92", citation=KRIEGESKORTE_CITATION,
                        description="92 object images (human/non-human bodies and faces, natural and artificial "
                                    "objects), 175 px")
def _kriegeskorte92() -> StimulusSet:
    import scipy.io as sio

    path = fetch("kriegeskorte2008/Kriegeskorte_Neuron2008_supplementalData.mat")
    mat = sio.loadmat(path, squeeze_me=True, struct_as_record=False)
    stim = mat["stimuli_92objs"]
    labels = [str(x) for x in mat["categoryLabels"]]
    vectors = np.asarray(mat["categoryVectors"], dtype=bool)
    meta = pd.DataFrame({
        "stimulus_id": [f"k92_{i + 1:02d}" for i in range(len(stim))],
        "image_index": np.arange(len(stim)),
        "category": [str(s.category) for s in stim],
    })
    for j, label in enumerate(labels):
        meta[label] = vectors[:, j]
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in stim])
    return StimulusSet("kriegeskorte92", meta, images, KRIEGESKORTE_CITATION, {"category_labels": labels})


def _v4_images(session: str, image_names) -> np.ndarray:
    zpath = fetch(f"cowley2023_v4/images/images_{session}.zip")
    with zipfile.ZipFile(zpath) as z:
        # one zip nests its files in a folder: match on the file name alone
        by_name = {n.split("/")[-1]: n for n in z.namelist() if n.lower().endswith(".jpg")}
        missing = [n for n in image_names if n not in by_name]
        if missing:
            raise ValueError(f"V4 session {session}: images {missing[:3]} named by the responses are not in {zpath}")
        return _load_images([z.read(by_name[n]) for n in image_names], None, zpath)


def _make_v4(session: str) -> Callable[[], StimulusSet]:
    def load() -> StimulusSet:
        from workbench.data.neural import v4_session_file

        with np.load(v4_session_file(session)) as d:
            names = [str(n) for n in d["image_names"]]
        meta = pd.DataFrame({
            "stimulus_id": [f"{session}/{n.rsplit('.', 1)[0]}" for n in names],
            "image_name": names,
            "session": session,
        })
        return StimulusSet(f"cowley_v4_{session}", meta, _v4_images(session, names), COWLEY_CITATION)

    return load


for _session in V4_SESSIONS:
    STIMULUS_SETS.add(f"cowley_v4_{_session}", _make_v4(_session), citation=COWLEY_CITATION,
                      description=f"natural images of macaque V4 session {_session}, 112 px")
