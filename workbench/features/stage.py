"""The extract stage: activations of the run's model for each configured stimulus set (``extract``, ExtractConfig)."""

from __future__ import annotations

import shutil
import time

from workbench.config import ConfigError
from workbench.distributed import is_rank_zero


def _check_stimulus_sets(names: list[str]) -> None:
    """Every set is registered (before any extraction starts)."""
    from workbench.data import STIMULUS_SETS

    for i, name in enumerate(names):
        try:
            STIMULUS_SETS.entry(name)
        except KeyError as err:  # its message lists the registered sets and the nearest name
            raise ConfigError(f"extract.stimulus_sets[{i}]: {err.args[0]}") from None


def stimulus_sets_needed(cfg) -> list[str]:
    """The stimulus sets the run's other stages read from the extract stage (each stage's schema says which, with a
    ``stimulus_sets_needed`` method): what ``extract.stimulus_sets: null`` extracts."""
    from workbench.config import parse
    from workbench.stages import STAGES

    needed: list[str] = []
    for name in cfg.get("stages") or []:
        spec = STAGES.get(name)
        schema = spec.resolve_config()
        if schema is None or not hasattr(schema, "stimulus_sets_needed"):
            continue
        needed += parse(schema, cfg.get(spec.key), spec.key).stimulus_sets_needed()
    return list(dict.fromkeys(needed))


def extract_stage(ctx) -> dict:
    """Per stimulus set: the activations of every configured layer, written with ``ctx.run.save_activations`` (the
    later stages read them with ``ctx.run.load_activations``)."""
    from workbench.data import STIMULUS_SETS, load_stimuli
    from workbench.features.extract import extract_activations

    opts = ctx.config
    names = opts.stimulus_sets if opts.stimulus_sets is not None else stimulus_sets_needed(ctx.cfg)
    if not names:
        raise ConfigError("extract: no stage after it reads activations and extract.stimulus_sets is null; name the "
                          "sets to extract (extract.stimulus_sets=[kriegeskorte92]) or drop extract from stages")
    _check_stimulus_sets(names)
    model = ctx.model()
    if opts.processes > 1 and not is_rank_zero():  # an extra DDP rank: its shards, then rank 0 writes the run
        for name in names:
            stimuli = load_stimuli(name)
            _extract_sharded_set(ctx, model, stimuli, name, _streamed(opts, stimuli))
        return {}
    section: dict = {"stimulus_sets": {}, "preprocess": ctx.preprocess.to_dict()}
    work_dir = ctx.run.activations_work_dir
    for name in names:
        stimuli = load_stimuli(name)
        start = time.perf_counter()
        streamed = _streamed(opts, stimuli)
        # per-layer pieces in the run's work folder: a rerun after a crash reuses the layers already extracted
        if opts.processes > 1:
            acts = _extract_sharded_set(ctx, model, stimuli, name, streamed)
        else:
            acts = extract_activations(model, stimuli, opts.layers, preprocess=ctx.preprocess,
                                       batch_size=opts.batch_size, device=ctx.device,
                                       projection_dim=opts.projection_dim, projection_seed=ctx.seed,
                                       cache_dir=None if streamed else work_dir, progress=ctx.progress,
                                       num_workers=opts.num_workers, reduction=opts.reduction,
                                       store=ctx.run.activations_store_path(name) if streamed else None)
        if streamed:
            ctx.run.record_store(name)
        else:
            ctx.run.save_activations(name, acts)
        for leftover in work_dir.glob("*.npz"):  # the per-layer pieces are now in the set's file
            leftover.unlink()
        shutil.rmtree(_sharded_work_store(ctx, name), ignore_errors=True)  # likewise a sharded extraction's store
        ctx.cite(STIMULUS_SETS, name)
        section["stimulus_sets"][name] = {
            "n_stimuli": len(stimuli),
            "storage": "on-disk store (memory-mapped .npy)" if streamed else "npz",
            "layers": {layer: {"unit_shape": list(acts.unit_shapes[layer]), "n_features": int(acts[layer].shape[1]),
                               "projection": acts.projection[layer]} for layer in acts},
            "seconds": round(time.perf_counter() - start, 2),
            "processes": opts.processes,
            "citation": STIMULUS_SETS.citation(name),
        }
    section["headline"] = []  # nothing to summarise: the activations feed the stages after it
    return section


# -- extraction over several processes (extract.devices x extract.num_nodes > 1) ---------------------------------------
def _streamed(opts, stimuli) -> bool:
    return opts.store_above is not None and len(stimuli) > opts.store_above


def _sharded_work_store(ctx, name: str):
    """Where a sharded extraction of a set kept in memory puts its store before rank 0 saves it as the set's npz (the
    path only: an extra rank creates nothing but its shards)."""
    return ctx.run.path / "cache" / "activations" / "keyed" / f"{name}.store"


def _extract_sharded_set(ctx, model, stimuli, name: str, streamed: bool):
    """The set's activations extracted by every DDP rank together (``features.sharded``), in every rank. Rank 0
    gets the run's store (streamed sets) or the activations in memory, to be saved as the set's npz."""
    import numpy as np

    from workbench.features.extract import Activations
    from workbench.features.sharded import extract_sharded

    opts = ctx.config
    acts = extract_sharded(model, stimuli, ctx.run.activations_store_path(name) if streamed else
                           _sharded_work_store(ctx, name), opts.layers, devices=opts.devices,
                           num_nodes=opts.num_nodes, accelerator="gpu" if ctx.device.type == "cuda" else "cpu",
                           preprocess=ctx.preprocess, batch_size=opts.batch_size, projection_dim=opts.projection_dim,
                           projection_seed=ctx.seed, reduction=opts.reduction, num_workers=opts.num_workers)
    if streamed:
        return acts
    return Activations({layer: np.array(acts[layer]) for layer in acts}, acts.stimulus_ids, acts.unit_shapes,
                       acts.projection)
