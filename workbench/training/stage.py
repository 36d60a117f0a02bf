"""The train and topography stages (``stage(run, cfg) -> metrics section``)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_stage", "topography_stage", "build_datamodule", "build_logger", "trainer_kwargs",
           "TOPOGRAPHY_DEFAULTS", "CONTRASTS"]

# Keys of cfg["trainer"] the stage sets itself.
_STAGE_OWNED = {"logger", "callbacks", "default_root_dir"}


def build_datamodule(cfg: dict):
    """cfg["data"] (a ``_target_`` spec, CIFAR-10 by default) with the model's preprocessing filled in."""
    import hydra.utils

    data = dict(cfg.get("data") or {})
    pre = (cfg["model"].get("preprocess") or {})
    data.setdefault("_target_", "workbench.data.CIFAR10DataModule")
    for key in ("image_size", "mean", "std"):
        if key in pre:
            data[key] = pre[key]
    data.setdefault("seed", int(cfg.get("seed", 0)))
    return hydra.utils.instantiate(data, _convert_="all")


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
        raise ValueError(f"trainer.{sorted(clash)} are set by the train stage (run dir, logger config group); "
                         "remove them from the trainer config")
    if cfg.get("device") == "cpu":
        kwargs["accelerator"] = "cpu"
    elif cfg.get("device") == "cuda":
        kwargs["accelerator"] = "gpu"
    return kwargs


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

        self.callback = Callback()

    @property
    def epochs(self) -> list[dict[str, float]]:
        return self.callback.epochs


def _train_curves_figure(epochs: list[dict[str, float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = [row["epoch"] + 1 for row in epochs]

    def series(key):
        return [row.get(key, math.nan) for row in epochs]

    for key, label in (("train/ce", "train"), ("val/ce", "val")):
        axes[0].plot(x, series(key), marker="o", label=label)
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="task loss")
    for key, label in (("train/acc", "train"), ("val/acc", "val")):
        axes[1].plot(x, series(key), marker="o", label=label)
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    topo_keys = sorted({k for row in epochs for k in row if k.startswith("train/topo_")})
    for key in topo_keys:
        axes[2].plot(x, series(key), marker="o", label=key.removeprefix("train/topo_"))
    axes[2].set(xlabel="epoch", ylabel="loss (unweighted)", title="topographic losses")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not topo_keys:
        axes[2].text(0.5, 0.5, "no topographic layers", ha="center", va="center", transform=axes[2].transAxes)
    fig.tight_layout()
    return fig


def train_stage(run, cfg: dict) -> dict:
    """Train cfg["model"] on cfg["data"] with Lightning; write checkpoints/model.pt (weights + config + sheets)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from workbench.models import MODELS, build_model, save_checkpoint
    from workbench.training.losses import LOSSES
    from workbench.training.module import TopographicModule

    seed = int(cfg.get("seed", 0))
    model_cfg = dict(cfg["model"])
    L.seed_everything(seed, workers=True, verbose=False)
    model = build_model(model_cfg)
    sheets = model.cortical_sheets
    module = TopographicModule(model, model_cfg)
    datamodule = build_datamodule(cfg)
    history = _History()
    checkpoint_cb = ModelCheckpoint(dirpath=run.checkpoints, filename="lightning-{epoch:02d}", save_last=True,
                                    save_top_k=1)
    trainer = L.Trainer(**trainer_kwargs(cfg), logger=build_logger(cfg.get("logger"), run),
                        callbacks=[checkpoint_cb, history.callback], default_root_dir=str(run.path))
    last = Path(run.checkpoints) / "last.ckpt"
    start = time.perf_counter()
    # An interrupted run resumes from Lightning's last checkpoint (model.pt is written only at the very end).
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    fit_seconds = time.perf_counter() - start
    test = trainer.test(module, datamodule=datamodule, verbose=False)
    test = test[0] if test else {}
    wall = time.perf_counter() - start

    final = history.epochs[-1] if history.epochs else {}
    objectives = [{"layer": o.layer, "loss": o.loss_name, "weight": o.weight} for o in module.objectives]
    section = {
        "test_accuracy": test.get("test/acc"),
        "test_ce": test.get("test/ce"),
        "val_accuracy": final.get("val/acc"),
        "train_accuracy": final.get("train/acc"),
        "final": {k: v for k, v in final.items() if k != "epoch"},
        "test": dict(test),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "fit_seconds": round(fit_seconds, 2),
        "wall_seconds": round(wall, 2),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "objectives": objectives,
        "sheets": {k: {"unit_shape": list(s.unit_shape), "grid": list(s.grid), "size_mm": s.size_mm}
                   for k, s in sheets.items()},
        "history": history.epochs,
        "references": sorted({MODELS.citation(model_cfg["name"])}
                             | {LOSSES.citation(o.loss_name) for o in module.objectives if o.weight > 0} - {""}),
    }
    if trainer.is_global_zero:
        save_checkpoint(Path(run.checkpoints) / "model.pt", module.model, model_cfg, sheets,
                        extra={"seed": seed, "test_accuracy": section["test_accuracy"]})
        import matplotlib.pyplot as plt

        fig = _train_curves_figure(history.epochs)
        run.save_figure(fig, "train_curves")
        plt.close(fig)
    elif trainer.world_size > 1:
        # DDP launched this process as an extra rank: it has trained and tested with rank 0; the later stages and
        # all writes into the run directory belong to rank 0 alone.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        raise SystemExit(0)
    return section


# -- topography ----------------------------------------------------------------------------------------------------
TOPOGRAPHY_DEFAULTS: dict[str, Any] = {
    "stimulus_set": "kriegeskorte92",
    "layers": None,            # null = the model's cortical-sheet layers (else its conv layers)
    "n_bins": 10,
    "max_distance_mm": None,   # null = half the sheet
    "max_units": 4000,
    "max_pairs": 200000,
    "selectivity": "t",        # t | dprime
    "patch_threshold": 4.0,    # on the smoothed map, in units of the selectivity statistic
    "patch_smoothing_mm": 0.5,
    "patch_min_units": 20,
    "seed": 0,
}
# contrast -> (target metadata column, reference column or None = every other stimulus)
CONTRASTS: dict[str, tuple[str, str | None]] = {
    "face": ("face", None),
    "body": ("body", None),
    "animate": ("animate", "inanim"),
}


def _topography_options(cfg: dict) -> dict[str, Any]:
    opts = dict(TOPOGRAPHY_DEFAULTS)
    opts.update(((cfg.get("model") or {}).get("topography") or {}).get("analysis") or {})
    opts.update(cfg.get("topography") or {})
    unknown = set(opts) - set(TOPOGRAPHY_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown topography analysis option(s) {sorted(unknown)}; valid: {sorted(TOPOGRAPHY_DEFAULTS)}")
    return opts


def _contrast_masks(metadata, contrasts=CONTRASTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, (target, reference) in contrasts.items():
        if target not in metadata or (reference is not None and reference not in metadata):
            raise KeyError(f"stimulus metadata lacks column {target!r}/{reference!r} for the {name} contrast; "
                           f"columns are {list(metadata.columns)}")
        t = metadata[target].to_numpy().astype(bool)
        r = ~t if reference is None else metadata[reference].to_numpy().astype(bool) & ~t
        out[name] = (t, r)
    return out


def _activations_for(run, cfg, model, stimuli, layers, stimulus_set):
    """Cached activations of the extract stage when they hold the layers unprojected; else extract them now."""
    from workbench.features import extract_activations, load_run_activations

    arrays, shapes = {}, {}
    try:
        acts = load_run_activations(run, stimulus_set)
        for layer in layers:
            if layer in acts and acts.projection.get(layer) is None:
                arrays[layer], shapes[layer] = acts[layer], acts.unit_shapes[layer]
        ids = np.asarray(acts.stimulus_ids)
    except FileNotFoundError:
        ids = None
    missing = [layer for layer in layers if layer not in arrays]
    if missing:
        fresh = extract_activations(model, stimuli, missing, preprocess=cfg["model"].get("preprocess"),
                                    device=cfg.get("device"), progress=False)
        if ids is not None and not np.array_equal(np.asarray(fresh.stimulus_ids), ids):
            raise ValueError("cached and fresh activations list stimuli in different orders")
        ids = np.asarray(fresh.stimulus_ids)
        for layer in missing:
            arrays[layer], shapes[layer] = fresh[layer], fresh.unit_shapes[layer]
    return arrays, shapes, ids


def topography_stage(run, cfg: dict) -> dict:
    """Smoothness curves/indices, category selectivity maps and patches on the cortical sheets of the run's model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.data import load_stimuli
    from workbench.models import build_sheets, layer_names, layer_unit_shapes
    from workbench.models.topography import detect_patches, rasterize, selectivity, smoothness_curve
    from workbench.pipeline import model_for_run
    from workbench.utils import atomic_save_npz

    opts = _topography_options(cfg)
    model = model_for_run(run, cfg)
    sheets = dict(getattr(model, "cortical_sheets", {}) or {})
    layers = opts["layers"] or list(sheets)
    if not layers:
        shapes = layer_unit_shapes(model, int((cfg["model"].get("preprocess") or {}).get("image_size", 32)))
        layers = [name for name in layer_names(model) if len(shapes[name]) == 3 and shapes[name][1] > 1]
    if isinstance(layers, str):
        layers = [layers]
    missing = [layer for layer in layers if layer not in sheets]
    if missing:  # a model trained without topography still gets analysed on a default sheet
        sheets.update(build_sheets(model, cfg["model"], layers=missing))

    stimuli = load_stimuli(opts["stimulus_set"])
    arrays, shapes, ids = _activations_for(run, cfg, model, stimuli, layers, opts["stimulus_set"])
    meta = stimuli.metadata.set_index("stimulus_id").loc[[str(i) for i in ids]].reset_index()
    masks = _contrast_masks(meta)

    section: dict[str, Any] = {"stimulus_set": opts["stimulus_set"], "selectivity_method": opts["selectivity"],
                               "layers": {}}
    curves, maps, cache = {}, {}, {}
    for layer in layers:
        sheet = sheets[layer]
        if tuple(shapes[layer]) != tuple(sheet.unit_shape) and int(np.prod(shapes[layer])) != sheet.n_units:
            raise ValueError(f"layer {layer}: activations have unit shape {shapes[layer]}, the sheet "
                             f"{sheet.unit_shape}")
        responses, positions = arrays[layer], sheet.positions
        curve = smoothness_curve(responses, positions, n_bins=opts["n_bins"], max_distance_mm=opts["max_distance_mm"],
                                 max_units=opts["max_units"], max_pairs=opts["max_pairs"], seed=opts["seed"])
        rng = np.random.default_rng(opts["seed"])
        shuffled = smoothness_curve(responses, positions[rng.permutation(len(positions))], n_bins=opts["n_bins"],
                                    max_distance_mm=opts["max_distance_mm"], max_units=opts["max_units"],
                                    max_pairs=opts["max_pairs"], seed=opts["seed"])
        curves[layer] = (curve, shuffled)
        layer_section = {"smoothness_index": curve.index, "smoothness_index_shuffled": shuffled.index,
                         "curve": curve.to_dict(), "unit_shape": list(sheet.unit_shape), "contrasts": {}}
        for name, (target, reference) in masks.items():
            use = target | reference
            values = selectivity(responses[use], target[use], method=opts["selectivity"])
            patches, smooth, extent = detect_patches(values, positions, threshold=opts["patch_threshold"],
                                                     smoothing_mm=opts["patch_smoothing_mm"],
                                                     min_units=opts["patch_min_units"])
            raw, _, _ = rasterize(values, positions, extent=None)
            maps[(layer, name)] = (raw, smooth, extent, patches)
            cache[f"{layer}/{name}"] = values.astype(np.float32)
            layer_section["contrasts"][name] = {
                "n_target": int(target.sum()), "n_reference": int(reference.sum()),
                "fraction_above_threshold": float(np.mean(values > opts["patch_threshold"])),
                "max": float(values.max()), "n_patches": len(patches),
                "patches": [p.to_dict() for p in patches[:10]],
            }
        cache[f"{layer}/positions"] = positions
        section["layers"][layer] = layer_section
    atomic_save_npz(run.subdir("cache/topography") / "selectivity.npz", **cache)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for layer, (curve, shuffled) in curves.items():
        line = ax.errorbar(curve.bin_centres, curve.mean_correlation, yerr=curve.sem, marker="o", ms=3,
                           label=f"{layer} (SI {curve.index:.3f})")
        ax.plot(shuffled.bin_centres, shuffled.mean_correlation, ls=":", color=line[0].get_color(),
                label=f"{layer} shuffled")
    ax.set(xlabel="cortical distance (mm)", ylabel="response correlation",
           title=f"smoothness ({opts['stimulus_set']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "topography_smoothness")
    plt.close(fig)

    fig, axes = plt.subplots(len(layers), len(masks), figsize=(3.2 * len(masks), 3.0 * len(layers)), squeeze=False)
    for i, layer in enumerate(layers):
        for j, name in enumerate(masks):
            raw, smooth, extent, patches = maps[(layer, name)]
            lim = float(np.nanmax(np.abs(raw))) or 1.0
            im = axes[i, j].imshow(raw, origin="lower", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim)
            if np.isfinite(smooth).any() and np.nanmax(smooth) > opts["patch_threshold"]:
                ys = np.linspace(extent[2], extent[3], smooth.shape[0])
                xs = np.linspace(extent[0], extent[1], smooth.shape[1])
                axes[i, j].contour(xs, ys, np.nan_to_num(smooth, nan=-np.inf), levels=[opts["patch_threshold"]],
                                   colors="k", linewidths=0.8)
            axes[i, j].set_title(f"{layer}: {name} ({len(patches)} patches)", fontsize=8)
            axes[i, j].set_xlabel("mm", fontsize=7)
            fig.colorbar(im, ax=axes[i, j], fraction=0.046, label=opts["selectivity"])
    fig.tight_layout()
    run.save_figure(fig, "topography_selectivity_maps")
    plt.close(fig)
    section["summary"] = {f"{layer}_smoothness_index": section["layers"][layer]["smoothness_index"]
                          for layer in layers}
    return section
