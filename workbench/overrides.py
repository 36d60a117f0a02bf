"""Command-line overrides of a run, kept in the run so that it can be resumed by its folder alone.

A run stores the overrides it was started with in ``<run>/overrides.yaml``. ``workbench run_dir=<run>`` (or
``workbench resume <run>``) puts them back in front of whatever the user types now, so ``preset=tiny`` or
``experiment=v4_encoding`` need not be typed again; an override typed now replaces the stored one with the same key.
This module is plain list handling, no Hydra.
"""

from __future__ import annotations

from pathlib import Path

# Keys that say where a run lives or how this one call treats it, never what it computes: not carried over.
LOCATION_KEYS = ("run_dir", "sweep_dir", "force")
OVERRIDES_FILE = "overrides.yaml"
# Hydra rewrites its own copy on every call into the folder; read it only for runs made before overrides.yaml existed.
HYDRA_OVERRIDES_FILE = ".hydra/overrides.yaml"


def override_key(override: str) -> str:
    """``model.topography.weight`` for ``model.topography.weight=2``, ``model`` for ``~model`` or ``+model={...}``."""
    return override.lstrip("~+").split("=", 1)[0].strip()


def merge_overrides(stored: list[str], given: list[str]) -> list[str]:
    """``stored`` without the ones ``given`` replaces (same key) and without location keys, then ``given``."""
    replaced = {override_key(o) for o in given}
    kept = [o for o in stored if override_key(o) not in replaced and override_key(o) not in LOCATION_KEYS]
    return kept + list(given)


def read_overrides(run_dir: str | Path) -> list[str] | None:
    """The overrides a run was started with, or None when the folder holds no record of them."""
    import yaml

    for name in (OVERRIDES_FILE, HYDRA_OVERRIDES_FILE):
        path = Path(run_dir) / name
        if path.is_file():
            return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    return None


def write_overrides(run_dir: str | Path, overrides: list[str]) -> None:
    import yaml

    from workbench.utils import atomic_write_text

    atomic_write_text(Path(run_dir) / OVERRIDES_FILE, yaml.safe_dump([str(o) for o in overrides]))


def _value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if "=" in a and override_key(a) == key and not a.startswith("~")]
    return found[-1] if found else None


def expand_resume(args: list[str]) -> tuple[list[str], list[str]]:
    """The command-line arguments with a resumed run's stored overrides put back, and those stored overrides.

    ``resume <dir> [overrides]`` means ``run_dir=<dir> [overrides]``. Multirun (``-m``) arguments are left alone: a
    sweep is resumed by repeating its command with ``sweep_dir=``."""
    if args[:1] == ["resume"]:
        if len(args) < 2 or "=" in args[1]:
            raise SystemExit("usage: workbench resume <run folder> [overrides]  (the folder a run printed as "
                             "`results:`)")
        if not Path(args[1]).is_dir():
            raise SystemExit(f"workbench resume: no folder {args[1]} (check the path: it is the folder a run "
                             f"printed as `results:`)")
        if not (Path(args[1]) / "config.yaml").is_file() and read_overrides(args[1]) is None:
            raise SystemExit(f"workbench resume: {args[1]} holds no workbench run (no config.yaml); to start a new "
                             f"run there, use run_dir={args[1]}")
        args = [f"run_dir={args[1]}"] + args[2:]
    if "-m" in args or "--multirun" in args or any(a.startswith("-") for a in args):
        return args, []
    run_dir = _value(args, "run_dir")
    stored = read_overrides(run_dir) if run_dir else None
    if not stored:
        return args, []
    return merge_overrides(stored, args), [o for o in stored if override_key(o) not in LOCATION_KEYS]


# Keys that may change between calls into one sweep folder without making it another sweep.
SWEEP_FREE_KEYS = ("stages", "device", "force", "sweep_dir")


def task_overrides(args: list[str]) -> list[str]:
    """The overrides of the config itself among command-line arguments (not flags, not ``hydra.*``)."""
    return [a for a in args if "=" in a and not a.startswith("-") and not override_key(a).startswith("hydra")]


def sweep_conflicts(sweep_dir: str | Path, args: list[str]) -> list[str]:
    """How ``args`` differ from the sweep already in ``sweep_dir`` (its multirun.yaml): ``key: old -> new``."""
    import yaml

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    stored = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("overrides", {}).get("task") or []
    old = {override_key(o): o for o in stored if override_key(o) not in SWEEP_FREE_KEYS}
    new = {override_key(o): o for o in task_overrides(args) if override_key(o) not in SWEEP_FREE_KEYS}
    return [f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
