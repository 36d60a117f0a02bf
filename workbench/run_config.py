"""Schemas of the top-level keys that are not a stage's section: ``seed``, and the keys of the ``trainer`` and
``data`` specs that the workbench's own configs set.

``trainer`` (Lightning ``Trainer`` kwargs) and ``data`` (a Hydra ``_target_`` spec of a datamodule) may hold keys of
their own (any Trainer argument, a user datamodule's options): only the keys named here are checked, the others go
through unchanged to Lightning or the datamodule, which check them. ``validate_run_keys(cfg)`` raises a
``ConfigError`` naming the key, the bad value and what is allowed, before a run directory is touched. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from workbench.config import ConfigError, bounded, parse

__all__ = ["TrainerKeys", "DataKeys", "RunKeys", "validate_run_keys"]


@dataclass
class TrainerKeys:
    """The Lightning Trainer arguments of configs/trainer/*.yaml, with the ranges a pipeline stage can use."""

    max_epochs: int = bounded(8, min=1)            # Lightning's -1 (train forever) never ends a train stage
    min_epochs: int | None = bounded(None, min=0)
    max_steps: int = bounded(-1, min=-1)           # -1: no step limit (max_epochs ends training)
    limit_train_batches: Any = 1.0                 # a fraction in [0, 1] or a whole number of batches
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0
    num_nodes: int = bounded(1, min=1)
    accumulate_grad_batches: int = bounded(1, min=1)
    check_val_every_n_epoch: int | None = bounded(1, min=1)
    log_every_n_steps: int = bounded(50, min=1)
    gradient_clip_val: float | None = bounded(None, min=0.0)
    deterministic: bool | Literal["warn"] | None = None
    enable_progress_bar: bool = True
    sync_batchnorm: bool = False
    accelerator: str = "auto"
    strategy: str = "auto"

    def __post_init__(self):
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            _check_batch_limit(key, getattr(self, key))


def _check_batch_limit(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} should be a fraction in [0, 1] or a whole number of batches, got {value!r}")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} = {value!r}: a float is a fraction of the batches, in [0, 1]; for a number of "
                          f"batches give an integer ({key}={int(value)})")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{key} must be >= 0 batches (or a fraction in [0, 1]), got {value!r}")


@dataclass
class DataKeys:
    """The options the built-in datamodules (configs/data/*.yaml) share; batch_size, val_fraction and seed get
    their ranges by convention (``workbench.config.CONVENTIONAL_BOUNDS``)."""

    batch_size: int = 128
    subset: int | None = bounded(None, min=1)       # null = every training image
    test_subset: int | None = bounded(None, min=1)
    num_workers: int = bounded(0, min=0)
    image_size: int = bounded(32, min=1)
    val_fraction: float = 0.1
    augment: bool = True
    seed: int = 0


@dataclass
class RunKeys:
    seed: int = 0                                    # bounds by convention: 0 .. 2**32 - 1


def _known(schema: type, given: Any, where: str) -> None:
    """Parse the keys of ``given`` that ``schema`` names (the others are someone else's to check)."""
    if given is None:
        return
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where} should be a mapping of keys to values, got {type(given).__name__} {given!r}")
    names = {f.name for f in dataclasses.fields(schema)}
    parse(schema, {k: v for k, v in given.items() if k in names}, where)


def validate_run_keys(cfg: Mapping[str, Any]) -> None:
    """Check ``seed`` and the known keys of ``trainer`` and ``data`` (types and ranges); ConfigError if wrong."""
    try:
        parse(RunKeys, {k: cfg[k] for k in ("seed",) if k in cfg}, "config")
    except ConfigError as err:
        raise ConfigError(str(err).replace("config.", "", 1)) from None
    _known(TrainerKeys, cfg.get("trainer"), "trainer")
    _known(DataKeys, cfg.get("data"), "data")
