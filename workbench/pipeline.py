"""Run a study's stages in order into one run directory.

Stages are plain functions ``stage(run: RunDir, cfg: dict) -> dict`` that live with their sub-package; this module
only orders them, skips the ones whose results exist, and records config and provenance. It knows nothing of Hydra:
``run_pipeline(cfg_dict, RunDir(path))`` works from a notebook.
"""

from __future__ import annotations

import importlib
import time
import traceback
from typing import Any, Callable

from workbench.run import RunDir

# stage name -> "module:function"; imported lazily so that a study without attribution never imports captum/shap
STAGES: dict[str, str] = {
    "train": "workbench.training.stage:train_stage",
    "extract": "workbench.features.stage:extract_stage",
    "topography": "workbench.training.stage:topography_stage",
    "align": "workbench.alignment.stage:align_stage",
    "attribute": "workbench.attribution.stage:attribute_stage",
    "intervene": "workbench.intervention.stage:intervene_stage",
    "report": "workbench.report.stage:report_stage",
}
STAGE_ORDER = list(STAGES)

TOP_LEVEL_KEYS = {"study", "seed", "device", "stages", "results_root", "run_dir", "sweep_dir", "objective", "data",
                  "model", "trainer", "logger", "extract", "topography", "align", "attribute", "intervene", "report"}


class ConfigError(ValueError):
    pass


def stage_function(name: str) -> Callable[[RunDir, dict], dict]:
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages are (in pipeline order): {', '.join(STAGE_ORDER)}")
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


def validate_config(cfg: dict) -> list[str]:
    """Check the parts of a config every stage relies on; return the stages to run, in pipeline order."""
    unknown = sorted(set(cfg) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown}; valid keys are {sorted(TOP_LEVEL_KEYS)}")
    stages = cfg.get("stages") or []
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad} in `stages`; valid stages are {STAGE_ORDER}")
    if "model" not in cfg:
        raise ConfigError("the config has no `model` section; pick one with model=<name>")
    return [s for s in STAGE_ORDER if s in stages]


def model_for_run(run: RunDir, cfg: dict):
    """The run's trained model (checkpoints/model.pt) if the train stage wrote one, else the configured model,
    freshly initialised with the run's seed (an untrained baseline)."""
    from workbench.models import build_model, load_checkpoint
    from workbench.utils import seed_everything

    path = run.path / "checkpoints" / "model.pt"
    if path.exists():
        return load_checkpoint(path)
    seed_everything(int(cfg.get("seed", 0)))
    return build_model(cfg["model"])


def data_files_used(cfg: dict) -> list:
    """The registered data files present under the data root (their sha256 goes into provenance)."""
    from workbench.data.files import REGISTRY, data_root

    root = data_root()
    return [root / rel for rel in REGISTRY if (root / rel).exists()]


def run_pipeline(cfg: dict, run: RunDir, stages: list[str] | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` (default: ``cfg["stages"]``) into ``run``; a stage already in metrics.json is skipped."""
    from workbench.utils import get_device

    todo = validate_config({**cfg, "stages": stages if stages is not None else cfg.get("stages", [])})
    previous = run.config()
    if previous and _config_identity(previous) != _config_identity(cfg) and not force:
        raise ConfigError(
            f"{run.path} already holds a run with a different config; resuming it would mix results. Use a new "
            f"run_dir, or pass force=True to overwrite (differences in: "
            f"{sorted(k for k in set(previous) | set(cfg) if previous.get(k) != cfg.get(k))})")
    run.write_config(cfg)
    run.write_provenance(seed=cfg.get("seed"), device=str(get_device(cfg.get("device"))),
                         data_files=data_files_used(cfg))
    done = run.metrics()
    for name in todo:
        if name in done and not force:
            log(f"[workbench] {name}: done earlier, skipped")
            continue
        log(f"[workbench] {name} ...")
        start = time.perf_counter()
        try:
            section = stage_function(name)(run, cfg)
        except Exception:
            # keep what earlier stages wrote; the failed stage reruns next time
            log(f"[workbench] {name} failed after {time.perf_counter() - start:.1f} s; earlier stages are kept in "
                f"{run.path}. Fix the cause and rerun with run_dir={run.path} to resume.")
            if "report" in todo and name != "report":
                _partial_report(run, log)
            raise
        section = dict(section or {})
        section.setdefault("seconds", round(time.perf_counter() - start, 2))
        run.write_stage(name, section)
        log(f"[workbench] {name}: done in {section['seconds']:.1f} s")
    return run.metrics()


def _partial_report(run: RunDir, log: Callable[[str], None]) -> None:
    """Best effort: a report of what finished, so a failed run still shows its results."""
    try:
        from workbench.report import build_run_report

        log(f"[workbench] partial report: {build_run_report(run.path)}")
    except Exception as err:  # the stage's own error matters more than the report's
        log(f"[workbench] no partial report ({type(err).__name__}: {err})")


def _config_identity(cfg: dict) -> dict:
    # keys that may differ between a run and its resumption without changing what is computed
    return {k: v for k, v in cfg.items() if k not in {"run_dir", "sweep_dir", "stages", "device", "results_root"}}


def get_metric(metrics: dict, dotted: str):
    """``metrics["align"]["summary"]["best_hIT_score"]`` for ``"align.summary.best_hIT_score"``."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"metric {dotted!r} not found (no {part!r}); top-level sections: {sorted(metrics)}")
        node = node[part]
    return node
