"""Schema of the extract stage's section (``extract``, configs/extract/). No torch here: the pipeline imports every
schema to validate a config."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.config import ConfigError, bounded

__all__ = ["ExtractConfig"]


@dataclass
class ExtractConfig:
    """Activations of the run's model for each stimulus set, cached in <run>/cache/activations."""

    # registered stimulus sets (workbench.data.STIMULUS_SETS; a plugin may add its own); null = exactly the sets the
    # later stages read (the align metrics' and benchmarks', the topography analysis')
    stimulus_sets: list[str] | None = None
    layers: list[str] | None = None                 # null = every named layer of the model (models.layer_names)
    batch_size: int = bounded(64, min=1)
    # e.g. 4096: a fixed random Gaussian projection of wider layers (bounded memory); null = full layers
    projection_dim: int | None = bounded(None, min=1)
    # gaussian (dense projection to projection_dim), sparse (very sparse projection: memory k*sqrt(units)), or pool
    # (each channel's mean over space; projection_dim null). benchmarks/bench_reduction.py compares them
    reduction: str = "gaussian"
    # sets of more stimuli than this stream each batch to an on-disk store (cache/activations/<set>.store/, read
    # back lazily as memory maps): RAM stays flat in the number of stimuli. 0 = always; null = never (in memory)
    store_above: int | None = bounded(20000, min=0)
    num_workers: int = bounded(0, min=0)            # DataLoader workers decoding a lazy (file-backed) stimulus set
    # processes per node (GPUs, or CPU processes) and nodes that extract together (features.sharded: Lightning
    # Trainer.predict with DDP, one shard per process, merged by rank 0). 1 x 1 = in this process. Under DDP
    # training (trainer=ddp, a SLURM job with several tasks) set them to trainer.devices and trainer.num_nodes
    devices: int = bounded(1, min=1)
    num_nodes: int = bounded(1, min=1)

    def __post_init__(self):
        if self.reduction not in ("gaussian", "sparse", "pool"):
            raise ConfigError(f"reduction {self.reduction!r} is not one of gaussian, sparse, pool")
        if self.reduction == "pool" and self.projection_dim is not None:
            raise ConfigError("reduction=pool averages each channel over space and takes no projection_dim: set "
                              "extract.projection_dim=null, or use reduction=gaussian or sparse")
        sets = self.stimulus_sets or []
        repeated = sorted({s for s in sets if sets.count(s) > 1})
        if repeated:
            raise ConfigError(f"stimulus_sets lists {repeated} more than once")
        if self.layers is not None and not self.layers:
            raise ConfigError("layers is an empty list; name at least one layer, or null for every named layer")

    @property
    def processes(self) -> int:
        """How many processes extract (``devices`` x ``num_nodes``); more than one: every DDP rank takes part."""
        return self.devices * self.num_nodes
