"""Hydra glue for sweeps and clusters: sweep folder names and rank-0-only Hydra files (the SLURM launcher is in
``workbench.slurm``).

- ``${workbench.sweep_subdir:...}`` (``hydra.sweep.subdir``): a job's folder is named by its overrides without the
  bookkeeping ones (``hydra.job.config.override_dirname.exclude_keys``: where results go, how a call treats a folder)
  and with a path-valued override shortened to the path's last part, so ``results_root=/some/path`` or
  ``from_run=results/x/2026-11-25_10-00-00`` never nest folders (``sweep_job_dirname``).
- ``${workbench.rank_zero:.hydra}`` (``hydra.output_subdir``): Hydra's own copy of the config is written by global
  rank 0 only; under DDP every rank runs the job in the same folder (``workbench.distributed``).

Importing this module registers the resolvers; ``workbench.cli`` imports it, and the Hydra callback
``RegisterResolvers`` (configs/hydra/default.yaml) makes every job process (submitit, joblib) import it too.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from workbench.distributed import is_rank_zero

__all__ = ["sweep_job_dirname", "register_resolvers", "RegisterResolvers"]


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value)


def _short_value(value: Any) -> str | None:
    """A path's last part (``a/b/run_3`` -> ``run_3``), also inside a list; None when nothing is path-valued."""
    if _looks_like_path(value):
        return PurePath(value.rstrip("/\\").replace("\\", "/")).name or value
    if isinstance(value, (list, tuple)) and any(_looks_like_path(v) for v in value):
        return "[" + ",".join(_short_value(v) if _looks_like_path(v) else str(v) for v in value) + "]"
    return None


def sweep_job_dirname(overrides: Sequence[str], exclude_keys: Sequence[str] = (), kv_sep: str = "=",
                      item_sep: str = ",") -> str:
    """A sweep job's folder name from its overrides, like Hydra's ``override_dirname`` (sorted ``key=value`` joined by
    ``item_sep``, keys in ``exclude_keys`` left out) except that path-valued values keep only their last part.
    Empty when no override is left (the resolver then names the folder by the job number)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = []
    for override in OverridesParser.create().parse_overrides([str(o) for o in overrides]):
        if override.get_key_element() in exclude_keys or override.key_or_group in exclude_keys:
            continue
        short = None if override.is_delete() else _short_value(override.value())
        line = override.input_line if short is None else f"{override.get_key_element()}={short}"
        items.append(line.replace("=", kv_sep, 1) if kv_sep != "=" else line)
    return item_sep.join(sorted(items))


def _sweep_subdir_resolver(overrides: Any, dirname_config: Any, job_number: Any = None) -> str:
    """The job's folder name; ``job<N>`` when no override is left, never the sweep folder itself (a job there would
    write its config.yaml into the sweep root, which then reads as one run)."""
    options = OmegaConf.to_container(dirname_config, resolve=True) if OmegaConf.is_config(dirname_config) else {}
    name = sweep_job_dirname(list(overrides), options.get("exclude_keys") or (), options.get("kv_sep", "="),
                             options.get("item_sep", ","))
    return name or (f"job{job_number}" if job_number is not None else name)


def _rank_zero_resolver(value: Any) -> Any:
    return value if is_rank_zero() else None


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("workbench.sweep_subdir", _sweep_subdir_resolver, replace=True)
    OmegaConf.register_new_resolver("workbench.rank_zero", _rank_zero_resolver, replace=True)


register_resolvers()


class RegisterResolvers(Callback):
    """A Hydra callback that does nothing itself: Hydra pickles it into every job process (submitit, joblib), which
    imports this module there and so registers the resolvers before the job's folder name is resolved."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        register_resolvers()
