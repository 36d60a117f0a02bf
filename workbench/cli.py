"""The ``workbench`` command: a thin Hydra shell around ``workbench.pipeline.run_pipeline``.

    workbench                                          # the default study (experiment=topographic_alignment)
    workbench experiment=v4_encoding model=resnet18_32
    workbench -m experiment=spatial_weight_sweep model.topography.weight=0,0.5,2 seed=0,1
    workbench run_dir=results/topographic_alignment/2026-11-25_10-00-00   # resume a run (its overrides re-applied)
    workbench resume results/topographic_alignment/2026-11-25_10-00-00    # the same
    workbench layers model=torchvision model.name=alexnet   # every layer of a model, with its output shape
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import workbench.scaleout  # noqa: F401  (registers the resolvers configs/hydra/default.yaml names)
from workbench.config import config_dir

CONFIG_DIR = config_dir()


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
    from workbench.pipeline import get_metric, run_pipeline
    from workbench.run import RunDir

    run = RunDir(HydraConfig.get().runtime.output_dir)
    rank_zero = is_rank_zero()  # under DDP only global rank 0 writes the run folder (workbench.distributed)
    setup_run_logging(run.path if rank_zero else None)  # console + <run>/workbench.log, each line once
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    overrides = list(HydraConfig.get().overrides.task)
    # a first run: keep its overrides, so its folder alone resumes it
    if rank_zero and not (run.path / OVERRIDES_FILE).exists():
        write_overrides(run.path, overrides)
    try:
        metrics = run_pipeline(plain, run, log=LOG.info)
    except ConfigError as err:  # a config mistake needs its message, not a traceback
        # nothing ran: do not keep the mistake for a resume to re-apply
        if rank_zero and not (run.path / "config.yaml").exists():
            (run.path / OVERRIDES_FILE).unlink(missing_ok=True)
        print(f"workbench: config error: {err}", file=sys.stderr)
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
    _app()


if __name__ == "__main__":
    main()
