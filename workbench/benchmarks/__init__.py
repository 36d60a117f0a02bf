"""Benchmarks (Brain-Score's split): a target data set + an alignment metric + its ceiling + its split policy + its
citation, kept apart from the model. ``align.benchmarks: [hit_rsa, v4_ridge_210325]`` scores them.

    from workbench.benchmarks import BENCHMARKS, Benchmark
    BENCHMARKS.add("my_it_ridge", Benchmark("ridge", {"datasets": ["my_it"]}, region="IT"),
                   citation="Me, A. (2026). My recordings. Journal 1, 1-2.")

A benchmark names a metric of ``workbench.alignment.METRICS`` and that metric's settings (its schema fills the rest:
folds, bootstrap, ceiling options); the data sets it names are registered stimulus / response / RDM sets. Its
metrics.json section is ``align.<benchmark name>``.

Without Python, a benchmark is a YAML file (``configs/benchmark/<name>.yaml`` or any path) naming an assembly file
(.nc or .npz, presentation x neuroid [x repetition]), an image folder and a metric (``workbench.benchmarks.user``):
``align.benchmarks: [my_v1]`` or ``workbench benchmark=my_v1``.

This module is light (no torch, no data loading): the config check resolves benchmark names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from workbench.config import ConfigError, parse
from workbench.registry import Registry, nearest

__all__ = ["BENCHMARKS", "Benchmark", "get_benchmark", "benchmark_name", "benchmark_dataset"]


@dataclass(frozen=True)
class Benchmark:
    """``metric`` (a METRICS entry) scored with ``settings`` (that metric's settings block: the data sets, the
    ceiling and split options). ``region`` and ``description`` label the report."""

    metric: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    region: str = ""
    description: str = ""

    def parsed_settings(self, name: str) -> Any:
        from workbench.alignment.metrics import METRICS

        if self.metric not in METRICS:
            raise ConfigError(f"benchmark {name!r}: unknown alignment metric {self.metric!r}"
                              f"{nearest(self.metric, METRICS.names())}; metrics are {', '.join(METRICS.names())}")
        return parse(METRICS.get(self.metric).config, dict(self.settings), f"benchmark {name}")

    def metric_instance(self, name: str):
        """The metric object the align stage scores, named after the benchmark (its section, figures, summary)."""
        from workbench.alignment.metrics import METRICS

        metric = METRICS.get(self.metric)(name, self.parsed_settings(name))
        metric.benchmark = name
        return metric


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def benchmark_name(entry: Any) -> str:
    """The name of an ``align.benchmarks`` entry: a registered name, a configs/benchmark file name, a .yaml path, or
    an inline mapping (a user benchmark with its ``name``)."""
    if isinstance(entry, Mapping):
        return str(entry.get("name") or "")
    text = str(entry)
    return Path(text).stem if text.endswith((".yaml", ".yml")) else text


def get_benchmark(entry: Any) -> tuple[str, Benchmark]:
    """(name, Benchmark) of an ``align.benchmarks`` entry. A name not in the registry is looked up as
    ``configs/benchmark/<name>.yaml``; a path to a .yaml file or an inline mapping is a user benchmark
    (``workbench.benchmarks.user``), registered on first use with its stimulus and response sets."""
    if isinstance(entry, Mapping) or str(entry).endswith((".yaml", ".yml")) or str(entry) not in BENCHMARKS:
        from workbench.benchmarks.user import register_user_benchmark

        return register_user_benchmark(entry)
    return str(entry), BENCHMARKS.get(str(entry))


def benchmark_dataset(name: str, where: str, readouts: bool = False) -> str:
    """The one recordings data set of benchmark ``name`` (with ``readouts``: one whose metric saves them)."""
    _, benchmark = get_benchmark(name)
    datasets = list(benchmark.settings.get("datasets") or [])
    if len(datasets) != 1 or (readouts and not getattr(benchmark.parsed_settings(name), "readouts", False)):
        need = "an encoding benchmark that saves readouts (e.g. v4_ridge_210325)" if readouts else \
            "a benchmark of one recordings data set (e.g. v4_ridge_210325)"
        raise ConfigError(f"{where}: {name!r} is not {need}")
    return str(datasets[0])


from workbench.benchmarks import builtin  # noqa: E402,F401  (registers the built-in benchmarks)
