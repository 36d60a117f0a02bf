"""Logging for a run: Python ``logging``, one console handler and one file handler (``<run>/workbench.log``).

Lightning, Hydra and Optuna each like to install their own handlers; ``setup_run_logging`` replaces them all with
the run's two, so every line is written once, to the terminal and to the run folder. Progress bars (tqdm) are drawn
only on a terminal: in a log file or a CI capture they are noise.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG = logging.getLogger("workbench")
LOG_FILE = "workbench.log"
# Loggers that add their own handler (printed twice then) or are chatty at INFO.
OWN_HANDLER_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
QUIET_LOGGERS = {"alembic": logging.WARNING, "optuna": logging.WARNING, "matplotlib": logging.WARNING,
                 "PIL": logging.WARNING, "numba": logging.WARNING}
_CONSOLE_FORMAT = "%(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_noisy_loggers() -> None:
    """Alembic's "setup plugin" lines (seven per Optuna trial) and the like: warnings only."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def setup_run_logging(run_dir: str | os.PathLike | None, level: int = logging.INFO) -> Path | None:
    """Root logger -> console (stdout) + ``<run_dir>/workbench.log``; every other handler removed. Returns the
    log file's path (None without a run folder). Called once per run (a sweep calls it for each job)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT))
    root.addHandler(console)
    path = None
    if run_dir is not None:
        path = Path(run_dir) / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(logging.Formatter(_FILE_FORMAT))
        root.addHandler(file)
    root.setLevel(level)
    try:  # `import lightning` adds a console handler to its logger unconditionally: import it now, then remove it
        import lightning  # noqa: F401
    except ImportError:
        pass
    for name in OWN_HANDLER_LOGGERS:
        own = logging.getLogger(name)
        own.handlers.clear()
        own.propagate = True
    quiet_noisy_loggers()
    return path


def progress_disabled(progress: bool = True) -> bool | None:
    """tqdm's ``disable``: True when off (``progress`` false or ``WORKBENCH_PROGRESS=0``), else None, which tqdm
    reads as "draw only when writing to a terminal"."""
    if not progress or os.environ.get("WORKBENCH_PROGRESS", "1") == "0":
        return True
    return None


def on_terminal() -> bool:
    return sys.stderr.isatty()
