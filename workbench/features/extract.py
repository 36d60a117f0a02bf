"""Layer activations of a model for a stimulus set: batched, gradient-free, cached on disk."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from workbench.features.preprocess import Preprocess
from workbench.models.hooks import register_layer_hooks
from workbench.utils import atomic_save_npz, get_device, sha256_bytes


class Activations(Mapping):
    """layer -> float32 array (n_stimuli, n_units), units in flattened (C, H, W) order.

    ``unit_shapes[layer]`` keeps the grid shape (C, H, W) (or (n,) for dense layers), so topographic analyses can
    put units back on their feature map; ``projection[layer]`` says whether a random projection was applied.
    """

    def __init__(self, arrays: dict[str, np.ndarray], stimulus_ids: Sequence[str],
                 unit_shapes: dict[str, tuple[int, ...]], projection: dict[str, dict] | None = None):
        self._arrays = dict(arrays)
        self.stimulus_ids = np.asarray(stimulus_ids)
        self.unit_shapes = {k: tuple(v) for k, v in unit_shapes.items()}
        self.projection = projection or {k: None for k in arrays}
        for layer, a in self._arrays.items():
            if a.shape[0] != len(self.stimulus_ids):
                raise ValueError(f"layer {layer}: {a.shape[0]} rows for {len(self.stimulus_ids)} stimuli")

    def __getitem__(self, layer: str) -> np.ndarray:
        try:
            return self._arrays[layer]
        except KeyError:
            raise KeyError(f"no activations for layer {layer!r}; extracted layers: {list(self._arrays)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def layers(self) -> list[str]:
        return list(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {'x'.join(map(str, self.unit_shapes.get(k) or a.shape[1:]))}"
                           for k, a in self._arrays.items())
        return f"Activations({len(self.stimulus_ids)} stimuli; {shapes or 'no layers'})"

    def save(self, path: str | Path) -> Path:
        meta = {"layers": self.layers, "unit_shapes": self.unit_shapes, "projection": self.projection}
        arrays = {f"layer/{k}": v for k, v in self._arrays.items()}
        return atomic_save_npz(path, stimulus_ids=self.stimulus_ids.astype(str), meta=np.array(json.dumps(meta)),
                               **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Activations":
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            arrays = {k: d[f"layer/{k}"] for k in meta["layers"]}
            return cls(arrays, d["stimulus_ids"], meta["unit_shapes"], meta["projection"])


def module_names(model: nn.Module) -> list[str]:
    """The layer names extraction accepts: the model's own list if it has one, else every named sub-module."""
    from workbench.models import layer_names

    return layer_names(model)


def resolve_layers(model: nn.Module, layers: Iterable[str] | None) -> list[str]:
    valid = module_names(model)
    if layers is None:
        return list(valid)
    layers = [layers] if isinstance(layers, str) else list(layers)
    named = dict(model.named_modules(remove_duplicate=False))  # an alias is a valid name of its module
    unknown = [l for l in layers if l not in named]
    if unknown:
        raise KeyError(f"unknown layer(s) {unknown} for {type(model).__name__}; valid layer names: {valid}")
    if not layers:
        raise ValueError("no layers given: name at least one layer")
    return layers


def weights_hash(model: nn.Module) -> str:
    parts = []
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        parts += [name, str(t.dtype), str(tuple(t.shape)), data]
    return sha256_bytes(type(model).__name__, *parts)


def random_projection(n_units: int, k: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
    """A fixed Gaussian projection (n_units x k) scaled by 1/sqrt(k): preserves distances in expectation
    (Johnson-Lindenstrauss), so RDMs and linear readouts computed on the projection approximate the full layer."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(n_units, k, generator=g, dtype=dtype) / np.sqrt(k)).to(device)


def sparse_random_projection(n_units: int, k: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
    """A very sparse random projection (Li, Hastie & Church 2006; Achlioptas 2003 with s = sqrt(n_units)), stored
    transposed as a (k x n_units) CSR matrix: each entry is +-sqrt(s / k) with probability 1 / (2 s) each, else 0,
    so it preserves distances in expectation like the Gaussian one, with k * sqrt(n_units) non-zeros instead of
    k * n_units numbers (a 200,000-unit layer to 4096: 1.8 M non-zeros, about 22 MB as float32 values and int64
    indices, instead of 3.3 GB) and a matching saving in the product.
    Generated column by column from ``seed``: the same seed gives the same matrix."""
    rng = np.random.default_rng(seed)
    s = max(1.0, float(np.sqrt(n_units)))
    rows, cols = [], []
    for j in range(k):  # per output dimension: a binomial number of units, drawn without replacement
        units = rng.choice(n_units, size=rng.binomial(n_units, 1.0 / s), replace=False)
        rows.append(np.full(len(units), j))
        cols.append(np.sort(units))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    values = rng.choice([-1.0, 1.0], size=len(rows)) * np.sqrt(s / k)
    matrix = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(values, dtype=dtype),
                                     (k, n_units))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long supported
        warnings.simplefilter("ignore", UserWarning)
        return matrix.coalesce().to_sparse_csr().to(device)


def _cache_key(model_hash: str, stimuli, layer: str, preprocess: Preprocess, projection_dim, seed) -> str:
    image_hash = stimuli.content_hash() if hasattr(stimuli, "content_hash") else \
        sha256_bytes(np.ascontiguousarray(stimuli.images).tobytes())
    ids = "\n".join(map(str, stimuli.stimulus_ids))
    return sha256_bytes(model_hash, image_hash, ids, layer, json.dumps(preprocess.to_dict(), sort_keys=True),
                        str(projection_dim), str(seed))[:32]


@torch.no_grad()
def extract_activations(model: nn.Module, stimuli, layers: Iterable[str] | None = None,
                        preprocess: Preprocess | dict | None = None, batch_size: int = 64,
                        device: str | torch.device | None = None, projection_dim: int | None = None,
                        projection_seed: int = 0, cache_dir: str | Path | None = None,
                        progress: bool | Callable[[Iterable, str, int], Iterable] = True,
                        store: str | Path | None = None, num_workers: int = 0,
                        reduction: str = "gaussian") -> Activations:
    """Activations of ``layers`` for every image of ``stimuli`` (a StimulusSet).

    Memory stays bounded for many stimuli: with ``projection_dim=k`` each layer wider than k units is multiplied,
    batch by batch, with a fixed random Gaussian matrix (seeded by ``projection_seed``), so only (n, k) is kept.
    With ``cache_dir``, each layer's result is stored under a key of (weights, images, ids, layer, preprocessing,
    projection) and reused on a rerun. ``progress``: a tqdm bar over the batches, or a function
    ``(iterable, description, total) -> iterable`` that wraps them (a stage passes ``ctx.progress``).

    With ``store=<folder>``, every batch is written straight to an on-disk store (``workbench.features.store``) and
    the result reads from it lazily: peak memory is one batch, whatever the number of stimuli. A store made with the
    same key (weights, images, ids, layers, preprocessing, projection) is reused as it is. ``num_workers``: DataLoader
    worker processes that decode the batches of a lazy stimulus set (``StimulusSet.from_folder(..., lazy=True)``).
    ``reduction``: ``gaussian`` (a dense Gaussian projection to ``projection_dim``), ``sparse`` (a very sparse one,
    ``sparse_random_projection``: far less memory and time for wide layers) or ``pool`` (each channel's mean over
    space; no ``projection_dim``).
    """
    if not isinstance(preprocess, Preprocess):
        preprocess = Preprocess.from_config(preprocess)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if projection_dim is not None and projection_dim < 1:
        raise ValueError(f"projection_dim must be a positive number of dimensions or None, got {projection_dim}")
    layers = resolve_layers(model, layers)
    projection = _Projection(projection_dim, projection_seed, reduction)
    if store is not None:
        return _extract_to_store(model, stimuli, layers, preprocess, batch_size, get_device(device), projection,
                                 progress, Path(store), num_workers)
    paths: dict[str, Path] = {}
    done: dict[str, Activations] = {}
    if cache_dir is not None:
        model_hash = weights_hash(model)
        for layer in layers:
            key = _cache_key(model_hash, stimuli, layer, preprocess, projection.key, projection_seed)
            paths[layer] = Path(cache_dir) / f"{key}.npz"
            if paths[layer].exists():
                done[layer] = Activations.load(paths[layer])
    todo = [layer for layer in layers if layer not in done]
    if todo:
        fresh = _forward(model, stimuli, todo, preprocess, batch_size, get_device(device), projection, progress,
                         num_workers=num_workers)
        for layer in todo:
            done[layer] = Activations({layer: fresh[layer]}, stimuli.stimulus_ids, {layer: fresh.unit_shapes[layer]},
                                      {layer: fresh.projection[layer]})
            if cache_dir is not None:
                done[layer].save(paths[layer])
    return Activations({layer: done[layer][layer] for layer in layers}, stimuli.stimulus_ids,
                       {layer: done[layer].unit_shapes[layer] for layer in layers},
                       {layer: done[layer].projection[layer] for layer in layers})


def _extract_to_store(model: nn.Module, stimuli, layers: list[str], preprocess: Preprocess, batch_size: int,
                      device: torch.device, projection: "_Projection", progress, folder: Path,
                      num_workers: int = 0) -> Activations:
    from workbench.features.store import is_store, open_store, read_meta

    key = store_key(model, stimuli, layers, preprocess, projection)
    if is_store(folder) and read_meta(folder).get("key") == key:  # made from these weights, images and settings
        return open_store(folder)
    return _forward(model, stimuli, layers, preprocess, batch_size, device, projection, progress,
                    sink=_OnDisk(folder, stimuli, layers, key), num_workers=num_workers)


def store_key(model: nn.Module, stimuli, layers: list[str], preprocess: Preprocess, projection: "_Projection") -> str:
    """The key a store records (``meta.json``): its layers' cache keys (weights, images, ids, preprocessing,
    projection) together; a store with the same key is reused as it is."""
    model_hash = weights_hash(model)
    return sha256_bytes(*(_cache_key(model_hash, stimuli, layer, preprocess, projection.key, projection.seed)
                          for layer in layers))[:32]


REDUCTIONS = ("gaussian", "sparse", "pool")


class _Projection:
    """Per layer, how its output becomes the stored features: flattened, then reduced to ``dim`` dimensions when it
    is wider (``gaussian``: dense Gaussian projection; ``sparse``: very sparse projection), or averaged over space
    per channel (``pool``: (C, H, W) -> C)."""

    def __init__(self, dim: int | None, seed: int, kind: str = "gaussian"):
        if kind not in REDUCTIONS:
            raise ValueError(f"unknown reduction {kind!r}; choose one of {', '.join(REDUCTIONS)}")
        if kind == "pool" and dim is not None:
            raise ValueError("reduction 'pool' averages each channel over space and takes no projection_dim; set "
                             "projection_dim to null, or use reduction 'gaussian' or 'sparse'")
        self.dim, self.seed, self.kind = dim, seed, kind
        # what the cache key records (the Gaussian one as before, so existing caches stay valid)
        self.key = str(dim) if kind == "gaussian" else f"{kind}:{dim}"
        self.matrices: dict[str, torch.Tensor | None] = {}
        self.info: dict[str, dict | None] = {}

    def __call__(self, layer: str, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "pool":
            if out.ndim == 4:
                self.info[layer] = {"kind": "pool", "n_units": int(np.prod(out.shape[1:])), "dim": out.shape[1]}
                return out.mean(dim=(2, 3))
            self.info[layer] = None
            return out.reshape(out.shape[0], -1)
        flat = out.reshape(out.shape[0], -1)
        if layer not in self.matrices:
            use = self.dim is not None and flat.shape[1] > self.dim
            make = sparse_random_projection if self.kind == "sparse" else random_projection
            self.matrices[layer] = make(flat.shape[1], self.dim, self.seed, flat.device) if use else None
            self.info[layer] = {"dim": self.dim, "seed": self.seed, "n_units": flat.shape[1],
                                **({"kind": "sparse"} if self.kind == "sparse" else {})} if use else None
        matrix = self.matrices[layer]
        if matrix is None:
            return flat
        return (matrix @ flat.T).T if matrix.layout == torch.sparse_csr else flat @ matrix


class _InMemory:
    """Batches kept in RAM and joined at the end (the default: small and medium stimulus sets)."""

    def __init__(self, layers: list[str]):
        self.chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        self.chunks[layer].append(rows)

    def close(self, stimuli, unit_shapes: dict, projection: dict) -> Activations:
        arrays = {layer: np.concatenate(chunks) for layer, chunks in self.chunks.items()}
        return Activations(arrays, stimuli.stimulus_ids, unit_shapes, projection)

    def abort(self) -> None:
        self.chunks.clear()


class _OnDisk:
    """Batches written straight into an activation store (``workbench.features.store``): memory stays flat."""

    def __init__(self, folder: Path, stimuli, layers: list[str], key: str | None = None):
        from workbench.features.store import StoreWriter

        self.writer = StoreWriter(folder, stimuli.stimulus_ids, layers, key)

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        self.writer.write(layer, start, rows)

    def close(self, stimuli, unit_shapes: dict, projection: dict) -> Activations:
        from workbench.features.store import open_store

        return open_store(self.writer.close(unit_shapes, projection))

    def abort(self) -> None:
        self.writer.abort()


def _forward(model: nn.Module, stimuli, layers: list[str], preprocess: Preprocess, batch_size: int,
             device: torch.device, projection: _Projection, progress, sink=None,
             num_workers: int = 0) -> Activations:
    """One pass over the stimuli in batches, the outputs of ``layers`` captured by forward hooks and handed, batch
    by batch, to ``sink`` (in memory by default, or an on-disk store)."""
    from tqdm.auto import tqdm

    from workbench.logs import progress_disabled

    was_training = model.training
    model.eval()
    model.to(device)
    sink = sink if sink is not None else _InMemory(layers)
    captured: dict[str, torch.Tensor] = {}
    hooks = register_layer_hooks(model, {l: lambda m, i, o, l=l: captured.__setitem__(l, o) for l in layers},
                                 "extraction")
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        from workbench.data.lazy import batches

        n_batches = -(-len(stimuli) // batch_size)
        name = getattr(stimuli, "name", "")
        loader = batches(stimuli.images, batch_size, num_workers)  # lazy sets: decoded by DataLoader workers
        bar = (progress(loader, name, n_batches) if callable(progress) else
               tqdm(loader, desc=f"extract {name}", unit="batch", total=n_batches,
                    disable=progress_disabled(progress), leave=False))
        for start, images in bar:
            x = preprocess(images, device=device)
            captured.clear()
            model(x)
            for l, rows in layer_rows(captured, layers, projection, shapes, start).items():
                sink.write(l, start, rows)
    except BaseException:
        sink.abort()
        raise
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sink.close(stimuli, shapes, {l: projection.info[l] for l in layers})


def layer_rows(captured: dict[str, torch.Tensor], layers: list[str], projection: _Projection,
               shapes: dict[str, tuple[int, ...]], start: int) -> dict[str, np.ndarray]:
    """One batch's stored features per layer, from the hooked outputs in ``captured`` (``shapes`` gets each layer's
    unit shape at its first batch): shared by the one-process loop and the sharded one (``features.sharded``), so
    both compute every row with the same operations."""
    rows: dict[str, np.ndarray] = {}
    for l in layers:
        out = captured.get(l)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {l!r} returned {type(out).__name__}, not a tensor; pick a module "
                            f"whose output is a single tensor")
        pooled = projection.kind == "pool" and out.ndim == 4
        shapes.setdefault(l, (out.shape[1],) if pooled else tuple(out.shape[1:]))
        rows[l] = projection(l, out.float()).cpu().numpy().astype(np.float32)
        if not np.isfinite(rows[l]).all():
            raise FloatingPointError(f"layer {l!r} produced NaN or infinite activations (stimuli from "
                                     f"{start}): check the model weights and the preprocessing")
    return rows
