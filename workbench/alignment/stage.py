"""The align stage: score the chosen layers with every configured alignment metric.

``align.metrics`` lists entries of ``workbench.alignment.METRICS`` (rsa, ridge, pls, cka, or a plugin's); each runs
with its settings block ``align.settings.<name>`` (schema: ``workbench.alignment.config``), which names the data sets
it scores against. The stage knows no metric and no data set by name: for each metric it cites the metric's
registry entry and its data, writes the metric's section to ``align.<name>``, adds its summary entries and headline,
and asks it for its layer-profile panel and figures (drawn by ``workbench.alignment.plots``).

Encoding metrics save the readouts they fit with ``RunDir.save_readout(dataset, layer, ...)``.
"""

from __future__ import annotations

from typing import Any

from workbench.alignment.metrics import METRICS, AlignmentMetric, MetricResult
from workbench.config import ConfigError


def align_stage(ctx) -> dict[str, Any]:
    metrics = [METRICS.get(name)(name, ctx.config.settings[name]) for name in ctx.config.metrics]
    for metric in metrics:
        metric.check()
    layers = choose_layers(ctx.run, ctx.config.layers, metrics)
    section: dict[str, Any] = {"layers": layers}
    summary: dict[str, Any] = {}
    headline: list[dict[str, Any]] = []
    results: list[tuple[AlignmentMetric, MetricResult]] = []
    for metric in metrics:
        ctx.log(f"[workbench] align: {metric.name}")
        ctx.cite(METRICS, metric.name)
        metric.cite_data(ctx)
        result = metric.score(ctx, layers)
        section[metric.name] = result.section
        _add_summary(summary, metric, result)
        headline += metric.headline(ctx, result)
        results.append((metric, result))
    save_figures(ctx, layers, results)
    section["summary"] = summary
    section["headline"] = headline
    return section


def choose_layers(run, requested: list[str] | None, metrics: list[AlignmentMetric]) -> list[str]:
    """``requested`` (or every extracted layer) after checking that the extract stage wrote the activations of
    every stimulus set the metrics read; the layers are listed from the first of those sets."""
    needed = list(dict.fromkeys(s for metric in metrics for s in metric.stimulus_sets()))
    extracted = run.activation_sets()
    missing = [s for s in needed if s not in extracted]
    if missing:
        raise FileNotFoundError(
            f"the align metrics need activations for stimulus sets {missing}, which the extract stage did not write "
            f"(extracted: {extracted}); add them to extract.stimulus_sets and rerun the extract stage")
    available = run.load_activations(needed[0]).layers
    if requested is None:
        return list(available)
    unknown = [layer for layer in requested if layer not in available]
    if unknown:
        raise ConfigError(f"align.layers {unknown} were not extracted (for {needed[0]}); extracted layers: "
                          f"{available}")
    return list(requested)


def _add_summary(summary: dict[str, Any], metric: AlignmentMetric, result: MetricResult) -> None:
    for key, value in metric.summary(result).items():
        if key in summary:
            raise ValueError(f"alignment metric {metric.name!r} writes align.summary.{key}, which an earlier metric "
                             f"wrote; name its summary keys after the metric")
        summary[key] = value


def save_figures(ctx, layers: list[str], results: list[tuple[AlignmentMetric, MetricResult]]) -> None:
    """align_layer_profile (one panel per metric that draws one), then each metric's own figures."""
    from workbench.alignment.plots import layer_profile

    profiles = [p for p in (metric.layer_profile(result, layers) for metric, result in results) if p is not None]
    if profiles:
        ctx.save_figure(layer_profile(layers, profiles), "align_layer_profile")
    saved: set[str] = set()
    for metric, result in results:
        for name, fig in metric.figures(result, layers).items():
            if name in saved:
                raise ValueError(f"alignment metric {metric.name!r} draws figure {name!r}, which an earlier metric "
                                 f"drew; name figures align_<metric>_<what>")
            saved.add(name)
            ctx.save_figure(fig, name)
