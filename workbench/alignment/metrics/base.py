"""The alignment-metric registry and what a metric is.

A metric is a class registered in ``METRICS`` with its citation(s); it declares its settings as a dataclass
(``config``) and scores the chosen layers of a run against a target data set. The align stage loops over the
configured metrics and knows none of them by name:

    @METRICS.register("my_metric", citation="Me, A. (2026). My metric. Journal 1, 1-2.")
    class MyMetric(RecordingsMetric):          # datasets: [...] -> activations + responses of the same images
        config = MyConfig                      # a dataclass; align.settings.my_metric is parsed with it

        def score(self, ctx, layers) -> MetricResult: ...
        def headline(self, ctx, result) -> list[dict]: ...

The metric's section of metrics.json is ``align.<name>``; its headline keys point into it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.config import ConfigError
from workbench.registry import Registry

if TYPE_CHECKING:  # only for annotations: this module stays light (config validation imports it)
    from workbench.alignment.plots import LayerProfile
    from workbench.context import StageContext

METRICS: Registry[type["AlignmentMetric"]] = Registry("alignment metric")


@dataclass
class MetricResult:
    """What ``AlignmentMetric.score`` returns: its metrics.json section, and the arrays its figures need."""

    section: dict[str, Any]
    figure_data: dict[str, Any] = field(default_factory=dict)


class AlignmentMetric:
    """Base of every alignment metric; ``settings`` is the parsed ``align.settings.<name>`` (a ``config``)."""

    config: ClassVar[type]

    def __init__(self, name: str, settings: Any):
        self.name = name
        self.settings = settings

    def stimulus_sets(self) -> list[str]:
        """The stimulus sets whose activations the metric reads (the extract stage must have written them)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise ConfigError if a data set named in the settings is not registered (called before any scoring)."""

    def cite_data(self, ctx: "StageContext") -> None:
        """Cite the data sets the metric scored against (the metric's own entry is cited by the stage)."""

    def score(self, ctx: "StageContext", layers: list[str]) -> MetricResult:
        raise NotImplementedError

    def summary(self, result: MetricResult) -> dict[str, Any]:
        """Flat entries for ``align.summary`` (what sweeps optimise, e.g. ``best_hIT_score``)."""
        return {}

    def headline(self, ctx: "StageContext", result: MetricResult) -> list[dict[str, Any]]:
        """``ctx.headline(...)`` entries; their keys start with ``<name>.`` (the metric's section)."""
        return []

    def layer_profile(self, result: MetricResult, layers: list[str]) -> "LayerProfile | None":
        """Its panel of the stage's figure ``align_layer_profile`` (score against layer), or None."""
        return None

    def figures(self, result: MetricResult, layers: list[str]) -> dict[str, Any]:
        """Its own figures, ``{"align_<what>": matplotlib Figure}`` (built by workbench.alignment.plots)."""
        return {}

    def split_scores(self, result: MetricResult, layers: list[str], fraction: float, seed: int
                     ) -> dict[str, "SplitScores"]:
        """{target (a section key of the metric): per-layer scores on a seeded ``fraction`` of its stimuli and on the
        rest}, for committing a layer on data it is not scored on (``commit_layer``). {} = not supported."""
        return {}


@dataclass
class SplitScores:
    """Per-layer scores on the stimuli that choose the layer and on the held-out rest."""

    select: dict[str, float]
    test: dict[str, float]
    n_select: int
    n_test: int


def split_stimuli(n: int, fraction: float, seed: int):
    """(select, test) index arrays: a seeded random ``fraction`` of ``n`` stimuli and the rest (both sorted)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(n * fraction)), 1), n - 1)
    return np.sort(order[:k]), np.sort(order[k:])


def commit_layer(split: SplitScores) -> dict[str, Any]:
    """The layer chosen on the select stimuli and its held-out score (Brain-Score's committed layer)."""
    layer = best_layer(split.select)
    return {"layer": layer, "held_out_score": split.test[layer], "select_score": split.select[layer],
            "held_out_best_layer": best_layer(split.test), "n_select": split.n_select, "n_test": split.n_test,
            "held_out_scores": dict(split.test)}


class RecordingsMetric(AlignmentMetric):
    """A metric over ``settings.datasets``: each name is a stimulus set (the images, whose activations the extract
    stage wrote) and a response set (RESPONSES) registered under the same name."""

    def stimulus_sets(self) -> list[str]:
        return list(self.settings.datasets)

    def check(self) -> None:
        from workbench.data import RESPONSES, STIMULUS_SETS

        for dataset in self.settings.datasets:
            for registry in (STIMULUS_SETS, RESPONSES):
                require(registry, dataset, f"align.settings.{self.name}.datasets")

    def cite_data(self, ctx: "StageContext") -> None:
        from workbench.data import RESPONSES, STIMULUS_SETS

        for dataset in self.settings.datasets:
            ctx.cite(STIMULUS_SETS, dataset)
            ctx.cite(RESPONSES, dataset)


def require(registry: Registry, name: str, where: str) -> None:
    """ConfigError naming the config key when ``name`` is not registered (with the registry's did-you-mean)."""
    if name not in registry:
        try:
            registry.entry(name)
        except KeyError as err:
            raise ConfigError(f"{where}: {err.args[0]}") from None


def recording(dataset: str, stimulus_ids: list[str], trials: bool = False):
    """Responses of response set ``dataset`` (presentation x neuroid [x repetition]) in the order of
    ``stimulus_ids`` (the activations' order). With ``trials``: None when the set has no trial-level data (its
    loader takes no ``trials`` argument, or raises ValueError for ``trials=True``)."""
    from workbench.data import RESPONSES

    loader = RESPONSES.get(dataset)
    if not trials:
        responses = loader()
    elif not _takes_keyword(loader, "trials"):
        return None
    else:
        try:
            responses = loader(trials=True)
        except ValueError:
            return None  # no trial-level data for this set: no split-half ceiling
    return in_stimulus_order(responses, stimulus_ids, dataset)


def in_stimulus_order(responses, stimulus_ids: list[str], dataset: str):
    have = [str(s) for s in responses.coords["stimulus_id"].values]
    if have == list(stimulus_ids):
        return responses
    position = {s: i for i, s in enumerate(have)}
    missing = [s for s in stimulus_ids if s not in position]
    if missing:
        raise ValueError(f"activations for {dataset} include stimuli without responses ({missing[:3]}...); the "
                         f"stimulus set and the response set registered as {dataset!r} must share stimulus ids "
                         f"(re-extract with the data set's stimulus set)")
    return responses.isel(presentation=[position[s] for s in stimulus_ids])


def _takes_keyword(function: Any, keyword: str) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def best_layer(scores: dict[str, float]) -> str:
    """The layer with the highest score (the first one on ties; NaN never wins)."""
    finite = {layer: s for layer, s in scores.items() if s == s}
    if not finite:
        raise ValueError("every layer scored NaN; nothing to choose from")
    return max(finite, key=finite.get)
