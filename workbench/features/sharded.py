"""Extraction split over processes: Lightning's ``Trainer.predict`` under DDP, each rank writing its own shard.

Every rank runs the same call (a script run once per rank, as Lightning's DDP launcher, ``torchrun`` or SLURM's
``srun`` start it). The stimuli are cut into the same batches a one-process extraction uses, and each rank takes a
contiguous run of whole batches (``shard_rows``): no DistributedSampler padding, so no stimulus is extracted twice,
and every row comes from exactly the batch, and so the arithmetic, it has in one process (bitwise equal on CPU).

Each rank writes its rows to its own shard, a small activation store (``features.store.StoreWriter``) in
``<store>.shards/``; after a barrier rank 0 copies the shards, row block by row block, into the final store, which
``StoreWriter`` writes to ``<store>.partial`` and renames when complete. Why shards rather than every rank writing at
its offsets into one pre-allocated file: on the shared file systems multi-node jobs write to (NFS, Lustre), several
clients writing one file is only safe at page or stripe granularity, and two ranks' row ranges share a page at their
boundary; a shard per rank never has two writers. The price is one sequential copy of the features by rank 0, small
beside the forward passes that made them.

Atomic: the shards folder is cleared by rank 0 before any rank writes, shards are only read by the run that wrote
them (each checked against the store's key and its stimulus ids), and the store itself appears only when the merge
is complete; an interrupted run leaves at most a ``.partial`` store and a shards folder, which nothing trusts and
the next run clears.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import lightning as L
import numpy as np
import torch
from torch import nn

from workbench.features.extract import (Activations, _Projection, layer_rows, resolve_layers, store_key)
from workbench.features.preprocess import Preprocess

__all__ = ["ShardedExtraction", "extract_sharded", "merge_shards", "shard_rows"]

MERGE_BLOCK_BYTES = 64 * 2**20  # rows copied per read/write in the merge: memory stays flat in the number of stimuli


def shard_rows(n_stimuli: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """Per rank, the (first, end) rows it extracts: contiguous runs of whole batches of ``batch_size``, as even as
    whole batches allow. With fewer batches than ranks some ranges are empty (first == end): those ranks extract
    nothing and write no shard."""
    n_batches = -(-n_stimuli // batch_size)
    edges = [min(n_stimuli, (r * n_batches // world_size) * batch_size) for r in range(world_size + 1)]
    return [(edges[r], edges[r + 1]) for r in range(world_size)]


def shards_folder(store: str | os.PathLike) -> Path:
    store = Path(store)
    return store.with_name(store.name + ".shards")


def _shard_path(store: Path, rows: tuple[int, int]) -> Path:
    return shards_folder(store) / f"rows_{rows[0]:010d}_{rows[1]:010d}"


class _RankBatches(torch.utils.data.Dataset):
    """This rank's batches, as (first row, uint8 images): a lazy set is decoded here, in the DataLoader's workers.
    An empty share is one item with no images (Lightning refuses a rank whose loader has no batch)."""

    def __init__(self, images, rows: tuple[int, int], batch_size: int):
        self.images, self.batch_size = images, batch_size
        self.starts = list(range(rows[0], rows[1], batch_size))
        self.end = rows[1]

    def __len__(self) -> int:
        return max(1, len(self.starts))

    def __getitem__(self, k: int):
        if not self.starts:
            return self.end, None
        start = self.starts[k]
        return start, np.asarray(self.images[start:min(start + self.batch_size, self.end)])


def _as_is(item):
    return item


class ShardedExtraction(L.LightningModule):
    """One rank's part: rank 0's weights and its decision (reuse the store, or extract) sent to every rank; the
    rank's batches through the model with its layers hooked, their rows written into the rank's shard. What
    follows the loop (closing the shard, the merge, barriers) is in ``_finish``, outside Lightning's loop."""

    def __init__(self, model: nn.Module, stimuli, layers: list[str], preprocess: Preprocess,
                 projection: _Projection, store: Path, plan: list[tuple[int, int]], batch_size: int,
                 num_workers: int):
        super().__init__()
        self.model = model
        self.stimuli, self.layers, self.preprocess, self.projection = stimuli, layers, preprocess, projection
        self.store, self.plan, self.batch_size, self.num_workers = store, plan, batch_size, num_workers
        self.key, self.reuse, self.writer = None, False, None
        self.hooks: list = []
        self.captured: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    @property
    def rows(self) -> tuple[int, int]:
        return (0, 0) if self.reuse else self.plan[self.trainer.global_rank]

    def setup(self, stage: str) -> None:  # the process group is up, the model not yet on its device
        from workbench.features.store import is_store, read_meta

        strategy = self.trainer.strategy
        if self.trainer.world_size > 1:  # every rank extracts with rank 0's weights (NCCL wants them on the GPU)
            for tensor in self.model.state_dict().values():
                on_device = tensor.to(strategy.root_device)
                torch.distributed.broadcast(on_device, src=0)
                tensor.copy_(on_device)
        decision = None
        if self.trainer.is_global_zero:
            key = store_key(self.model, self.stimuli, self.layers, self.preprocess, self.projection)
            decision = (key, is_store(self.store) and read_meta(self.store).get("key") == key)
            if not decision[1]:  # what an interrupted run left: nothing of it is trusted
                shutil.rmtree(shards_folder(self.store), ignore_errors=True)
        self.key, self.reuse = strategy.broadcast(decision, src=0)
        strategy.barrier("shards cleared")

    def predict_dataloader(self):
        batches = _RankBatches(self.stimuli.images, self.rows, self.batch_size)
        return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=self.num_workers,
                                           collate_fn=_as_is)

    def on_predict_start(self) -> None:
        from workbench.features.store import StoreWriter
        from workbench.models.hooks import register_layer_hooks

        first, end = self.rows
        if end == first:  # nothing to extract here (the store is reused, or fewer batches than ranks)
            return
        self.writer = StoreWriter(_shard_path(self.store, self.rows), self.stimuli.stimulus_ids[first:end],
                                  self.layers, self.key)
        self.hooks = register_layer_hooks(
            self.model, {l: lambda m, i, o, l=l: self.captured.__setitem__(l, o) for l in self.layers},
            "extraction")

    def predict_step(self, batch, batch_idx):
        start, images = batch
        if images is None:  # the stand-in item of an empty share
            return
        self.captured.clear()
        self.model(self.preprocess(images, device=self.device))
        for layer, rows in layer_rows(self.captured, self.layers, self.projection, self.shapes, start).items():
            self.writer.write(layer, start - self.rows[0], rows)

    def on_predict_end(self) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def abort(self) -> None:
        self.remove_hooks()
        if self.writer is not None:
            self.writer.abort()
        if self._trainer is not None and self.trainer.is_global_zero:  # the others' shards are no use either
            shutil.rmtree(shards_folder(self.store), ignore_errors=True)


def _finish(module, trainer) -> Activations:
    """After the predict loop, in every rank: the rank's shard closed; rank 0 merges the shards into the store; every
    rank opens the store before any goes on (so rank 0 may move or delete it afterwards)."""
    from workbench.features.store import open_store

    if module.writer is not None:
        module.writer.close(module.shapes, {l: module.projection.info[l] for l in module.layers})
        module.writer = None
    trainer.strategy.barrier("shards written")
    if trainer.is_global_zero and not module.reuse:
        merge_shards(module.store, module.stimuli.stimulus_ids, module.layers, module.key, module.plan)
    trainer.strategy.barrier("store merged")
    activations = open_store(module.store)
    trainer.strategy.barrier("store opened")
    return activations


def merge_shards(store: str | os.PathLike, stimulus_ids, layers: list[str], key: str,
                 plan: list[tuple[int, int]]) -> Path:
    """Copy the shards of ``plan`` (rows per rank) into one store at ``store``, as ``extract_activations(...,
    store=)`` writes it in one process; each shard must carry ``key`` and its rows' stimulus ids. The shards folder
    is removed once the store is in place."""
    from workbench.features.store import StoreWriter, open_store, read_meta

    store, stimulus_ids = Path(store), np.asarray(stimulus_ids).astype(str)
    shards = [(rows, _shard_path(store, rows)) for rows in plan if rows[1] > rows[0]]
    writer = StoreWriter(store, stimulus_ids, layers, key)
    try:
        shapes = projection = None
        for (first, end), path in shards:
            meta = read_meta(path)
            if meta.get("key") != key or meta["stimulus_ids"] != stimulus_ids[first:end].tolist():
                raise RuntimeError(f"the shard {path} was not written by this extraction (another key or other "
                                   f"stimuli); delete {shards_folder(store)} and extract again")
            shard = open_store(path)
            shapes = shapes or shard.unit_shapes
            projection = projection or shard.projection
            for layer in layers:
                block = max(1, MERGE_BLOCK_BYTES // (4 * max(1, shard[layer].shape[1])))
                for at in range(0, end - first, block):
                    writer.write(layer, first + at, np.asarray(shard[layer][at:at + block]))
        if sum(end - first for (first, end), _ in shards) != len(stimulus_ids):
            raise RuntimeError(f"the shards cover {[rows for rows, _ in shards]}, not the {len(stimulus_ids)} stimuli")
        writer.close(shapes, projection)
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(shards_folder(store), ignore_errors=True)
    return store


def _check_world(devices: int, num_nodes: int) -> None:
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1 (processes per node / nodes), got {value!r}")
    world = os.environ.get("WORLD_SIZE")
    if world and world.strip().isdigit() and int(world) != devices * num_nodes:
        raise ValueError(f"this process belongs to a group of WORLD_SIZE={world} processes, but devices={devices} x "
                         f"num_nodes={num_nodes} asks for {devices * num_nodes}; use the launcher's layout (e.g. "
                         f"extract.devices=trainer.devices and extract.num_nodes=trainer.num_nodes)")


def extract_sharded(model: nn.Module, stimuli, store: str | os.PathLike, layers: Iterable[str] | None = None, *,
                    devices: int = 2, num_nodes: int = 1, accelerator: str = "auto",
                    preprocess: Preprocess | dict | None = None, batch_size: int = 64,
                    projection_dim: int | None = None, projection_seed: int = 0, reduction: str = "gaussian",
                    num_workers: int = 0) -> Activations:
    """``extract_activations(model, stimuli, layers, ..., store=store)`` split over ``devices`` x ``num_nodes``
    processes (Lightning ``Trainer.predict``, strategy ``ddp``; gloo on CPU, NCCL on GPUs): the same store, meta and
    key as one process writes, and the same rows (bitwise on CPU). Call it in every rank with the same arguments (a
    script started once per rank: Lightning starts the other ranks itself when the launcher has not); rank 0's
    weights are used. Returns the store, read lazily, in every rank. A store with the same key is reused as it is.
    """
    _check_world(devices, num_nodes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(preprocess, Preprocess):
        preprocess = Preprocess.from_config(preprocess)
    layers = resolve_layers(model, layers)
    projection = _Projection(projection_dim, projection_seed, reduction)
    store = Path(store)
    plan = shard_rows(len(stimuli), batch_size, devices * num_nodes)
    module = ShardedExtraction(model, stimuli, layers, preprocess, projection, store, plan, batch_size,
                                       num_workers)
    trainer = L.Trainer(strategy="ddp", accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        precision="32-true", logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, use_distributed_sampler=False, default_root_dir=store.parent)
    was_training, started_group = model.training, not _group_is_up()
    launcher_env = {name: os.environ.get(name) for name in _LAUNCHER_VARIABLES}
    try:
        with warnings.catch_warnings():  # "consider more num_workers": decoding workers are extract.num_workers
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*predict returned None.*")  # the rows go to the shard, not back
            trainer.predict(module, return_predictions=False)
        return _finish(module, trainer)
    except BaseException:
        module.abort()
        raise
    finally:
        model.train(was_training)
        if started_group and _group_is_up():  # gloo's threads abort the interpreter at exit if the group lives on
            torch.distributed.destroy_process_group()
        if devices * num_nodes == 1:  # nobody to launch again: a later call in this process must not see a group
            _restore_environment(launcher_env)


# what Lightning's launcher writes into os.environ when it starts the processes (even for one process)
_LAUNCHER_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _restore_environment(before: dict) -> None:
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _group_is_up() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
