"""Which process of a multi-process (DDP) run this is, read from the launcher's environment.

Under DDP every rank runs the workbench: Lightning's own launcher re-runs the command with ``LOCAL_RANK``/``NODE_RANK``
set, ``torchrun`` sets ``RANK``, and SLURM (``srun``, as the submitit launcher uses it with ``tasks_per_node``) sets
``SLURM_PROCID`` in each task. The run folder belongs to global rank 0: it writes config, checkpoint, metrics and runs
the stages after training; every other rank takes part in training only and returns. Plain functions, no torch.
"""

from __future__ import annotations

import hashlib
import os
from typing import Mapping

__all__ = ["RANK_VARIABLES", "global_rank", "is_rank_zero", "parameters_digest"]

# Each names a rank in its launcher's numbering; a process is global rank 0 only where every one that is set is 0
# (a rank-1 process Lightning starts inside a SLURM job still carries the job's SLURM_PROCID=0).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def _rank_value(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name}={value!r} is not a process rank (an integer); unset it or "
                         f"fix the launcher that set it") from None


def is_rank_zero(environ: Mapping[str, str] | None = None) -> bool:
    """True in the one process that owns the run folder (also in any process that is not part of a DDP group)."""
    environ = os.environ if environ is None else environ
    return all(_rank_value(environ, name) == 0 for name in RANK_VARIABLES)


def global_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank, as far as the environment tells it (for messages; 0 outside DDP)."""
    environ = os.environ if environ is None else environ
    for name in ("RANK", "SLURM_PROCID"):
        if _rank_value(environ, name):
            return _rank_value(environ, name)
    local, node = _rank_value(environ, "LOCAL_RANK"), _rank_value(environ, "NODE_RANK")
    per_node = _rank_value(environ, "LOCAL_WORLD_SIZE") or (local + 1)
    return node * per_node + local


def parameters_digest(module) -> str:
    """sha256 of a torch module's parameters (not its buffers: batch-norm running statistics are per process under
    DDP), in ``named_parameters`` order: equal on every rank after a DDP fit."""
    digest = hashlib.sha256()
    for name, parameter in module.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
