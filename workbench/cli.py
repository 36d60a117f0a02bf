"""The ``workbench`` command: a thin Hydra shell around ``workbench.pipeline.run_pipeline``.

    workbench                                          # the default study (experiment=topographic_alignment)
    workbench experiment=v4_encoding model=resnet18_32
    workbench -m experiment=spatial_weight_sweep model.topography.weight=0,0.5,2 seed=0,1
    workbench run_dir=results/topographic_alignment/2026-11-25_10-00-00   # resume a run (its overrides re-applied)
    workbench resume results/topographic_alignment/2026-11-25_10-00-00    # the same
    workbench layers model=torchvision model.name=alexnet   # every layer of a model, with its output shape
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import workbench.scaleout  # noqa: F401  (registers the resolvers configs/hydra/default.yaml names)
from workbench.config import config_dir

CONFIG_DIR = config_dir()
# Set by main() for a resumed run: Hydra writes nothing into the run (hydra.output_subdir=null) until the pipeline
# has accepted the resume; then _app writes .hydra/ itself.
_DEFERRED_HYDRA_FILES = False


def _check_config_dir() -> None:
    if not (CONFIG_DIR / "config.yaml").exists():
        sys.exit(f"workbench: no configs at {CONFIG_DIR}. Install the project editable (pip install -e .) from its "
                 f"checkout, or point WORKBENCH_CONFIGS at its configs/ folder.")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from workbench.config import ConfigError
    from workbench.distributed import is_rank_zero
    from workbench.logs import LOG, setup_run_logging
    from workbench.overrides import OVERRIDES_FILE, write_overrides
    from workbench.pipeline import check_resume, get_metric, run_pipeline
    from workbench.run import RunDir, RunLockedError

    run = RunDir(HydraConfig.get().runtime.output_dir)
    rank_zero = is_rank_zero()  # under DDP only global rank 0 writes the run folder (workbench.distributed)
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    overrides = list(HydraConfig.get().overrides.task)
    try:
        # rank 0 holds the run's lock; an extra rank trains with it and writes nothing (run_pipeline)
        with run.lock() if rank_zero else contextlib.nullcontext():
            check_resume(plain, run)  # a refused resume writes nothing into the run
            setup_run_logging(run.path if rank_zero else None)  # console + <run>/workbench.log, each line once
            if rank_zero and _DEFERRED_HYDRA_FILES:
                _write_hydra_files(run.path, cfg, overrides)
            if rank_zero and not (run.path / OVERRIDES_FILE).exists():  # a first run: keep its overrides
                write_overrides(run.path, overrides)
            metrics = run_pipeline(plain, run, log=LOG.info)
    except (ConfigError, RunLockedError) as err:  # a config mistake needs its message, not a traceback
        # nothing ran: do not keep the mistake for a resume to re-apply
        if rank_zero and not (run.path / "config.yaml").exists():
            (run.path / OVERRIDES_FILE).unlink(missing_ok=True)
        kind = "config error" if isinstance(err, ConfigError) else "error"
        print(f"workbench: {kind}: {err}", file=sys.stderr)
        sys.exit(2)
    if not rank_zero:  # it trained with rank 0; the launcher takes None as this task's result
        return None
    write_overrides(run.path, overrides)  # a resumed run's overrides now include what this call changed
    LOG.info(f"[workbench] results: {run.path.resolve()}")
    if (run.path / "report.html").exists():
        LOG.info(f"[workbench] report:  {(run.path / 'report.html').resolve()}")
    # sweepers (Optuna) maximise the value returned here
    try:
        value = get_metric(metrics, plain["objective"])
        return float(value) if isinstance(value, (int, float)) else None
    except KeyError:
        return None


def _write_hydra_files(run: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """What Hydra writes into <run>/.hydra/ (config, hydra, overrides), written once the resume was accepted."""
    import yaml
    from hydra.core.hydra_config import HydraConfig

    from workbench.utils import atomic_write_text

    folder = run / ".hydra"
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": HydraConfig.get()}))
    atomic_write_text(folder / "overrides.yaml", yaml.safe_dump(overrides))


def _resumed_run(args: list[str]) -> Path | None:
    from workbench.overrides import _value

    run_dir = _value(args, "run_dir")
    return Path(run_dir) if run_dir and (Path(run_dir) / "config.yaml").is_file() else None


def _sweep_guard(args: list[str]):
    """A sweep into an existing ``sweep_dir=`` must repeat that sweep (it then resumes it) and holds the folder's
    lock; a different sweep there would overwrite its multirun.yaml."""
    from workbench.overrides import _value, sweep_conflicts
    from workbench.run import folder_lock

    sweep = _value(args, "sweep_dir")
    if not sweep:
        return contextlib.nullcontext()
    conflicts = sweep_conflicts(sweep, args)
    if conflicts:
        sys.exit(f"workbench: {sweep} holds another sweep ({'; '.join(conflicts)}). Repeat that sweep's command to "
                 f"resume it, or give this sweep a new sweep_dir.")
    return folder_lock(sweep, "sweep")


def layers_command(overrides: list[str]) -> None:
    """``workbench layers <overrides>``: every ``named_modules`` path of the configured model with its output shape
    for the model's input size (``*`` marks the default layers, extracted when ``extract.layers`` is null)."""
    from hydra import compose, initialize_config_dir

    from workbench.config import ConfigError
    from workbench.models import (build_model, infer_image_size, layer_names, layer_unit_shapes,
                                  valid_layer_names, validate_model_config)
    from workbench.pipeline import import_plugins

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=overrides), resolve=False)
    try:
        import_plugins(cfg)
        model_cfg = validate_model_config(cfg["model"])
        model = build_model(model_cfg).eval()
    except ConfigError as err:
        sys.exit(f"workbench: config error: {err}")
    size = infer_image_size(model_cfg)
    shapes = layer_unit_shapes(model, size, valid_layer_names(model))
    defaults = set(layer_names(model))
    print(f"{model_cfg.get('source') or 'workbench'}:{model_cfg['name']} at {size} px "
          f"({len(shapes)} layers; * = default, extracted when extract.layers is null)")
    for name in valid_layer_names(model):
        shape = "x".join(map(str, shapes.get(name, ()))) or "?"
        print(f"{'*' if name in defaults else ' '} {name:<48} {type(model.get_submodule(name)).__name__:<24} {shape}")


def main() -> None:
    from workbench.logs import quiet_noisy_loggers
    from workbench.overrides import expand_resume

    _check_config_dir()
    if len(sys.argv) > 1 and sys.argv[1] == "layers":
        layers_command(sys.argv[2:])
        return
    quiet_noisy_loggers()  # before Hydra starts a sweeper (Optuna's storage logs through alembic)
    args, stored = expand_resume(sys.argv[1:])
    if stored:
        print(f"[workbench] resuming with the run's stored overrides: {' '.join(stored)}")
    sys.argv = sys.argv[:1] + args
    from workbench.run import RunLockedError

    try:
        if "-m" in args or "--multirun" in args:
            with _sweep_guard(args):
                _app()
            return
        if _resumed_run(args):
            global _DEFERRED_HYDRA_FILES
            _DEFERRED_HYDRA_FILES = True
            sys.argv.append("hydra.output_subdir=null")
        _app()
    except RunLockedError as err:
        sys.exit(f"workbench: {err}")


if __name__ == "__main__":
    main()
