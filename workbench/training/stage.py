"""The train and topography stages (``<name>_stage(ctx) -> metrics section``); figures come from ``plots.py``."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import ConfigError

__all__ = ["train_stage", "topography_stage", "build_logger", "trainer_kwargs"]

# Keys of cfg["trainer"] the stage sets itself.
_STAGE_OWNED = {"logger", "callbacks", "default_root_dir"}


def build_logger(logger_cfg: dict | None, run) -> Any:
    """A Lightning logger from its ``_target_`` spec, writing under <run>/logs; False when none is configured."""
    import hydra.utils

    if not logger_cfg:
        return False
    spec = dict(logger_cfg)
    logs = run.subdir("logs")
    if "MLFlowLogger" in str(spec.get("_target_", "")):
        if not spec.get("tracking_uri"):
            spec["tracking_uri"] = (logs / "mlruns").resolve().as_uri()
        spec.pop("save_dir", None)
    elif spec.get("save_dir") in (None, ""):
        spec["save_dir"] = str(logs)
    try:
        return hydra.utils.instantiate(spec, _convert_="all")
    except Exception as err:  # most often: tensorboard / mlflow not installed
        raise RuntimeError(f"could not build logger {spec.get('_target_')}: {err}. Install it "
                           "(pip install 'workbench[loggers]') or use logger=csv") from err


def trainer_kwargs(cfg: dict) -> dict[str, Any]:
    kwargs = {k: v for k, v in (cfg.get("trainer") or {}).items() if not str(k).startswith("_")}
    clash = _STAGE_OWNED & set(kwargs)
    if clash:
        raise ConfigError(f"trainer.{sorted(clash)} are set by the train stage (run dir, logger config group); "
                         "remove them from the trainer config")
    from workbench.logs import on_terminal

    if not on_terminal():  # Lightning's bar in a log file is one line per step
        kwargs["enable_progress_bar"] = False
    if cfg.get("device") == "cpu":
        kwargs["accelerator"] = "cpu"
    elif cfg.get("device") == "cuda":
        kwargs["accelerator"] = "gpu"
    if kwargs.get("deterministic") is None and _trains_on_cpu(kwargs):
        kwargs["deterministic"] = True  # a rerun on CPU reproduces the weights bit for bit (configs/trainer/cpu.yaml)
    return kwargs


def _trains_on_cpu(kwargs: dict[str, Any]) -> bool:
    accelerator = kwargs.get("accelerator", "auto")
    if accelerator == "auto":
        import torch

        return not torch.cuda.is_available()
    return accelerator == "cpu"


@contextlib.contextmanager
def _deterministic_kernels(deterministic: Any):
    """Training with ``deterministic`` set: oneDNN (CPU convolutions) picks deterministic algorithms too; Lightning's
    flag covers torch's own kernels (``torch.use_deterministic_algorithms``, which Lightning sets for the whole
    process). Both settings come back on exit, so the stages after training run as they would have."""
    import torch

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.mkldnn.deterministic)
    torch.backends.mkldnn.deterministic = bool(deterministic) or previous[2]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.mkldnn.deterministic = previous[2]


class _History:
    """Per-epoch copy of the logged epoch metrics (for the train_curves figure and metrics.json)."""

    def __init__(self):
        import lightning as L

        class Callback(L.Callback):
            def __init__(cb):
                cb.epochs: list[dict[str, float]] = []

            def on_train_epoch_end(cb, trainer, pl_module):
                row = {"epoch": trainer.current_epoch}
                for key, value in trainer.callback_metrics.items():
                    if key.endswith("_step"):
                        continue
                    row[key.removesuffix("_epoch")] = float(value)
                cb.epochs.append(row)

            # stored in last.ckpt, so a resumed fit keeps the epochs trained before the interruption
            def state_dict(cb) -> dict:
                return {"epochs": list(cb.epochs)}

            def load_state_dict(cb, state: dict) -> None:
                cb.epochs[:] = list(state.get("epochs", []))

        self.callback = Callback()

    @property
    def epochs(self) -> list[dict[str, float]]:
        return self.callback.epochs


# -- train -----------------------------------------------------------------------------------------------------------
def _fit_and_test(ctx, module, datamodule) -> tuple[Any, _History, dict, dict[str, float]]:
    """Fit ``module`` on the run's training data, then test it: (trainer, history, test metrics, timings)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    history = _History()
    # saved at the end of each training epoch, after the history callback (Lightning runs checkpointing last), so
    # last.ckpt holds every finished epoch's row
    checkpoint_cb = ModelCheckpoint(dirpath=ctx.run.checkpoints, filename="lightning-{epoch:02d}", save_last=True,
                                    save_top_k=1, save_on_train_epoch_end=True)
    kwargs = trainer_kwargs(dict(ctx.cfg))
    resume = ctx.run.training_resume_path
    with _deterministic_kernels(kwargs.get("deterministic")):
        trainer = L.Trainer(**kwargs, logger=build_logger(ctx.cfg.get("logger"), ctx.run),
                            callbacks=[checkpoint_cb, history.callback], default_root_dir=str(ctx.run.path))
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        fit_seconds = time.perf_counter() - start
        test = trainer.test(module, datamodule=datamodule, verbose=False)
    timings = {"fit_seconds": round(fit_seconds, 2), "wall_seconds": round(time.perf_counter() - start, 2)}
    return trainer, history, (test[0] if test else {}), timings


def _train_section(trainer, module, history: _History, test: dict, timings: dict[str, float]) -> dict[str, Any]:
    final = history.epochs[-1] if history.epochs else {}
    return {
        "test_accuracy": test.get("test/acc"),
        "test_ce": test.get("test/ce"),
        "val_accuracy": final.get("val/acc"),
        "train_accuracy": final.get("train/acc"),
        "final": {k: v for k, v in final.items() if k != "epoch"},
        "test": dict(test),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        **timings,
        "n_parameters": int(sum(p.numel() for p in module.model.parameters())),
        "objectives": [{"layer": o.layer, "loss": o.loss_name, "weight": o.weight} for o in module.objectives],
        "sheets": {k: {"unit_shape": list(s.unit_shape), "grid": list(s.grid), "size_mm": s.size_mm}
                   for k, s in module.model.cortical_sheets.items()},
        "history": history.epochs,
    }


@contextlib.contextmanager
def _kept_csv_log(run):
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a resumed fit would lose the epochs
    logged before the interruption: keep those rows and put them back in front of the new ones."""
    import csv

    def rows(path: Path) -> list[dict]:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    resuming = run.training_resume_path is not None
    earlier = {p: rows(p) for p in sorted((run.path / "logs").glob("**/metrics.csv"))} if resuming else {}
    try:
        yield
    finally:
        for path, rows_before in earlier.items():
            new = rows(path) if path.is_file() else []
            first = min((float(r["epoch"]) for r in new if r.get("epoch")), default=float("inf"))
            kept = [r for r in rows_before if r.get("epoch") and float(r["epoch"]) < first] + new
            _write_csv(path, kept)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from workbench.utils import atomic_write_text

    fields = sorted({k for r in rows for k in r})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _end_process_group(trainer) -> None:
    """After a multi-process fit and test: every rank meets once more, then leaves the process group (gloo's threads
    abort the interpreter at exit while the group is alive). Rank 0 goes on alone with the later stages."""
    import torch.distributed as dist

    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train_stage(ctx) -> dict:
    """Train the run's model (``cfg["model"]``) on ``cfg["data"]`` with Lightning, the topographic losses of
    ``model.topography`` added; the run's checkpoint (weights + config + cortical sheets) goes to ctx.run."""
    import lightning as L

    from workbench.distributed import parameters_digest
    from workbench.models import MODELS, build_model
    from workbench.training.losses import LOSSES
    from workbench.training.module import TopographicModule
    from workbench.training.plots import train_curves_figure
    from workbench.training.preoptimise import preoptimise_for_training

    model_cfg = ctx.model_config
    L.seed_everything(ctx.seed, workers=True, verbose=False)
    model = build_model(model_cfg)  # fresh, whatever the run holds: this stage is what trains it
    preoptimised = preoptimise_for_training(model, model_cfg, ctx.datamodule, ctx.preprocess)
    if preoptimised is not None:  # TDANN: positions from correlated responses, then the spatial loss
        ctx.run.add_provenance(preoptimise=preoptimised)
        ctx.log(f"[workbench] train: sheet positions pre-optimised on {preoptimised['n_stimuli']} images "
                f"({preoptimised['source']}): {preoptimised['layers']}")
    module = TopographicModule(model, model_cfg)
    datamodule = ctx.datamodule()
    with _kept_csv_log(ctx.run):
        trainer, history, test, timings = _fit_and_test(ctx, module, datamodule)
    section = _train_section(trainer, module, history, test, timings)
    if preoptimised is not None:
        section["preoptimise"] = {k: v for k, v in preoptimised.items() if k != "slot_of_channel"}
    section["data_files"] = dict(getattr(datamodule, "data_files", {}) or {})  # path -> sha256 of what it read
    ctx.run.add_provenance(training_data=section["data_files"])
    ctx.cite(MODELS, model_cfg["name"])
    for objective in module.objectives:
        if objective.weight > 0:
            ctx.cite(LOSSES, objective.loss_name)
    section["parameters_sha256"] = parameters_digest(module.model)  # equal on every rank after a DDP fit
    section["processes"] = int(trainer.world_size)
    _end_process_group(trainer)
    if not trainer.is_global_zero:  # the run folder is rank 0's: no checkpoint, figure or metrics from this rank
        ctx.log(f"[workbench] train: rank {trainer.global_rank} of {trainer.world_size} done; parameters sha256 "
                f"{section['parameters_sha256']}")
        return section
    ctx.run.save_model(module.model, model_cfg, model.cortical_sheets,
                       extra={"seed": ctx.seed, "test_accuracy": section["test_accuracy"]})
    ctx.save_figure(train_curves_figure(history.epochs), "train_curves")
    section["headline"] = [ctx.headline("test_accuracy", section["test_accuracy"], "Test accuracy",
                                        "test_accuracy", percent=True, epochs=section["epochs"])]
    return section


# -- topography ------------------------------------------------------------------------------------------------------
def _sheets_to_analyse(ctx, model, layers: list[str] | None) -> tuple[list[str], dict]:
    """The layers to analyse and a cortical sheet for each: the model's own sheets (from training), and a default
    sheet (model.topography.sheet) for a layer trained without one. No layers named: the model's sheet layers,
    else its convolutional layers (units with a spatial extent)."""
    from workbench.models import build_sheets, layer_names, layer_unit_shapes

    sheets = dict(getattr(model, "cortical_sheets", {}) or {})
    layers = list(layers or sheets)
    if not layers:
        shapes = layer_unit_shapes(model, ctx.preprocess.image_size)
        layers = [name for name in layer_names(model) if len(shapes[name]) == 3 and shapes[name][1] > 1]
    missing = [layer for layer in layers if layer not in sheets]
    if missing:  # a model trained without topography still gets analysed on a default sheet
        sheets.update(build_sheets(model, ctx.model_config, layers=missing))
    return layers, sheets


def _layer_responses(ctx, model, stimulus_set: str, stimuli, layers: list[str]) -> tuple[dict, dict, np.ndarray]:
    """Responses of each layer to ``stimuli``: the extract stage's activations when they hold the layer unprojected,
    else extracted now. Returns ({layer: (n_stimuli, n_units)}, {layer: unit shape}, stimulus ids)."""
    from workbench.features import extract_activations

    arrays, shapes, ids = {}, {}, None
    if stimulus_set in ctx.run.activation_sets():
        acts = ctx.run.load_activations(stimulus_set)
        for layer in layers:
            if layer in acts and acts.projection.get(layer) is None:
                arrays[layer], shapes[layer] = acts[layer], acts.unit_shapes[layer]
        ids = np.asarray(acts.stimulus_ids)
    missing = [layer for layer in layers if layer not in arrays]
    if missing:
        fresh = extract_activations(model, stimuli, missing, preprocess=ctx.preprocess, device=ctx.device,
                                    progress=False)
        if ids is not None and not np.array_equal(np.asarray(fresh.stimulus_ids), ids):
            raise ValueError("cached and fresh activations list stimuli in different orders")
        ids = np.asarray(fresh.stimulus_ids)
        for layer in missing:
            arrays[layer], shapes[layer] = fresh[layer], fresh.unit_shapes[layer]
    return arrays, shapes, ids


def _contrast_masks(metadata, contrasts: dict[str, str | None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """contrast -> (target mask, reference mask) over the stimuli, from boolean metadata columns."""
    out = {}
    for target, reference in contrasts.items():
        absent = [c for c in (target, reference) if c is not None and c not in metadata]
        if absent:
            raise ConfigError(f"topography.contrasts: the stimulus metadata has no column(s) {absent} for the "
                              f"{target!r} contrast; its columns are {list(metadata.columns)}")
        t = metadata[target].to_numpy().astype(bool)
        r = ~t if reference is None else metadata[reference].to_numpy().astype(bool) & ~t
        if not t.any() or not r.any():
            raise ConfigError(f"topography.contrasts.{target}: {int(t.sum())} target and {int(r.sum())} reference "
                              "stimuli; a contrast needs both")
        out[target] = (t, r)
    return out


def _analyse_layer(responses: np.ndarray, positions: np.ndarray, masks: dict, opts) -> dict[str, Any]:
    """Smoothness (and its position-shuffled control) and, per contrast, the selectivity map and its patches."""
    from workbench.models.topography import detect_patches, rasterize, selectivity, smoothness_curve

    curve_options = dict(n_bins=opts.n_bins, max_distance_mm=opts.max_distance_mm, max_units=opts.max_units,
                         max_pairs=opts.max_pairs, seed=opts.seed)
    curve = smoothness_curve(responses, positions, **curve_options)
    rng = np.random.default_rng(opts.seed)
    shuffled = smoothness_curve(responses, positions[rng.permutation(len(positions))], **curve_options)
    contrasts, maps, values_of = {}, {}, {}
    for name, (target, reference) in masks.items():
        use = target | reference
        values = selectivity(responses[use], target[use], method=opts.selectivity)
        patches, smooth, extent = detect_patches(values, positions, threshold=opts.patch_threshold,
                                                 smoothing_mm=opts.patch_smoothing_mm,
                                                 min_units=opts.patch_min_units)
        raw, _, _ = rasterize(values, positions, extent=None)
        maps[name], values_of[name] = (raw, smooth, extent, patches), values.astype(np.float32)
        contrasts[name] = {
            "n_target": int(target.sum()), "n_reference": int(reference.sum()),
            "fraction_above_threshold": float(np.mean(values > opts.patch_threshold)),
            "max": float(values.max()), "n_patches": len(patches),
            "patches": [p.to_dict() for p in patches[:10]],
            "morans_i": _morans_i(values, positions, opts),
        }
    return {"curve": curve, "shuffled": shuffled, "contrasts": contrasts, "maps": maps, "values": values_of}


def _morans_i(values: np.ndarray, positions: np.ndarray, opts) -> dict[str, float] | None:
    """Moran's I of a selectivity map against shuffled positions; None where it is undefined (a constant map, or no
    unit pair within the radius)."""
    from workbench.models.hallmarks import morans_i_test

    try:
        return morans_i_test(values, positions, opts.morans_radius_mm, opts.morans_shuffles, opts.seed)
    except ValueError:
        return None


def _orientation_analysis(ctx, model, layers: list[str], sheets: dict, opts) -> tuple[dict, dict]:
    """Orientation tuning of each layer's units to sine gratings, its preference map on the sheet, pinwheels and
    their density per column spacing squared. Returns (section, {layer: (map, extent, pinwheel centres)})."""
    import pandas as pd

    from workbench.data.stimuli import StimulusSet
    from workbench.features import extract_activations
    from workbench.models.hallmarks import (column_spacing, find_pinwheels, grating_images, orientation_map,
                                            orientation_tuning, pinwheel_density)

    images, meta = grating_images(size=int(ctx.preprocess.image_size or 32))
    gratings = StimulusSet("gratings", pd.DataFrame(meta), images)
    acts = extract_activations(model, gratings, layers, preprocess=ctx.preprocess, device=ctx.device, progress=False)
    section, maps = {}, {}
    for layer in layers:
        positions = sheets[layer].positions
        tuning = orientation_tuning(acts[layer], meta["orientation_deg"].to_numpy())
        z, extent = orientation_map(tuning.preference_deg, tuning.osi, positions,
                                    smoothing_mm=opts.patch_smoothing_mm / 2)
        pixel_mm = (extent[1] - extent[0]) / z.shape[1]
        centres, charges = find_pinwheels(z)
        spacing = column_spacing(z, pixel_mm)
        area = float(np.isfinite(z).sum() * pixel_mm ** 2)
        density = pinwheel_density(len(centres), area, spacing) if np.isfinite(spacing) else float("nan")
        section[layer] = {"mean_osi": float(np.nanmean(tuning.osi)), "n_pinwheels": int(len(centres)),
                          "morans_i": _orientation_morans_i(tuning.preference_deg, tuning.osi, positions, opts),
                          "pinwheel_charges": {"+1/2": int((charges > 0).sum()), "-1/2": int((charges < 0).sum())},
                          "column_spacing_mm": spacing, "map_area_mm2": area, "pinwheel_density": density,
                          "reference_density": float(np.pi)}
        maps[layer] = (z, extent, centres)
    return section, maps


def _orientation_morans_i(preference_deg: np.ndarray, osi: np.ndarray, positions: np.ndarray, opts
                          ) -> dict[str, float] | None:
    """Moran's I of the orientation map z = OSI exp(2i theta) of the tuned units (the doubled angle, so 0 and 180
    degrees agree; the map the pinwheels are found in), complex (``hallmarks.morans_i``: the variance-weighted mean
    over its real and imaginary parts), against position-shuffled maps. None where undefined (a constant map, or no
    pair within the radius)."""
    tuned = np.isfinite(osi) & (np.nan_to_num(osi) > 0)
    z = np.asarray(osi, dtype=np.float64)[tuned] * np.exp(2j * np.deg2rad(np.asarray(preference_deg)[tuned]))
    try:
        result = _morans_i(z, positions[tuned], opts)
    except IndexError:
        return None
    return None if result is None else {**result, "n_units": int(tuned.sum())}


def _check_sheet_fits(layer: str, unit_shape, sheet) -> None:
    if tuple(unit_shape) != tuple(sheet.unit_shape) and int(np.prod(unit_shape)) != sheet.n_units:
        raise ValueError(f"layer {layer}: activations have unit shape {tuple(unit_shape)}, the sheet "
                         f"{sheet.unit_shape}")


def topography_stage(ctx) -> dict:
    """Smoothness curves and indices, category-selectivity maps and patches on the cortical sheets of the run's
    model (options: ``topography``, workbench.training.config.TopographyConfig)."""
    from workbench.data import STIMULUS_SETS, load_stimuli
    from workbench.training.plots import selectivity_maps_figure, smoothness_figure

    opts = ctx.config
    model = ctx.model()
    layers, sheets = _sheets_to_analyse(ctx, model, opts.layers)
    stimuli = load_stimuli(opts.stimulus_set)
    ctx.cite(STIMULUS_SETS, opts.stimulus_set)
    arrays, shapes, ids = _layer_responses(ctx, model, opts.stimulus_set, stimuli, layers)
    metadata = stimuli.metadata.set_index("stimulus_id").loc[[str(i) for i in ids]].reset_index()
    masks = _contrast_masks(metadata, opts.contrasts)

    section: dict[str, Any] = {"stimulus_set": opts.stimulus_set, "selectivity_method": opts.selectivity,
                               "layers": {}}
    curves, maps, cache = {}, {}, {}
    for layer in ctx.progress(layers, "layers", unit="layer"):
        sheet = sheets[layer]
        _check_sheet_fits(layer, shapes[layer], sheet)
        result = _analyse_layer(arrays[layer], sheet.positions, masks, opts)
        curves[layer] = (result["curve"], result["shuffled"])
        maps.update({(layer, name): m for name, m in result["maps"].items()})
        cache.update({f"{layer}/{name}": v for name, v in result["values"].items()})
        cache[f"{layer}/positions"] = sheet.positions
        section["layers"][layer] = {
            "smoothness_index": result["curve"].index, "smoothness_index_shuffled": result["shuffled"].index,
            "curve": result["curve"].to_dict(), "unit_shape": list(sheet.unit_shape),
            "contrasts": result["contrasts"]}
    orientation_layers = layers[:1] if opts.orientation_layers is None else list(opts.orientation_layers)
    if orientation_layers:
        from workbench.training.plots import orientation_maps_figure

        section["orientation"], orientation = _orientation_analysis(ctx, model, orientation_layers, sheets, opts)
        ctx.save_figure(orientation_maps_figure(orientation, section["orientation"]), "topography_orientation_maps")
    ctx.run.save_arrays(ctx.run.topography_maps_path, **cache)
    ctx.save_figure(smoothness_figure(curves, opts.stimulus_set), "topography_smoothness")
    ctx.save_figure(selectivity_maps_figure(maps, layers, list(masks), opts.patch_threshold, opts.selectivity),
                    "topography_selectivity_maps")
    section["summary"] = {f"{layer}_smoothness_index": section["layers"][layer]["smoothness_index"]
                          for layer in layers}
    section["headline"] = [
        ctx.headline(f"{layer}_smoothness_index", section["layers"][layer]["smoothness_index"],
                     f"Smoothness index ({layer})", f"layers.{layer}.smoothness_index", layer=layer,
                     shuffled=section["layers"][layer]["smoothness_index_shuffled"])
        for layer in layers]
    for layer, result in (section.get("orientation") or {}).items():
        section["headline"].append(ctx.headline(
            f"{layer}_pinwheel_density", result["pinwheel_density"], f"Pinwheel density ({layer})",
            f"orientation.{layer}.pinwheel_density", "per column spacing²", layer=layer,
            reference=result["reference_density"]))
    return section
