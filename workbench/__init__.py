"""workbench: deep networks as scientific models of the visual brain.

The package has one sub-package per stage of the pipeline

    data -> models -> training -> features -> alignment -> attribution -> intervention -> report

and each stage is usable from plain Python (numpy / torch / xarray in and out). Hydra (``workbench.cli``)
is only the shell that composes configs and runs the stages into a run directory.
"""

__version__ = "0.1.0"
