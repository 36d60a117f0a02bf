"""Finding run directories: what is a run, what is a sweep, and what lies under a folder that is neither."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workbench.run import NotARunError

RUN_MARKERS = ("config.yaml", "metrics.json")
RUN_CONTENT_HELP = (
    "A run directory is what one `workbench` run writes: config.yaml (resolved config) and metrics.json (one section "
    "per stage), usually with provenance.json and figures/. A sweep directory (Hydra multirun) holds run directories "
    "one or two levels below it, often with multirun.yaml at the top."
)
# Folders that never hold runs: Hydra's own bookkeeping (.hydra/config.yaml is not a run), caches, weights.
_SKIP_DIRS = {".hydra", "checkpoints", "cache", "figures", "__pycache__", ".git", ".venv", "lightning_logs",
              "node_modules"}


def is_run_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and path.name not in _SKIP_DIRS and any((path / m).is_file() for m in RUN_MARKERS)


def find_run_dirs(root: str | os.PathLike, max_depth: int = 2) -> list[Path]:
    """Run directories strictly below `root`, at most `max_depth` levels down, sorted; a run's own sub-folders are
    not searched (a run does not contain runs)."""
    root = Path(root)
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if depth > max_depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
        except (PermissionError, FileNotFoundError):
            return
        for child in children:
            if is_run_dir(child):
                found.append(child)
            else:
                walk(child, depth + 1)

    walk(root, 1)
    return found


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """A Hydra multirun folder (multirun.yaml at the top, runs up to two levels down), or a folder whose direct
    children are runs (e.g. results/<study>/ with several timestamped runs). A folder with runs only deeper down
    (results/) is neither: which runs to compare is the user's choice."""
    path = Path(path)
    if not path.is_dir() or is_run_dir(path):
        return False
    if (path / "multirun.yaml").is_file():
        return bool(find_run_dirs(path, max_depth=2))
    return bool(find_run_dirs(path, max_depth=1))


def not_a_run_message(path: Path, expected: str = "a run directory or a sweep directory") -> str:
    if not path.exists():
        return f"{path} does not exist; give {expected}. {RUN_CONTENT_HELP}"
    if not path.is_dir():
        return f"{path} is a file, not a directory; give {expected}. {RUN_CONTENT_HELP}"
    deeper = find_run_dirs(path, max_depth=5)
    if deeper:
        shown = "\n  ".join(str(p) for p in deeper[:30])
        more = f"\n  ... and {len(deeper) - 30} more" if len(deeper) > 30 else ""
        return (f"{path} is not {expected}. {RUN_CONTENT_HELP}\nRun directories found under it:\n  {shown}{more}\n"
                f"Pass one of these (or the sweep folder that holds them).")
    return (f"{path} is not {expected}, and no run directory was found under it. {RUN_CONTENT_HELP} "
            f"Run a study first, e.g. `workbench experiment=topographic_alignment`.")


def require_run_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not is_run_dir(path):
        raise NotARunError(not_a_run_message(path, "a run directory"))
    return path


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the stage that wrote it was interrupted or the file "
                         f"was edited by hand: fix it or delete it and rerun") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object (one section per stage), got {type(data).__name__}")
    from workbench.utils import decode_nonfinite

    data = decode_nonfinite(data)  # metrics.json: the values written as null because they are NaN or infinite
    return data


def read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        return None
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err})") from None
