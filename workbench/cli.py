"""The ``workbench`` command: a thin Hydra shell around ``workbench.pipeline.run_pipeline``.

    workbench                                          # the default study (experiment=topographic_alignment)
    workbench experiment=v4_encoding model=resnet18_32
    workbench -m experiment=spatial_weight_sweep model.topography.weight=0,0.5,2 seed=0,1
    workbench run_dir=results/topographic_alignment/2026-11-25_10-00-00   # resume a run (its overrides re-applied)
    workbench resume results/topographic_alignment/2026-11-25_10-00-00    # the same
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(os.environ.get("WORKBENCH_CONFIGS", PROJECT_ROOT / "configs"))


def _check_config_dir() -> None:
    if not (CONFIG_DIR / "config.yaml").exists():
        sys.exit(f"workbench: no configs at {CONFIG_DIR}. Install the project editable (pip install -e .) from its "
                 f"checkout, or point WORKBENCH_CONFIGS at its configs/ folder.")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from workbench.config import ConfigError
    from workbench.logs import LOG, setup_run_logging
    from workbench.overrides import OVERRIDES_FILE, write_overrides
    from workbench.pipeline import get_metric, run_pipeline
    from workbench.run import RunDir

    run = RunDir(HydraConfig.get().runtime.output_dir)
    setup_run_logging(run.path)  # console + <run>/workbench.log, each line once
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    overrides = list(HydraConfig.get().overrides.task)
    if not (run.path / OVERRIDES_FILE).exists():  # a first run: keep its overrides, so its folder alone resumes it
        write_overrides(run.path, overrides)
    try:
        metrics = run_pipeline(plain, run, log=LOG.info)
    except ConfigError as err:  # a config mistake needs its message, not a traceback
        if not (run.path / "config.yaml").exists():  # nothing ran: do not keep the mistake for a resume to re-apply
            (run.path / OVERRIDES_FILE).unlink(missing_ok=True)
        print(f"workbench: config error: {err}", file=sys.stderr)
        sys.exit(2)
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


def main() -> None:
    from workbench.logs import quiet_noisy_loggers
    from workbench.overrides import expand_resume

    _check_config_dir()
    quiet_noisy_loggers()  # before Hydra starts a sweeper (Optuna's storage logs through alembic)
    args, stored = expand_resume(sys.argv[1:])
    if stored:
        print(f"[workbench] resuming with the run's stored overrides: {' '.join(stored)}")
    sys.argv = sys.argv[:1] + args
    _app()


if __name__ == "__main__":
    main()
