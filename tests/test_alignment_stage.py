"""The align stage: its config schema, the metric registry, the CKA ceiling, and a tiny run (RSA, ridge and CKA)."""

import json
import typing
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_config
from workbench.config import ConfigError, parse

ROOT = Path(__file__).resolve().parents[1]


def _align(section):
    from workbench.alignment.config import AlignConfig

    return parse(AlignConfig, section, "align")


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_align_yaml_parses_with_the_default_metrics(name):
    from conftest import compose_config

    cfg = _align(compose_config(["run_dir=x", "sweep_dir=y", f"align={name}"])["align"])
    assert cfg.metrics == ["rsa", "ridge"]
    assert cfg.settings["rsa"].targets == ["hIT", "mIT"] and cfg.settings["rsa"].rdm_set == "kriegeskorte2008"
    assert all(d.startswith("cowley_v4_") for d in cfg.settings["ridge"].datasets)


@pytest.mark.parametrize("given, words", [
    ({"settings": {"rsa": {"n_boot": 3}}}, ["align.settings.rsa", "did you mean 'n_bootstrap'"]),
    ({"metrics": ["rsa", "rdge"]}, ["unknown alignment metric 'rdge'", "did you mean 'ridge'"]),
    ({"settings": {"ckaa": {}}}, ["did you mean 'cka'"]),
    ({"metrics": []}, ["metrics is empty"]),
    ({"metrics": ["ridge", "ridge"]}, ["twice"]),
    ({"metrics": ["ridge", "pls"]}, ["settings.ridge and settings.pls both save the readouts", "readouts: false"]),
    ({"settings": {"rsa": {"targets": []}}}, ["targets is empty"]),
    ({"settings": {"rsa": {"method": "whitened_pearson"}}}, ["scheme: subjects"]),
    ({"settings": {"rsa": {"ci_level": 95}}}, ["ci_level"]),
    ({"settings": {"ridge": {"datasets": "cowley_v4_201025"}}}, ["align.settings.ridge.datasets", "list"]),
    ({"settings": {"ridge": {"alphas": [0, 1]}}}, ["positive"]),
    ({"settings": {"cka": {"datasets": ["method"]}}}, ["would overwrite"]),
])
def test_align_config_errors_name_the_key_and_the_fix(given, words):
    with pytest.raises(ConfigError) as err:
        _align(given)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_pls_next_to_ridge_needs_one_readout_writer():
    cfg = _align({"metrics": ["ridge", "pls"], "settings": {"pls": {"readouts": False, "n_components": 5}}})
    assert cfg.settings["pls"].n_components == 5 and not cfg.settings["pls"].readouts


def test_schema_names_agree_with_the_library():
    from workbench.alignment.config import CompareMethod, RDMMetric
    from workbench.alignment.rsa import COMPARE_METHODS, RDM_METRICS

    assert set(typing.get_args(CompareMethod)) == set(COMPARE_METHODS)
    assert set(typing.get_args(RDMMetric)) <= set(RDM_METRICS)


def test_metric_registry_carries_citations_and_schemas():
    import dataclasses

    from workbench.alignment import METRICS

    assert {"rsa", "ridge", "pls", "cka"} <= set(METRICS.names())
    assert any("Nili" in c for c in METRICS.citations("rsa"))
    assert any("Kornblith" in c for c in METRICS.citations("cka"))
    for name in ("ridge", "pls"):
        assert any("Brain-Score" in c for c in METRICS.citations(name))
        assert any("Spearman" in c for c in METRICS.citations(name))
    for name in METRICS.names():
        assert dataclasses.is_dataclass(METRICS.get(name).config)


def test_the_config_check_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, yaml; from workbench.config import parse; from workbench.alignment.config import AlignConfig; "
            f"parse(AlignConfig, yaml.safe_load(open({str(ROOT / 'configs/align/default.yaml')!r})), 'align'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def _noisy_population(rng, noise: float, n=300, q=40, repeats=8):
    latent = rng.normal(size=(n, 5))
    signal = latent @ rng.normal(size=(5, q)) + 0.3 * rng.normal(size=(n, q))
    trials = signal[:, :, None] + noise * rng.normal(size=(n, q, repeats))
    trials[: n // 3, :, -2:] = np.nan  # a third of the images shown twice less often
    return signal, trials, np.nanmean(trials, axis=2)


def test_cka_ceiling_is_the_cka_of_the_noise_free_responses():
    """The split-half HSIC ceiling estimates CKA(noise-free responses, recorded means) without knowing the signal."""
    from workbench.alignment import linear_cka
    from workbench.alignment.metrics.cka import cka_ceiling

    rng = np.random.default_rng(0)
    ceilings = []
    for noise in (4.0, 8.0, 12.0):
        signal, trials, means = _noisy_population(rng, noise)
        estimate = cka_ceiling(trials, means, n_splits=20, seed=1)["ceiling"]
        assert estimate == pytest.approx(linear_cka(signal, means), abs=0.03), noise
        ceilings.append(estimate)
    assert ceilings[0] > ceilings[1] > ceilings[2]
    ragged = trials.copy()
    ragged[0, 0, 0] = np.nan  # one neuroid missing a repeat the others saw
    with pytest.raises(ValueError, match="shown to every neuroid"):
        cka_ceiling(ragged, means)


@pytest.fixture(scope="module")
def tiny_align_run(data_root, tmp_path_factory):
    """extract + align of the untrained tiny model with RSA, ridge and CKA (CKA is off in the default study)."""
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    cfg = compose_config(["preset=tiny", "run_dir=unused", "sweep_dir=unused", "align.metrics=[rsa,ridge,cka]",
                          "+align.settings.cka.datasets=[cowley_v4_210325]", "+align.settings.cka.ceiling_splits=10"])
    run = RunDir(tmp_path_factory.mktemp("align") / "run")
    metrics = run_pipeline(cfg, run, stages=["extract", "align"], log=lambda _msg: None)
    return run, metrics, cfg


@pytest.mark.slow
def test_align_stage_tiny(tiny_align_run):
    run, metrics, cfg = tiny_align_run
    section = metrics["align"]
    json.dumps(section)
    layers = section["layers"]
    hit = section["rsa"]["hIT"]
    lo, hi = hit["noise_ceiling"]["lower"], hit["noise_ceiling"]["upper"]
    assert abs(lo - 0.3723) < 1e-3 and abs(hi - 0.6657) < 1e-3  # spearman ceiling of the 4 hIT subjects
    for layer in layers:
        s = hit["scores"][layer]
        assert s["ci"][0] <= s["score"] <= s["ci"][1] or np.isclose(s["ci"][0], s["score"])
    assert section["rsa"]["mIT"]["noise_ceiling"] is None
    reg = section["ridge"]["cowley_v4_210325"]
    assert 0 < reg["ceiling_median"] < 1
    for layer in layers:
        e = reg["layers"][layer]
        assert -1 <= e["median_r"] <= 1 and "r2_over_c_median" in e and "r_over_c_sq_median" in e
        readout = run.load_readout("cowley_v4_210325", layer)
        assert readout["coef"].shape[0] == reg["n_neuroids"] == readout["intercept"].shape[0]
        assert readout["cv_r"].shape == (reg["n_neuroids"],)
    assert run.readout_layers("cowley_v4_210325") == sorted(layers)
    for fig in ("align_layer_profile", "align_rdm_panels", "align_ridge_predictions", "align_ridge_ceiled_by_layer",
                "align_rsa_hIT_differences", "align_rsa_mIT_differences"):
        assert (run.figures / f"{fig}.png").exists()
    assert section["summary"]["best_hIT_score"] == hit["scores"][hit["best_layer"]]["score"]


@pytest.mark.slow
def test_the_readout_maps_features_as_extracted_to_the_encoder_predictions(tiny_align_run):
    from workbench.alignment import RidgeEncoder
    from workbench.data import load_responses

    run, metrics, cfg = tiny_align_run
    acts = run.load_activations("cowley_v4_210325")
    last = metrics["align"]["layers"][-1]
    readout = run.load_readout("cowley_v4_210325", last)
    pred = acts[last] @ readout["coef"].T + readout["intercept"]
    Y = load_responses("cowley_v4_210325").values
    enc = RidgeEncoder(cfg["align"]["settings"]["ridge"]["alphas"], standardize=True).fit(acts[last], Y)
    np.testing.assert_allclose(pred, enc.predict(acts[last]), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_cka_is_scored_against_the_recordings_with_its_ceiling(tiny_align_run):
    from workbench.alignment import linear_cka
    from workbench.data import load_responses

    run, metrics, _ = tiny_align_run
    section = metrics["align"]
    cka = section["cka"]["cowley_v4_210325"]
    acts = run.load_activations("cowley_v4_210325")
    layer = cka["best_layer"]
    assert cka["scores"][layer] == pytest.approx(linear_cka(acts[layer], load_responses("cowley_v4_210325").values))
    assert cka["scores"][layer] == max(cka["scores"].values())
    assert 0 < cka["ceiling"] <= 1.05 and cka["ceiled"][layer] == pytest.approx(cka["scores"][layer] / cka["ceiling"])
    assert any("Kornblith" in ref for ref in section["references"])


@pytest.mark.slow
def test_headlines_point_at_the_values_and_cite_the_data(tiny_align_run):
    from workbench.pipeline import get_metric

    _, metrics, _ = tiny_align_run
    section = metrics["align"]
    names = [h["name"] for h in section["headline"]]
    # each metric's post-hoc cards, then its committed-layer cards (cka scores no stimulus subsets: none)
    assert names == ["best_hIT", "best_mIT", "rsa_hIT_committed", "rsa_mIT_committed",
                     "ridge_cowley_v4_210325_ceiled", "ridge_cowley_v4_210325_median_r",
                     "ridge_cowley_v4_210325_committed", "cka_cowley_v4_210325"]
    for h in section["headline"]:
        assert get_metric(metrics, h["key"]) == h["value"], h
    # every V4 card names its session, the committed one included: the report boxes them per session
    v4 = [h for h in section["headline"] if "cowley_v4_210325" in h["name"]]
    assert all(h["details"]["dataset"] == "cowley_v4_210325" for h in v4), v4
    hit = section["headline"][0]
    assert hit["key"] == f"align.rsa.hIT.scores.{hit['details']['layer']}.score"
    assert hit["details"]["noise_ceiling"] == section["summary"]["hIT_noise_ceiling"]
    references = " ".join(section["references"])
    for author in ("Schütt", "Nili", "Kriegeskorte, N., Mur", "Schrimpf", "Spearman", "Cowley"):
        assert author in references, author


def test_layers_come_from_the_first_configured_set_and_missing_sets_name_the_fix(tmp_path):
    """A study that extracts only V4 sets (v4_encoding) lists its layers from them, not from kriegeskorte92."""
    from workbench.alignment import METRICS
    from workbench.alignment.stage import choose_layers
    from workbench.features import Activations
    from workbench.run import RunDir

    run = RunDir(tmp_path)
    acts = Activations({"conv1": np.zeros((4, 3), np.float32), "fc": np.zeros((4, 2), np.float32)},
                       [f"s{i}" for i in range(4)], {"conv1": (3,), "fc": (2,)})
    run.save_activations("cowley_v4_190923", acts)
    cfg = _align({"metrics": ["ridge"], "settings": {"ridge": {"datasets": ["cowley_v4_190923"]}}})
    ridge = METRICS.get("ridge")("ridge", cfg.settings["ridge"])
    assert choose_layers(run, None, [ridge]) == ["conv1", "fc"]
    assert choose_layers(run, ["fc"], [ridge]) == ["fc"]
    with pytest.raises(ConfigError, match=r"align.layers \['conv9'\]"):
        choose_layers(run, ["conv9"], [ridge])
    from workbench.alignment.config import RSAConfig

    rsa = METRICS.get("rsa")("rsa", RSAConfig())
    with pytest.raises(FileNotFoundError, match=r"\['kriegeskorte92'\].*extract.stimulus_sets"):
        choose_layers(run, None, [ridge, rsa])


def test_unregistered_data_sets_are_named_before_anything_runs():
    from workbench.alignment import METRICS

    cfg = _align({"metrics": ["ridge", "rsa"], "settings": {"ridge": {"datasets": ["cowley_v4_21032"]},
                                                            "rsa": {"rdm_set": "kriegeskorte2080"}}})
    with pytest.raises(ConfigError, match=r"align.settings.ridge.datasets: unknown stimulus set 'cowley_v4_21032'.*"
                                          r"did you mean 'cowley_v4_210325'"):
        METRICS.get("ridge")("ridge", cfg.settings["ridge"]).check()
    with pytest.raises(ConfigError, match=r"align.settings.rsa.rdm_set: unknown RDM dataset.*kriegeskorte2008"):
        METRICS.get("rsa")("rsa", cfg.settings["rsa"]).check()
