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


def rsa_target_section() -> dict:
    """An ``align.rsa.<target>`` section as the stage writes it (kept pairs only: neighbours and the best layer)."""
    return {"method": "spearman", "scheme": "both", "ci_level": 0.95, "best_layer": "conv3",
            "scores": {layer: {"score": s, "ci": [s - 0.05, s + 0.05]} for layer, s in zip(LAYERS, (0.1, 0.2, 0.3))},
            "differences": {"conv1 - conv2": {"diff": -0.1, "ci": [-0.15, -0.02], "p": 0.01},
                            "conv2 - conv3": {"diff": -0.1, "ci": [-0.2, 0.03], "p": 0.2}}}


def test_layer_differences_heatmap_marks_significant_cells_in_both_orders():
    from workbench.alignment.plots import layer_differences

    sec = rsa_target_section()
    fig = layer_differences(LAYERS, sec["differences"], "hIT: RSA layer differences", "Spearman r")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    assert [t.get_text() for t in ax.get_yticklabels()] == LAYERS
    # conv1 - conv2 excludes 0: starred at (conv1, conv2) and its mirror; conv2 - conv3 includes 0: no star
    stars = sorted((round(t.get_position()[1]), round(t.get_position()[0])) for t in ax.texts if t.get_text() == "*")
    assert stars == [(0, 1), (1, 0)]
    image = ax.images[0].get_array()
    assert image[0, 1] == pytest.approx(-0.1) and image[1, 0] == pytest.approx(0.1)
    assert np.ma.is_masked(image[0, 2])  # conv1 - conv3 was not kept: grey, not a zero
    clim = ax.images[0].get_clim()
    assert clim[0] == -clim[1]  # symmetric: the sign of a difference reads from its colour
    assert "Spearman r" in fig.axes[1].get_ylabel()


def test_rsa_figures_draw_one_difference_heatmap_per_target_named_after_the_metric(monkeypatch):
    import xarray as xr

    from workbench.alignment.config import RSAConfig
    from workbench.alignment.metrics.rsa import RSAMetric

    rng = np.random.default_rng(2)
    ids = [f"s{i}" for i in range(6)]
    model_rdms = xr.DataArray(rng.uniform(size=(3, 6, 6)), dims=("layer", "stimulus", "stimulus_b"),
                              coords={"layer": LAYERS, "stimulus": ids, "stimulus_b": ids})
    data = xr.DataArray(rng.uniform(size=(2, 6, 6)), dims=("subject", "stimulus", "stimulus_b"))
    metric = RSAMetric("hit_rsa", RSAConfig(targets=["hIT", "mIT"]))
    monkeypatch.setattr(metric, "_categories", lambda rdms: None)
    result = MetricResult({"hIT": rsa_target_section(), "mIT": rsa_target_section()},
                          {"model_rdms": model_rdms, "data_rdms": {"hIT": data, "mIT": data}})
    assert set(metric.figures(result, LAYERS)) == {"align_hit_rsa_rdm_panels", "align_hit_rsa_hIT_differences",
                                                   "align_hit_rsa_mIT_differences"}


def test_selectivity_panels_share_one_symmetric_scale_and_one_colourbar():
    from workbench.training.plots import selectivity_maps_figure

    rng = np.random.default_rng(3)
    extent = (0.0, 2.0, 0.0, 2.0)
    weak, strong = rng.uniform(-0.5, 0.5, (8, 8)), rng.uniform(-1, 3, (8, 8))
    strong[0, 0] = np.nan  # off the sheet
    smooth = np.full((8, 8), np.nan)
    maps = {("layer1", "faces"): (weak, smooth, extent, []), ("layer1", "bodies"): (strong, smooth, extent, []),
            ("layer2", "faces"): (weak, smooth, extent, []), ("layer2", "bodies"): (weak, smooth, extent, [])}
    fig = selectivity_maps_figure(maps, ["layer1", "layer2"], ["faces", "bodies"], 0.5, "d'")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    limits = {ax.images[0].get_clim() for ax in panels}
    assert limits == {(-np.nanmax(np.abs(strong)), np.nanmax(np.abs(strong)))}  # the strongest map sets the scale
    colourbars = [ax for ax in fig.axes if ax not in panels]
    assert len(colourbars) == 1 and "d'" in colourbars[0].get_ylabel()
