"""The report's pictures drawn from synthetic sections (no pipeline run): ceiled predictivity per layer with its
spread across neuroids, the RSA layer-difference heatmap, one colour scale across the selectivity panels."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from workbench.alignment.config import RidgeConfig  # noqa: E402
from workbench.alignment.metrics.base import MetricResult  # noqa: E402
from workbench.alignment.metrics.encoding import RidgeMetric  # noqa: E402
from workbench.alignment.plots import ceiled_by_layer  # noqa: E402

LAYERS = ["conv1", "conv2", "conv3"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def encoding_result(datasets: dict[str, np.ndarray | None], n_neuroids: int = 40) -> MetricResult:
    """A ridge result as ``score`` leaves it: per data set the per-layer fits (r per neuroid) and the ceiling."""
    rng = np.random.default_rng(0)
    figure_data = {}
    for k, (dataset, ceiling) in enumerate(datasets.items()):
        fits = {layer: SimpleNamespace(r=rng.uniform(0.1, 0.3 + 0.2 * i, n_neuroids), predictions=rng.normal(
            size=(20, n_neuroids))) for i, layer in enumerate(LAYERS)}
        figure_data[dataset] = {"Y": rng.normal(size=(20, n_neuroids)), "fit": fits["conv3"], "fits": fits,
                                "ceiling": ceiling, "neuroid_ids": np.array([f"n{j}" for j in range(n_neuroids)]),
                                "region": "V4", "unit": ""}
    section = {dataset: {"best_layer": "conv3"} for dataset in datasets}
    return MetricResult(section, figure_data)


def test_ceiled_by_layer_draws_one_box_per_layer_and_a_panel_per_session():
    rng = np.random.default_rng(1)
    per_dataset = {name: {layer: rng.uniform(0, 1, 30) for layer in LAYERS} for name in ("session_a", "session_b")}
    per_dataset["session_a"]["conv1"][:5] = np.nan  # neuroids without a positive ceiling are left out, not drawn
    fig = ceiled_by_layer(LAYERS, per_dataset, "r²/c per neuroid", region="V4")
    axes = fig.axes
    assert len(axes) == 2
    assert [t.get_text() for t in axes[0].get_xticklabels()] == LAYERS
    assert axes[0].get_ylabel() == "r²/c per neuroid"
    assert "session_a" in axes[0].get_title() and "session_b" in axes[1].get_title()
    # one median line per layer, at the median of the finite per-neuroid values
    medians = [line for line in axes[0].lines if line.get_color() == "C1"]
    assert len(medians) == len(LAYERS)
    assert medians[0].get_ydata()[0] == pytest.approx(np.nanmedian(per_dataset["session_a"]["conv1"]))
    assert any(tuple(line.get_ydata()) == (1.0, 1.0) for line in axes[0].lines)  # the ceiling line


def test_ridge_figures_include_ceiled_by_layer_named_after_the_metric():
    ceiling = np.full(40, 0.5)
    result = encoding_result({"cowley_v4_210325": ceiling})
    metric = RidgeMetric("hit_ridge", RidgeConfig(datasets=["cowley_v4_210325"]))
    figures = metric.figures(result, LAYERS)
    assert set(figures) == {"align_hit_ridge_predictions", "align_hit_ridge_ceiled_by_layer"}
    ceiled = metric.ceiled_per_layer(result, LAYERS)["cowley_v4_210325"]
    r = result.figure_data["cowley_v4_210325"]["fits"]["conv2"].r
    np.testing.assert_allclose(ceiled["conv2"], r ** 2 / 0.5)


def test_no_ceiled_figure_without_a_ceiling():
    result = encoding_result({"no_trials": None})
    figures = RidgeMetric("ridge", RidgeConfig(datasets=["no_trials"])).figures(result, LAYERS)
    assert set(figures) == {"align_ridge_predictions"}
