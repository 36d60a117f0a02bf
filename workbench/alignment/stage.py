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
    from workbench.alignment.config import benchmark_metric

    metrics = [METRICS.get(name)(name, ctx.config.settings[name]) for name in ctx.config.metrics]
    metrics += [benchmark_metric(entry, ctx.config.benchmark_options) for entry in ctx.config.benchmarks]
    for metric in metrics:
        metric.check()
    layers = choose_layers(ctx.run, ctx.config.layers, metrics)
    section: dict[str, Any] = {"layers": layers}
    summary: dict[str, Any] = {}
    headline: list[dict[str, Any]] = []
    results: list[tuple[AlignmentMetric, MetricResult]] = []
    for metric in metrics:
        ctx.log(f"[workbench] align: {metric.name}")
        _cite(ctx, metric)
        result = metric.score(ctx, layers)
        section[metric.name] = result.section
        committed = committed_layers(ctx, metric, result, layers) if ctx.config.commit_layers else {}
        if committed:
            section.setdefault("committed", {})[metric.name] = committed
        _add_summary(summary, metric, result, committed)
        cards = metric.headline(ctx, result)
        cards += _committed_headlines(ctx, metric, committed, cards)
        headline += _benchmark_labels(metric, cards)
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


def _cite(ctx, metric: AlignmentMetric) -> None:
    """The metric's registry entry, the benchmark's (when the metric scores one) and the data sets it read."""
    from workbench.benchmarks import BENCHMARKS

    metric_name = getattr(metric, "benchmark", None) and BENCHMARKS.get(metric.benchmark).metric
    ctx.cite(METRICS, metric_name or metric.name)
    if getattr(metric, "benchmark", None):
        ctx.cite(BENCHMARKS, metric.benchmark)
    metric.cite_data(ctx)


def committed_layers(ctx, metric: AlignmentMetric, result: MetricResult, layers: list[str]) -> dict[str, Any]:
    """Per target: the layer chosen on a seeded ``commit_fraction`` of the stimuli and its score on the rest
    (Brain-Score's committed layer); the profile's best layer, chosen on all stimuli, is the post-hoc one. Written
    to ``align.committed.<metric>.<target>`` (beside, not inside, the metric's own section)."""
    from workbench.alignment.metrics.base import commit_layer

    if len(layers) < 2:
        return {"note": "one layer: nothing to choose"}
    splits = metric.split_scores(result, layers, ctx.config.commit_fraction, ctx.seed)
    if not splits:
        return {"note": f"metric {metric.name!r} does not score stimulus subsets: no committed layer"}
    return {target: {**commit_layer(split), "fraction": ctx.config.commit_fraction, "seed": ctx.seed,
                     "post_hoc_best_layer": result.section[target].get("best_layer")}
            for target, split in splits.items()}


def _committed_headlines(ctx, metric: AlignmentMetric, committed: dict[str, Any], earlier: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
    """One card per target: the committed layer's held-out score, labelled and unit-ed like the target's post-hoc
    card (the last card whose key points into the target's section)."""
    out = []
    for target, entry in committed.items():
        if not isinstance(entry, dict) or "layer" not in entry:
            continue
        post_hoc = next((h for h in reversed(earlier) if h["key"].startswith(f"align.{metric.name}.{target}.")), {})
        label = post_hoc.get("label", f"{metric.name} {target}")
        # the post-hoc card's data set (a V4 session) goes along: the report boxes cards per session
        session = {"dataset": post_hoc["details"]["dataset"]} if "dataset" in post_hoc.get("details", {}) else {}
        for phrase in ("best layer, post hoc", "post-hoc best layer"):
            label = label.replace(phrase, "committed layer, held-out stimuli")
        out.append(ctx.headline(f"{metric.name}_{target}_committed", entry["held_out_score"], label,
                                f"committed.{metric.name}.{target}.held_out_score", unit=post_hoc.get("unit", ""),
                                layer=entry["layer"], n_held_out=entry["n_test"],
                                post_hoc_best_layer=entry["post_hoc_best_layer"], **session))
    return out


def _benchmark_labels(metric: AlignmentMetric, headline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A benchmark's cards start with its name: two benchmarks of one metric would otherwise read the same."""
    if getattr(metric, "benchmark", None):
        for card in headline:
            card["label"] = f"{metric.benchmark}: {card['label']}"
    return headline


def _add_summary(summary: dict[str, Any], metric: AlignmentMetric, result: MetricResult,
                 committed: dict[str, Any]) -> None:
    entries = metric.summary(result)
    if getattr(metric, "benchmark", None):  # a benchmark's keys carry its name (two may share a metric)
        entries = {key if metric.name in key else f"{metric.name}_{key}": value for key, value in entries.items()}
    for target, entry in committed.items():
        if isinstance(entry, dict) and "layer" in entry:
            entries[f"{metric.name}_{target}_committed_layer"] = entry["layer"]
            entries[f"{metric.name}_{target}_committed_held_out_score"] = entry["held_out_score"]
    for key, value in entries.items():
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
