"""``hydra/launcher=slurm`` and ``slurm_cpu`` (Hydra's submitit launcher) on clusters without accounting.

There ``sacct`` answers every status poll with "Slurm accounting storage is disabled": submitit logs a warning per
poll, and a job that dies without writing its result is never seen to end. The Hydra callback ``SqueueJobStates``
(configs/hydra/default.yaml) has submitit ask ``squeue`` instead for the length of the sweep. submitit is imported
only when a sweep uses it (the ``sweeps`` extra).
"""

from __future__ import annotations

import contextlib
import getpass
import subprocess
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

__all__ = ["SqueueJobStates", "slurm_accounting_enabled"]


def slurm_accounting_enabled() -> bool:
    """False where ``scontrol show config`` says ``AccountingStorageType = accounting_storage/none`` (then ``sacct``
    answers every call with an error); True otherwise, also when scontrol cannot be asked."""
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return True
    for line in shown.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() != "accounting_storage/none"
    return True


def _squeue_watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueInfoWatcher(SlurmInfoWatcher):
        """Job states from ``squeue`` (the controller's memory of the user's jobs) instead of ``sacct``. A job that
        squeue no longer lists has ended long ago; it counts as done, so a missing result is reported."""

        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            return ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
                    f"--user={getpass.getuser()}"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            listed = super().read_info("JobID|State|NodeList\n" + text)
            gone = {job: {"JobID": job, "State": "COMPLETED", "NodeList": ""}
                    for job in self._registered - self._finished if job not in listed}
            return {**gone, **listed}

    return SqueueInfoWatcher


@contextlib.contextmanager
def _squeue_states() -> Iterator[None]:
    from submitit.slurm.slurm import SlurmJob

    previous = SlurmJob.watcher
    SlurmJob.watcher = _squeue_watcher_class()(delay_s=600)
    try:
        yield
    finally:
        SlurmJob.watcher = previous


class SqueueJobStates(Callback):
    """A Hydra callback (configs/hydra/default.yaml): for a sweep through the submitit SLURM launcher on a cluster
    without accounting, submitit's job states come from ``squeue`` for the length of the sweep."""

    def __init__(self) -> None:
        self._states: contextlib.ExitStack | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if "submitit" in target and "Slurm" in target and not slurm_accounting_enabled():
            self._states = contextlib.ExitStack()
            self._states.enter_context(_squeue_states())

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self._states is not None:
            self._states.close()
            self._states = None

    def __getstate__(self) -> dict:  # pickled into each job, where it does nothing
        return {"_states": None}
