"""Benchmarks: the registry and its built-ins, a user's benchmark from YAML + an assembly + an image folder, a plugin's
model / benchmark / metric, committed layers, Brain-Score assembly layouts, and a torchvision model scored from the
CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import compose_config
from workbench.config import ConfigError

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def test_the_builtin_benchmarks_cover_it_rsa_and_every_v4_session():
    from workbench.benchmarks import BENCHMARKS
    from workbench.benchmarks.builtin import COWLEY_V4_SESSIONS
    from workbench.data import V4_SESSIONS

    assert COWLEY_V4_SESSIONS == V4_SESSIONS  # written out to keep the config check light
    names = set(BENCHMARKS.names())
    assert {"hit_rsa", "mit_rsa"} <= names
    for session in V4_SESSIONS:
        assert {f"v4_ridge_{session}", f"v4_pls_{session}", f"v4_cka_{session}", f"v4_cka_rbf_{session}"} <= names
    assert "Kriegeskorte" in BENCHMARKS.citation("hit_rsa") and "Cowley" in BENCHMARKS.citation("v4_pls_210325")
    settings = BENCHMARKS.get("v4_pls_210325").parsed_settings("v4_pls_210325")
    assert settings.datasets == ["cowley_v4_210325"] and settings.n_components == 25


@pytest.mark.parametrize("align, words", [
    ({"metrics": [], "benchmarks": ["hit_rsaa"]}, "did you mean 'hit_rsa'"),
    ({"metrics": [], "benchmarks": []}, "so is benchmarks"),
    ({"metrics": [], "benchmarks": ["hit_rsa", "hit_rsa"]}, "listed twice"),
    ({"metrics": [], "benchmarks": ["hit_rsa"], "benchmark_options": {"rsa": {"targets": ["mIT"]}}},
     "data are its own"),
    ({"metrics": [], "benchmarks": [{"name": "x", "assembly": "/nonexistent.nc", "images": "/tmp"}]},
     "does not exist"),
])
def test_a_wrong_benchmark_says_what_is_wrong(align, words):
    from workbench.alignment.config import AlignConfig
    from workbench.config import parse

    with pytest.raises(ConfigError, match=words):
        parse(AlignConfig, align, "align")


def _write_user_data(folder: Path, n: int = 40, repeats: int = 4) -> tuple[Path, Path]:
    """n random 32 px images and a simulated population: each cell a fixed linear function of the images' mean
    colour plus trial noise, with a repetition dim (so the benchmark has a split-half ceiling)."""
    from PIL import Image

    from workbench.data.neural import save_assembly

    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir()
    pixels = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    ids = [f"img{i:03d}" for i in range(n)]
    for sid, img in zip(ids, pixels):
        Image.fromarray(img).save(images / f"{sid}.png")
    colour = pixels.mean((1, 2))
    signal = ((colour - colour.mean(0)) / colour.std(0)) @ rng.normal(size=(3, 12))
    trials = signal[:, :, None] + rng.normal(scale=0.5, size=(n, 12, repeats))
    assembly = xr.DataArray(trials, dims=("presentation", "neuroid", "repetition"),
                            coords={"stimulus_id": ("presentation", ids),
                                    "neuroid_id": ("neuroid", [f"cell{j}" for j in range(12)]),
                                    "region": ("neuroid", ["V1"] * 12),
                                    "subject": ("neuroid", ["m1"] * 6 + ["m2"] * 6)})
    return save_assembly(assembly, folder / "my_v1.nc"), images


@pytest.mark.slow
def test_a_user_benchmark_from_yaml_an_assembly_and_an_image_folder(data_root, tmp_path):
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    nc, _ = _write_user_data(tmp_path)
    for metric in ("ridge", "rsa"):
        (tmp_path / f"my_v1_{metric}.yaml").write_text(
            f"name: my_v1_{metric}\nassembly: {nc.name}\nimages: images\nmetric: {metric}\nregion: V1\n"
            f"citation: 'Me, A. (2026). My V1 recordings. Journal 1, 1-2.'\n")
    run = RunDir(tmp_path / "run")
    cfg = compose_config(["preset=tiny", f"run_dir={run.path}", "sweep_dir=unused", "align.metrics=[]",
                          f"align.benchmarks=[{tmp_path}/my_v1_ridge.yaml,{tmp_path}/my_v1_rsa.yaml]"])
    metrics = run_pipeline(cfg, run, stages=["extract", "align"], log=lambda _msg: None)
    assert set(metrics["extract"]["stimulus_sets"]) == {"my_v1_ridge", "my_v1_rsa"}  # exactly what align reads
    ridge = metrics["align"]["my_v1_ridge"]["my_v1_ridge"]
    assert ridge["n_stimuli"] == 40 and ridge["n_neuroids"] == 12 and 0.5 < ridge["ceiling_median"] <= 1
    rsa = metrics["align"]["my_v1_rsa"]["V1"]
    assert rsa["n_subjects"] == 2  # one RDM per `subject` of the neuroids
    assert any("My V1 recordings" in ref for ref in metrics["align"]["references"])
    committed = metrics["align"]["committed"]["my_v1_ridge"]["my_v1_ridge"]
    assert committed["n_select"] == 20 and committed["n_test"] == 20
    assert committed["held_out_score"] == committed["held_out_scores"][committed["layer"]]


@pytest.mark.slow
def test_a_plugin_brings_a_model_a_benchmark_and_a_metric(plugins_on_path, data_root, tmp_path):
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    run = RunDir(tmp_path)
    cfg = compose_config(["preset=tiny", f"run_dir={tmp_path}", "sweep_dir=unused", "plugins=[byo_plugin]",
                          "~model", "+model={name:byo_net,width:4}", "align.metrics=[]",
                          "align.benchmarks=[byo_v1_ridge,byo_v1_procrustes]"])
    metrics = run_pipeline(cfg, run, stages=["extract", "align"], log=lambda _msg: None)
    align = metrics["align"]
    assert align["layers"] == ["2", "5", "7"]  # the plain Sequential's default layers
    assert set(align["byo_v1_procrustes"]["simulated_v1"]["angle"]) == set(align["layers"])
    assert align["byo_v1_ridge"]["simulated_v1"]["n_stimuli"] == 96
    assert any("Journal of Tests" in ref for ref in align["references"])
    assert align["committed"]["byo_v1_procrustes"] == {"note": "metric 'byo_v1_procrustes' does not score stimulus "
                                                               "subsets: no committed layer"}
    assert "layer" in align["committed"]["byo_v1_ridge"]["simulated_v1"]


def test_the_committed_layer_is_chosen_on_one_half_and_scored_on_the_other():
    from workbench.alignment.metrics.base import MetricResult, commit_layer, split_stimuli
    from workbench.alignment.metrics.rsa import RSAMetric
    from workbench.alignment.config import RSAConfig
    from workbench.alignment.rsa import compare_rdms, compute_rdm

    rng = np.random.default_rng(1)
    features = {layer: rng.normal(size=(30, 20)) for layer in ("a", "b", "c")}
    model_rdms = xr.DataArray(np.stack([compute_rdm(f) for f in features.values()]),
                              dims=("layer", "stimulus", "stimulus_b"))
    data = xr.DataArray(np.stack([compute_rdm(features["b"] + rng.normal(scale=2, size=(30, 20)))
                                  for _ in range(3)]), dims=("subject", "stimulus", "stimulus_b"))
    metric = RSAMetric("rsa", RSAConfig(targets=["X"]))
    result = MetricResult({}, {"model_rdms": model_rdms, "data_rdms": {"X": data}})
    split = metric.split_scores(result, ["a", "b", "c"], 0.5, seed=3)["X"]
    select, test = split_stimuli(30, 0.5, 3)
    assert len(set(select) | set(test)) == 30 and not set(select) & set(test)
    direct = np.mean([compare_rdms(model_rdms.values[2][np.ix_(test, test)], s[np.ix_(test, test)])
                      for s in data.values])
    assert split.test["c"] == pytest.approx(direct)
    committed = commit_layer(split)
    assert committed["layer"] == "b" and committed["held_out_score"] == split.test["b"]


def test_brainscore_trial_layout_becomes_presentation_neuroid_repetition(tmp_path):
    from workbench.data import load_assembly
    from workbench.data.neural import save_assembly

    values = np.arange(3 * 10, dtype=float).reshape(3, 10, 1)  # neuroid x presentation x time_bin
    brainscore = xr.DataArray(values, dims=("neuroid", "presentation", "time_bin"), coords={
        "neuroid_id": ("neuroid", ["a", "b", "c"]), "region": ("neuroid", ["IT"] * 3),
        "stimulus_id": ("presentation", [f"s{i % 5}" for i in range(10)]),
        "repetition": ("presentation", [i // 5 for i in range(10)])})
    path = tmp_path / "bs.nc"
    brainscore.to_netcdf(path)
    assembly = load_assembly(path)
    assert assembly.dims == ("presentation", "neuroid", "repetition") and assembly.shape == (5, 3, 2)
    assert assembly.sel(presentation=1).values[:, 1].tolist() == values[:, 6, 0].tolist()  # s1, repetition 1
    again = load_assembly(save_assembly(assembly, tmp_path / "ours.nc"))
    assert again.identical(assembly)


@pytest.mark.slow
def test_a_torchvision_model_scored_from_the_cli(data_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "experiment=score_model", "model.name=resnet18", "preset=tiny",
         "model.preprocess.image_size=64", "extract.layers=[layer2,layer4]",
         "align.benchmarks=[hit_rsa,v4_ridge_210325]", f"run_dir={tmp_path}"],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    align = metrics["align"]
    assert align["layers"] == ["layer2", "layer4"]
    assert set(align["hit_rsa"]["hIT"]["scores"]) == {"layer2", "layer4"}
    assert align["v4_ridge_210325"]["cowley_v4_210325"]["ceiling_median"] > 0
    assert metrics["extract"]["preprocess"]["image_size"] == 64
    labels = [card["label"] for card in align["headline"]]
    assert "hit_rsa: hIT RSA (committed layer, held-out stimuli)" in labels
    assert "hit_rsa: hIT RSA (best layer, post hoc)" in labels
    assert (tmp_path / "report.html").exists()


def test_the_benchmark_group_scores_that_benchmark(tmp_path):
    """`workbench benchmark=<name>` puts configs/benchmark/<name>.yaml under the top-level `benchmark` key: the run
    scores that benchmark (and extracts its images)."""
    from workbench.features.stage import stimulus_sets_needed
    from workbench.pipeline import resolve_config

    nc, images = _write_user_data(tmp_path, n=12, repeats=2)
    cfg = compose_config(["preset=tiny", "run_dir=unused", "sweep_dir=unused"], experiment="score_model")
    cfg["benchmark"] = {"name": "group_v1", "assembly": str(nc), "images": str(images), "metric": "pls",
                        "settings": {"n_components": 2}}
    resolved = resolve_config(cfg)
    assert [b["name"] for b in resolved["align"]["benchmarks"]] == ["group_v1"]
    assert stimulus_sets_needed(resolved) == ["group_v1"]
