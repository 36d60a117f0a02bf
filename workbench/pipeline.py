"""Run a study's stages in order into one run directory.

Stages are registered in ``workbench.stages.STAGES`` (``function(ctx) -> dict`` plus a config schema); this module
validates the config against every schema, orders the stages, skips the ones whose results exist, records config
and provenance, and builds each stage's ``StageContext``. It knows nothing of Hydra:
``run_pipeline(cfg_dict, RunDir(path))`` works from a notebook.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from typing import Any, Callable, Mapping

from workbench.config import ConfigError, parse, to_dict
from workbench.context import StageContext
from workbench.distributed import is_rank_zero
from workbench.registry import nearest
from workbench.run import RunDir, get_metric
from workbench.stages import STAGES, stage_order

__all__ = ["ConfigError", "run_pipeline", "run_stage", "check_resume", "validate_config", "resolve_config", "import_plugins",
           "get_metric"]

# Top-level keys that are not a stage's section. data/trainer/logger are Hydra `_target_` specs for the train stage.
BASE_KEYS = ("study", "seed", "device", "stages", "plugins", "results_root", "run_dir", "sweep_dir", "objective",
             "data", "model", "trainer", "logger", "benchmark", "force", "from_run")
# Keys that may differ between a run and its resumption without changing what is computed.
RESUME_FREE_KEYS = ("run_dir", "sweep_dir", "stages", "device", "results_root", "force")


def import_plugins(cfg: Mapping[str, Any]) -> list[str]:
    """Import the modules named by ``plugins: [...]``: they register models, data sets, metrics, methods, lesion
    selections or stages. An entry is a module name (importable from the current folder or PYTHONPATH) or the path
    of a .py file."""
    names = cfg.get("plugins") or []
    if isinstance(names, str):
        names = [names]
    for name in names:
        _import_plugin(str(name))
    return _load_entry_point_plugins() + list(names)


ENTRY_POINT_GROUP = "workbench.plugins"


def _load_entry_point_plugins() -> list[str]:
    """Installed packages' plugins: ``[project.entry-points."workbench.plugins"] my_pkg = "my_pkg.workbench"``."""
    from importlib.metadata import entry_points

    loaded = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # a broken plugin must say which package it came from
            raise ConfigError(f"the workbench plugin {entry.name!r} ({entry.value}, installed by "
                              f"{getattr(entry.dist, 'name', '?')}) failed to load: {err}") from err
        loaded.append(entry.value)
    return loaded


def _import_plugin(name: str) -> None:
    import os
    import sys
    from pathlib import Path

    if name.endswith(".py"):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"plugins: no file {path}; give a module name or the path of a .py file")
        module = importlib.util.module_from_spec(spec := importlib.util.spec_from_file_location(path.stem, path))
        sys.modules.setdefault(path.stem, module)
        if sys.modules[path.stem] is module:  # a second run in one process keeps the registered objects
            spec.loader.exec_module(module)
        return
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does: modules beside the user
        sys.path.append(os.getcwd())
    try:
        importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"plugins: cannot import {name!r} ({err}); run from the folder that holds it, put that "
                          f"folder on PYTHONPATH, install its package, or give the path of the .py file") from err


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with every registered stage's section parsed against its schema (defaults filled in).

    Raises ConfigError for an unknown top-level key, stage, section key or value, naming the nearest valid one."""
    import_plugins(cfg)
    sections = {STAGES.get(n).key: n for n in STAGES.names() if STAGES.get(n).config is not None}
    valid = set(BASE_KEYS) | set(sections)
    for key in cfg:
        if key not in valid:
            raise ConfigError(f"unknown top-level config key {key!r}{nearest(key, valid)}; valid keys are "
                              f"{sorted(valid)}")
    from workbench.run_config import validate_run_keys

    validate_run_keys(cfg)  # seed, trainer.*, data.*: types and ranges, before anything is written
    stages = cfg.get("stages") or []
    for name in stages:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r} in `stages`{nearest(name, STAGES.names())}; stages are (in "
                              f"pipeline order): {', '.join(stage_order())}")
    if not isinstance(cfg.get("model"), Mapping):
        raise ConfigError("the config has no `model` section; pick one with model=<name>")
    out = dict(cfg)
    if cfg.get("benchmark"):  # `workbench benchmark=<name>` (configs/benchmark/<name>.yaml): score that benchmark
        out["align"] = {**dict(cfg.get("align") or {}), "benchmarks": [dict(cfg["benchmark"])]}
    from workbench.models import validate_model_config

    out["model"] = validate_model_config(cfg["model"])
    for key, name in sections.items():
        schema = STAGES.get(name).resolve_config()
        out[key] = to_dict(parse(schema, out.get(key), key))
    return out


def validate_config(cfg: Mapping[str, Any]) -> list[str]:
    """Check ``cfg`` (see ``resolve_config``); return the stages to run, in pipeline order."""
    resolve_config(cfg)
    return [s for s in stage_order() if s in (cfg.get("stages") or [])]


def run_pipeline(cfg: Mapping[str, Any], run: RunDir, stages: list[str] | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` (default: ``cfg["stages"]``) into ``run``; a stage already in metrics.json is skipped.

    ``force`` (or the config key ``force: true``) reruns every stage, whatever the folder holds. ``from_run: <run
    folder>`` takes that run's trained model (checkpoint, model config and train section) instead of training.
    The run folder is locked while this runs: a second process on it gets RunLockedError."""
    from workbench.utils import get_device

    force = force or bool(cfg.get("force"))
    if not is_rank_zero():  # an extra DDP rank: it trains with rank 0 and leaves the run folder to it
        return _run_as_extra_rank(cfg, run, stages, force, log)
    cfg = _with_source_model(cfg, log)
    cfg = resolve_config({**cfg, "stages": stages if stages is not None else cfg.get("stages", [])})
    todo = [s for s in stage_order() if s in cfg["stages"]]
    if not todo:
        raise ConfigError("`stages` is empty, so there is nothing to run; name the stages to run, e.g. "
                          "stages=[train,extract,align,report], or leave `stages` out to run the study's own")
    with run.lock():
        check_resumable(run, cfg, force)
        removed = run.remove_temporary_files()
        if removed:
            log(f"[workbench] removed {len(removed)} temporary file(s) an interrupted write left behind")
        run.clear_failure()  # this call's outcome replaces the last one's (a stage that fails again writes it again)
        if cfg.get("from_run") and "train" in todo and (force or not run.has_stage("train")):
            _adopt_training(RunDir(cfg["from_run"], create=False), run, log)
        run.write_config(cfg)
        run.write_provenance(seed=cfg.get("seed"), device=str(get_device(cfg.get("device"))),
                             data_files=data_files_used())
        _run_stages(cfg, run, todo, force, log)
    return run.metrics()


def _run_stages(cfg: Mapping[str, Any], run: RunDir, todo: list[str], force: bool,
                log: Callable[[str], None]) -> None:
    """Each stage of ``todo`` not done yet. A changed or unreadable artefact is discarded and the stage that wrote
    it reruns (with those after it); the report reruns whenever a stage before it ran in this call."""
    from workbench.run import ArtefactError

    done = set() if force else set(run.metrics())
    ran: list[str] = []
    discarded: set = set()
    i = 0
    while i < len(todo):
        name = todo[i]
        if name in done and not (name == "report" and ran):
            log(f"[workbench] {name}: done earlier, skipped")
            i += 1
            continue
        try:
            _run_one(name, cfg, run, todo, log)
        except ArtefactError as err:
            if err.stage is None or err.path in discarded:
                _record_failure(name, err, run, todo, log)
                raise
            log(f"[workbench] {err}")
            discarded.add(err.path)
            run.discard_artefact(err.path)
            run.drop_stage(err.stage)
            done.discard(err.stage)
            if err.stage not in todo:
                todo = [s for s in stage_order() if s in set(todo) | {err.stage}]
            i = todo.index(err.stage)
            continue
        ran.append(name)
        done.add(name)
        i += 1


def _run_one(name: str, cfg: Mapping[str, Any], run: RunDir, todo: list[str], log: Callable[[str], None]) -> None:
    from workbench.run import ArtefactError

    log(f"[workbench] {name} ...")
    start = time.perf_counter()
    try:
        section = run_stage(name, cfg, run, log)
    except ArtefactError:
        raise  # handled by the caller: the stage that wrote the artefact reruns
    except (Exception, KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and err.code in (0, None):
            raise  # a clean exit (an extra DDP rank leaving after training), not a failure
        log(f"[workbench] {name} {'was interrupted' if not isinstance(err, Exception) else 'failed'} after "
            f"{time.perf_counter() - start:.1f} s")
        _record_failure(name, err, run, todo, log)
        raise
    section.setdefault("seconds", round(time.perf_counter() - start, 2))
    run.write_stage(name, section)
    log(f"[workbench] {name}: done in {section['seconds']:.1f} s")


def _record_failure(name: str, err: BaseException, run: RunDir, todo: list[str], log: Callable[[str], None]) -> None:
    """Keep what earlier stages wrote, say how to resume, and write the report of what finished."""
    log(f"[workbench] earlier stages are kept in {run.path}. Fix the cause (if any) and resume with: "
        f"workbench resume {run.path}")
    run.write_failure(name, err, [s for s in todo if s not in run.metrics()])
    if "report" in todo and name != "report":
        _partial_report(run, log)


def _run_as_extra_rank(cfg: Mapping[str, Any], run: RunDir, stages: list[str] | None, force: bool,
                       log: Callable[[str], None]) -> dict[str, Any]:
    """A DDP rank other than 0 runs the train stage exactly when rank 0 does (same config, same run folder) and
    writes nothing: rank 0 saves the model, runs the later stages and writes the run once. When extraction is split
    over processes it runs the extract stage with rank 0 too, writing only its shards. Returns {}."""
    cfg = _with_source_model(cfg, lambda message: None)  # from_run: the architecture rank 0 extracts with
    cfg = resolve_config({**cfg, "stages": stages if stages is not None else cfg.get("stages", [])})
    check_resumable(run, cfg, force)  # rank 0 refuses this call too: do not wait for it in a process group
    if "train" in cfg["stages"] and not cfg.get("from_run") and (force or not run.has_stage("train")):
        run_stage("train", cfg, run, log)
    # extraction over several processes (extract.devices x num_nodes > 1): this rank extracts its shards with rank 0
    extract = cfg.get("extract") or {}
    if "extract" in cfg["stages"] and extract.get("devices", 1) * extract.get("num_nodes", 1) > 1 and \
            (force or not run.has_stage("extract")):
        run_stage("extract", cfg, run, log)
    return {}


def run_stage(name: str, cfg: Mapping[str, Any], run: RunDir, log: Callable[[str], None] = print) -> dict:
    """One stage on a resolved config: build its context, call it, add the references it cited."""
    ctx = StageContext.create(cfg, run, name, log)
    ctx.cite(STAGES, name)  # a plugin stage's own citation
    run.writing_stage = name  # recorded with every artefact it writes (a changed artefact reruns its writer)
    try:
        section = dict(STAGES.get(name).resolve_function()(ctx) or {})
    finally:
        run.writing_stage = None
    references = list(section.get("references") or [])
    section["references"] = references + [r for r in ctx.references if r not in references]
    if not section["references"]:
        del section["references"]
    return section


def check_resume(cfg: Mapping[str, Any], run: RunDir) -> None:
    """Raise ConfigError (before anything is written) when ``run`` holds a run whose config differs from ``cfg``
    (unresolved, as given to ``run_pipeline``) in what it computes."""
    if run.config():
        force = bool(cfg.get("force"))
        check_resumable(run, resolve_config(_with_source_model(cfg, lambda message: None)), force)


def check_resumable(run: RunDir, cfg: Mapping[str, Any], force: bool = False) -> None:
    """Raise ConfigError when ``run`` holds a run made with a config that differs from the resolved ``cfg``."""
    previous = run.config()
    if not previous or force:
        return
    differences = config_differences(_config_identity(_with_current_defaults(previous)), _config_identity(cfg))
    if differences:
        shown = "; ".join(differences[:12]) + (f"; and {len(differences) - 12} more" if len(differences) > 12 else "")
        raise ConfigError(
            f"{run.path} already holds a run with a different config; resuming it would mix results. Differences "
            f"(that run -> this call): {shown}. Use a new run_dir, or add force=true to rerun every stage in this "
            f"folder with the new config. To reuse that run's trained model in another study, start a new run with "
            f"from_run={run.path}.")


def _with_current_defaults(previous: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored config with the section keys added since it was written at their defaults (a run made before a
    setting existed resumes where that setting's default is used now); as stored when it no longer validates."""
    try:
        return resolve_config(previous)
    except ConfigError:
        return previous


def _config_identity(cfg: Mapping[str, Any]) -> dict:
    return {k: v for k, v in cfg.items() if k not in RESUME_FREE_KEYS}


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key.path: old -> new"`` for every leaf that differs (a key missing on one side shows as <unset>)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _with_source_model(cfg: Mapping[str, Any], log: Callable[[str], None]) -> Mapping[str, Any]:
    """With ``from_run``, the model section is that run's (its checkpoint is that model, whatever is typed now)."""
    if not cfg.get("from_run"):
        return cfg
    source = RunDir(cfg["from_run"], create=False)
    if not source.has_checkpoint():
        raise ConfigError(f"from_run: {source.path} has no trained model ({source.checkpoint_path} is missing); "
                          f"finish that run's train stage first (workbench resume {source.path})")
    model = source.config().get("model")
    if model and model != cfg.get("model"):
        log(f"[workbench] from_run: using the model config of {source.path} (its checkpoint is that model)")
        return {**cfg, "model": model}
    return cfg


def _adopt_training(source: RunDir, run: RunDir, log: Callable[[str], None]) -> None:
    """Copy ``source``'s checkpoint into ``run`` and record its train section, marked with where it came from."""
    from workbench.utils import atomic_write_bytes

    run.record_artefact(atomic_write_bytes(run.checkpoint_path, source.verify_artefact(source.checkpoint_path)
                                           .read_bytes()))
    for figure in sorted(source.figures.glob("train_*")):  # the training curves belong to the report too
        atomic_write_bytes(run.figures / figure.name, figure.read_bytes())
    section = dict(source.metrics().get("train") or {})
    section["from_run"] = str(source.path.resolve())
    run.write_stage("train", section)
    log(f"[workbench] train: model taken from {source.path}")


def data_files_used() -> list:
    """The registered data files present under the data root (their sha256 goes into provenance)."""
    from workbench.data.files import REGISTRY, data_root

    root = data_root()
    return [root / rel for rel in REGISTRY if (root / rel).exists()]


def _partial_report(run: RunDir, log: Callable[[str], None]) -> None:
    """Best effort: a report of what finished, so a failed run still shows its results."""
    try:
        from workbench.report import build_run_report

        log(f"[workbench] partial report: {build_run_report(run.path)}")
    except Exception as err:  # the stage's own error matters more than the report's
        log(f"[workbench] no partial report ({type(err).__name__}: {err})")
