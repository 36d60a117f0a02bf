"""A benchmark from YAML alone: the user's recordings (an assembly file) + their images + a metric.

configs/benchmark/my_v1.yaml (or any path; ``workbench benchmark=my_v1`` or ``align.benchmarks: [my_v1]``):

    name: my_v1
    assembly: /data/my_v1.nc      # presentation x neuroid [x repetition], stimulus_id / neuroid_id / region coords
    images: /data/my_v1_images    # one image per stimulus_id (file name without extension)
    metric: ridge                 # rsa | ridge | pls | cka (any METRICS entry)
    settings: {n_folds: 5}        # the metric's other settings
    region: V1
    citation: "Me, A. (2026). My V1 recordings. Journal 1, 1-2."

Registering it adds a stimulus set and a response set under ``name`` (and, for RSA, an RDM set: one correlation-
distance RDM per ``subject`` coordinate value of the neuroids, else one), so every stage finds the data by name.
Relative paths are taken from the YAML file's folder (from the working directory for an inline entry).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from workbench.benchmarks import BENCHMARKS, Benchmark
from workbench.config import ConfigError, config_dir, default_of, parse, to_dict


@dataclass
class UserBenchmarkConfig:
    name: str = ""
    assembly: str = ""                 # .nc (netCDF) or .npz file
    images: str = ""                   # image folder, files named by stimulus_id
    metric: str = "ridge"
    settings: dict[str, Any] = default_of(dict)
    region: str = ""
    citation: str = ""
    description: str = ""
    image_size: int | None = None      # resize the folder's images to this square size (when their sizes differ)
    nan_policy: str = "raise"          # raise | drop_neuroids | drop_presentations (workbench.data.validate_assembly)
    background: list[int] | None = None  # [r, g, b] 0-255: screen translucent images are composited on (null: refuse)

    def __post_init__(self):
        for key in ("name", "assembly", "images"):
            if not getattr(self, key):
                raise ConfigError(f"a user benchmark needs `{key}` (see workbench.benchmarks.user for the format)")
        if not self.name.isidentifier():
            raise ConfigError(f"benchmark name {self.name!r} must be a Python identifier (letters, digits, _): it "
                              f"names the metrics.json section align.{self.name}")
        from workbench.data.stimuli import check_background

        try:
            check_background(self.background)
        except ValueError as err:
            raise ConfigError(f"user benchmark {self.name!r}: {err}") from None
        data_keys = {"stimulus_set", "rdm_set", "targets", "datasets"} & set(self.settings)
        if data_keys:
            raise ConfigError(f"settings.{sorted(data_keys)[0]} is set by the benchmark itself (its assembly and "
                              f"images); drop it")


def _read_entry(entry: Any) -> tuple[dict[str, Any], Path]:
    """The benchmark mapping and the folder its relative paths start from."""
    if isinstance(entry, Mapping):
        return dict(entry), Path.cwd()
    text = str(entry)
    path = Path(text) if text.endswith((".yaml", ".yml")) else config_dir() / "benchmark" / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"align.benchmarks: {text!r} is neither a registered benchmark{_nearest(text)} nor a file "
                          f"({path}); registered: {', '.join(BENCHMARKS.names())}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} should hold a mapping (name, assembly, images, metric, ...)")
    return {"name": path.stem, **data}, path.parent


def _nearest(name: str) -> str:
    from workbench.registry import nearest

    return nearest(name, BENCHMARKS.names())


def register_user_benchmark(entry: Any) -> tuple[str, Benchmark]:
    """Parse a user benchmark (mapping, configs/benchmark name or .yaml path) and register it with its data."""
    data, base = _read_entry(entry)
    spec = parse(UserBenchmarkConfig, data, f"benchmark {data.get('name') or entry!r}")
    if spec.name in BENCHMARKS:
        existing = BENCHMARKS.get(spec.name)
        if getattr(existing, "source", None) == to_dict(spec) | {"base": str(base)}:
            return spec.name, existing
        raise ConfigError(f"benchmark {spec.name!r} is already registered (a built-in or another file); rename it")
    assembly = _resolve(base, spec.assembly, "assembly")
    images = _resolve(base, spec.images, "images")
    _register_data(spec, assembly, images)
    benchmark = UserBenchmark(spec.metric, _metric_settings(spec), region=spec.region or spec.name,
                              description=spec.description or f"{spec.name}: {assembly.name} scored with "
                                                              f"{spec.metric}",
                              source=to_dict(spec) | {"base": str(base)})
    BENCHMARKS.add(spec.name, benchmark, citation=spec.citation or f"user benchmark {spec.name} ({assembly})")
    return spec.name, benchmark


@dataclass(frozen=True)
class UserBenchmark(Benchmark):
    """A Benchmark registered from a YAML file; ``source`` is what it was made from (a second registration of the
    same file is the same benchmark, another file of the same name is an error)."""

    source: dict[str, Any] = field(default_factory=dict)


def _resolve(base: Path, given: str, key: str) -> Path:
    path = Path(given).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise ConfigError(f"benchmark {key}: {path} does not exist")
    return path


def _metric_settings(spec: UserBenchmarkConfig) -> dict[str, Any]:
    if spec.metric == "rsa":
        return {**spec.settings, "stimulus_set": spec.name, "rdm_set": spec.name, "targets": [spec.region or
                                                                                               spec.name]}
    return {"readouts": False, **spec.settings, "datasets": [spec.name]}


def _register_data(spec: UserBenchmarkConfig, assembly: Path, images: Path) -> None:
    """Stimulus set, response set (and RDM set) named ``spec.name``; each loads and validates on first use."""
    from workbench.data import RDM_SETS, RESPONSES, STIMULUS_SETS, load_recording

    @functools.lru_cache(maxsize=1)
    def both():
        responses, stimuli = load_recording(assembly, images, nan_policy=spec.nan_policy,
                                           image_size=spec.image_size, background=spec.background)
        stimuli.name = spec.name
        return responses, stimuli

    def responses(trials: bool = False):
        data = both()[0]
        if "repetition" not in data.dims:
            if trials:
                raise ValueError(f"{assembly} has no repetition dim: no split-half ceiling")
            return data
        return data if trials else data.mean("repetition", skipna=True)

    def rdms(region: str = spec.region or spec.name):
        return assembly_rdms(responses(), region, spec.citation)

    citation = spec.citation or f"user benchmark {spec.name}"
    STIMULUS_SETS.add(spec.name, lambda: both()[1], citation=citation, description=f"images of {images}")
    RESPONSES.add(spec.name, responses, citation=citation, description=f"responses of {assembly}")
    if spec.metric == "rsa":
        RDM_SETS.add(spec.name, rdms, citation=citation, description=f"correlation-distance RDMs of {assembly}")


def assembly_rdms(responses, region: str, citation: str = ""):
    """subject x session x stimulus x stimulus_b RDMs (1 - Pearson r between response patterns) of an assembly's
    presentations: one per value of a ``subject`` coordinate on its neuroids, else one."""
    import numpy as np
    import xarray as xr

    from workbench.alignment.rsa import compute_rdm

    groups = ([(str(s), responses.isel(neuroid=np.flatnonzero(responses["subject"].values == s)))
               for s in np.unique(responses["subject"].values)] if "subject" in responses.coords
              else [("all", responses)])
    stack = np.stack([np.asarray(compute_rdm(g.values, "correlation"))[None] for _, g in groups])
    ids = [str(s) for s in responses["stimulus_id"].values]
    return xr.DataArray(stack, dims=("subject", "session", "stimulus", "stimulus_b"),
                        coords={"subject": [s for s, _ in groups], "session": [1], "stimulus": ids,
                                "stimulus_b": ids}, name=f"{region}_rdm", attrs={"region": region,
                                                                                 "citation": citation})
