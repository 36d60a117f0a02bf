"""Reports: run report (sections, embedded figures, tables, references), sweep report + CSV, CLI errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

from workbench.report import build_run_report, find_headlines, numeric_leaves
from workbench.report.cli import main as report_main
from workbench.report.sweep import build_sweep_report, sweep_table


def _png(draw, size=(4, 3)) -> bytes:
    fig = Figure(figsize=size)
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def _curve(fig):
    ax = fig.add_subplot()
    ax.plot(np.linspace(2.3, 0.9, 10), label="train loss")
    ax.set_xlabel("epoch")
    ax.legend()


def _image(fig):
    ax = fig.add_subplot()
    ax.imshow(np.random.default_rng(0).random((8, 8)), cmap="viridis")


def make_run(root: Path, *, study="topographic_alignment", weight=0.5, seed=0, acc=0.61, hit=0.21,
             figures=True, overrides=None) -> Path:
    """A run directory as the pipeline writes it, with real PNGs and nested metrics of every kind a stage emits."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"study": study, "seed": seed, "device": "cpu",
           "model": {"name": "small_cnn", "topography": {"weight": weight, "layers": ["conv2", "conv3"]}},
           "report": {"title": None}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "provenance.json").write_text(json.dumps({
        "started": "2024-05-01T12:30:00+00:00", "workbench": "0.1.0", "git": "a" * 40, "seed": seed,
        "device": "cpu", "cuda": None, "python": "3.11.2", "packages": {"torch": "2.3.0", "rsatoolbox": None},
        "data_files": {"/data/kriegeskorte2008/rdms.npz": "f" * 64}}))
    metrics = {
        "train": {"test_acc": acc, "epochs": 10, "history": {"train_loss": list(np.linspace(2.3, 0.9, 10))},
                  "converged": True},
        "extract": {"stimulus_sets": {"kriegeskorte92": {"n_stimuli": 92}}, "references": ["Kriegeskorte N. et al. "
                    "(2008) Matching categorical object representations in inferior temporal cortex of man and "
                    "monkey. Neuron 60:1126-1141."]},
        "align": {
            "summary": {"best_hIT_score": hit, "best_hIT_layer": "conv3",
                        "hIT_noise_ceiling": {"lower": 0.28, "upper": 0.41}, "v4_best_ceiled": 0.37},
            "rsa": {"hIT": {"conv1": {"score": 0.05, "ci": [0.01, 0.09], "p": 0.2},
                            "conv2": {"score": 0.12, "ci": [0.07, 0.18], "p": 0.01},
                            "conv3": {"score": hit, "ci": [hit - 0.05, hit + 0.05], "p": 0.001}}},
            "references": ["Kriegeskorte N. et al. (2008) Matching categorical object representations in inferior "
                           "temporal cortex of man and monkey. Neuron 60:1126-1141.",
                           "Nili H. et al. (2014) A toolbox for representational similarity analysis. PLoS Comput "
                           "Biol 10:e1003553."],
        },
        "attribute": {"checks": [{"check": "model randomisation", "passed": True, "spearman": 0.08},
                                 {"check": "label randomisation", "passed": False, "spearman": 0.71}]},
        "intervene": {"interventional_alignment": {"score": 0.44}, "lesion_fraction": [0.0, 0.1, 0.2],
                      "accuracy_drop": [0.0, 0.05, 0.19]},
        "novelty": {"new_number": 3.25},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    if figures:
        (root / "figures").mkdir()
        (root / "figures" / "train_curves.png").write_bytes(_png(_curve))
        (root / "figures" / "train_curves.pdf").write_bytes(b"%PDF-1.4 not embedded")
        (root / "figures" / "align_rdm_panels.png").write_bytes(_png(_image, size=(10, 3)))
        (root / "figures" / "align_rsa_layer_profile.png").write_bytes(_png(_curve))
        (root / "figures" / "intervene_lesion_curves.png").write_bytes(_png(_curve))
        (root / "figures" / "mystery_plot.png").write_bytes(_png(_image))
    if overrides is not None:
        (root / ".hydra").mkdir()
        (root / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _section(html: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def test_run_report_sections_figures_tables(tmp_path):
    run = make_run(tmp_path / "run")
    out = build_run_report(run)
    assert out == run / "report.html"
    html = out.read_text()

    # stages appear in pipeline order, unknown stages after them; config and provenance before the stages
    order = [html.index(f'<section id="{s}"') for s in
             ("config", "provenance", "train", "extract", "align", "attribute", "intervene", "novelty", "other",
              "references")]
    assert order == sorted(order)
    # every PNG is embedded exactly once and decodes back to the file's bytes; the PDF is not embedded
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5
    embedded = {base64.b64decode(b) for b in images}
    assert embedded == {p.read_bytes() for p in (run / "figures").glob("*.png")}
    assert "%PDF" not in html
    # figures land in their stage's section; a figure of no stage under "Other figures"
    assert "align_rdm_panels" in _section(html, "align") and "train_curves" in _section(html, "train")
    assert "mystery_plot" in _section(html, "other")
    assert 'class="fig wide"' in _section(html, "align")  # the 3:1 RDM panel spans the grid
    # nested metrics: a per-layer matrix table with CIs as [lo, hi]; dotted keys for the rest
    align = _section(html, "align")
    assert "<th scope=\"row\">conv3</th>" in align and "[0.16, 0.26]" in align
    assert "summary.hIT_noise_ceiling" in align and "[0.28, 0.41]" in align
    # records (attribution checks) as a table with pass/fail marks
    attribute = _section(html, "attribute")
    assert "model randomisation" in attribute and "✓" in attribute and "✗" in attribute
    # a curve as sparkline + summary; an unknown stage is still shown
    assert "<svg class=\"spark\"" in _section(html, "train") and "2.3 → 0.9 (n=10" in _section(html, "train")
    assert "new_number" in _section(html, "novelty") and "3.25" in _section(html, "novelty")
    # config collapsible, provenance with versions, git hash and data hashes
    assert "<details" in _section(html, "config") and "small_cnn" in _section(html, "config")
    prov = _section(html, "provenance")
    assert "2.3.0" in prov and "f" * 64 in prov and "not installed" in prov and "aaaaaaaaaaaa" in prov
    # references collected from every stage and de-duplicated
    refs = re.findall(r"<li>(.*?)</li>", _section(html, "references"))
    assert len(refs) == 2 and any("Nili" in r for r in refs)
    # the summary box picks the headline numbers with their context
    summary = re.search(r'<div class="summary".*?</div></div></div>', html, re.S).group(0)
    assert "61.0 %" in summary and "0.21" in summary and "[0.28, 0.41]" in summary and "conv3" in summary
    assert "0.44" in summary
    # self-contained: no script, no remote URL, and a CSP that forbids any fetch
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert "default-src 'none'" in html
    assert "Topographic alignment" in html and "2024-05-01 12:30:00" in html


def test_run_report_options_and_robustness(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "figures" / "align_broken.png").write_bytes(b"not a png at all")
    html = build_run_report(run, title="My talk", sections=["summary", "align"]).read_text()
    assert "<title>My talk</title>" in html
    assert '<section id="align"' in html and '<section id="train"' not in html and 'id="config"' not in html
    assert "align_broken.png is not a valid PNG" in html  # a corrupt figure is reported, not shown broken
    with pytest.raises(ValueError, match="report.sections names \\['algn'\\]"):
        build_run_report(run, sections=["algn"])
    # a run with metrics only (no figures, no provenance) still gets a report
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.json").write_text(json.dumps({"train": {"test_acc": 0.5}}))
    html = build_run_report(bare).read_text()
    assert "No provenance.json" in html and "50.0 %" in html
    (bare / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_run_report(bare)


def test_headlines_and_numeric_leaves():
    metrics = {"train": {"test_accuracy": 0.7, "curve": [1, 2]},
               "align": {"summary": {"best_hIT_score": 0.3, "ci": {"lo": 0.1, "hi": 0.4}}, "ok": True},
               "intervene": {"headline": {"Custom": {"value": 1.5, "detail": "from stage"}},
                             "interventional_alignment": {"score": 0.2}}}
    heads = {h.label: h for h in find_headlines(metrics)}
    assert list(heads) == ["Test accuracy", "hIT RSA (best layer)", "Custom"]
    assert heads["Custom"].key == "intervene.headline.Custom.value"
    assert heads["Test accuracy"].value == 0.7 and heads["hIT RSA (best layer)"].value == 0.3
    # the stage named its own headline numbers: the generic pattern does not add a second card for that stage
    assert "Interventional alignment" not in heads
    # the ceiled V4 score is looked up at the layer the regression names as best
    v4 = {"align": {"regression": {"210325": {"best_layer": "conv3", "layers": {
        "conv2": {"median_r": 0.5, "r2_over_c_median": 0.6}, "conv3": {"median_r": 0.4, "r2_over_c_median": 0.33}}}}}}
    (head,) = [h for h in find_headlines(v4) if h.label == "V4 predictivity (ceiled)"]
    assert head.value == 0.33 and head.details["layer"] == "conv3"
    leaves = numeric_leaves(metrics)
    assert leaves == {"train.test_accuracy": 0.7, "train.curve.0": 1, "train.curve.1": 2,
                      "align.summary.best_hIT_score": 0.3, "align.summary.ci.lo": 0.1, "align.summary.ci.hi": 0.4,
                      "align.ok": 1, "intervene.headline.Custom.value": 1.5,
                      "intervene.interventional_alignment.score": 0.2}


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["experiment=topographic_alignment", "model.topography.weight=0,2",
                                          "seed=0,1"]}}}))
    for w in (0, 2):
        for seed in (0, 1):
            name = f"model.topography.weight={w},seed={seed}"
            make_run(sweep / name, weight=w, seed=seed, acc=0.5 + 0.01 * seed - 0.02 * w, hit=0.1 + 0.05 * w,
                     figures=(seed == 0),
                     overrides=["experiment=topographic_alignment", f"model.topography.weight={w}", f"seed={seed}"])
    return sweep


def test_sweep_report_csv_and_figures(tmp_path):
    sweep = _sweep(tmp_path)
    out = build_sweep_report(sweep)
    assert out == sweep / "report.html"
    rows = list(csv.DictReader(open(sweep / "metrics.csv")))
    assert len(rows) == 4
    assert {"run", "model.topography.weight", "seed", "train.test_acc", "align.summary.best_hIT_score",
            "align.rsa.hIT.conv3.ci.0", "intervene.interventional_alignment.score"} <= set(rows[0])
    assert "experiment" not in rows[0]  # constant across runs: not a swept parameter
    by_run = {r["run"]: r for r in rows}
    r = by_run["model.topography.weight=2,seed=1"]
    assert float(r["model.topography.weight"]) == 2 and int(r["seed"]) == 1
    assert float(r["train.test_acc"]) == pytest.approx(0.5 + 0.01 - 0.04)
    # comparison figures as PNG + PDF, embedded in the report; each run's report linked (and built)
    pngs = sorted(p.name for p in (sweep / "figures").glob("*.png"))
    assert pngs and all((sweep / "figures" / p).with_suffix(".pdf").exists() for p in pngs)
    assert any("model.topography.weight" in p for p in pngs)
    html = out.read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    for name in by_run:
        assert f'href="{name}/report.html"' in html
        assert (sweep / name / "report.html").exists()
    assert "mean ± s.d. over seeds" in html
    # the table behind the figure: means over seeds per weight
    table = sweep_table(sweep)
    assert table.params == ["model.topography.weight", "seed"]


def test_sweep_config_diff_without_hydra_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "a", weight=0.0, seed=0)
    make_run(sweep / "b" / "nested", weight=1.0, seed=0)  # nested one level
    build_sweep_report(sweep)
    rows = list(csv.DictReader(open(sweep / "metrics.csv")))
    assert [r["run"] for r in rows] == ["a", "b/nested"]
    assert [float(r["model.topography.weight"]) for r in rows] == [0.0, 1.0]
    assert "seed" not in rows[0]  # the same in both runs


def test_cli_run_sweep_and_bad_path(tmp_path, capsys):
    run = make_run(tmp_path / "results" / "topographic_alignment" / "2024-05-01_12-30-00")
    assert report_main([str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    sweep = _sweep(tmp_path / "s")
    assert report_main([str(sweep)]) == 0
    assert (sweep / "metrics.csv").exists()
    # a folder that holds runs deeper down: an error that lists them and says what a run directory contains
    with pytest.raises(SystemExit) as exc:
        report_main([str(tmp_path / "results")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a run directory or a sweep directory" in err and str(run) in err and "metrics.json" in err
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "nope")])
    assert "does not exist" in capsys.readouterr().err


def test_report_stage_reads_config(tmp_path):
    from workbench.report.stage import report_stage
    from workbench.run import RunDir

    run = make_run(tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["report"] = yaml.safe_load((Path(__file__).parents[1] / "configs" / "report" / "default.yaml").read_text())
    out = report_stage(RunDir(run), cfg)
    assert out == {"report": str(run / "report.html")} and (run / "report.html").exists()
    cfg["report"].update(title="Lab meeting", sections=["summary", "train"],
                         headline=[{"label": "Epochs run", "keys": ["train.epoch*"]}])
    html = Path(report_stage(RunDir(run), cfg)["report"]).read_text()
    assert "<title>Lab meeting</title>" in html and "Epochs run" in html and 'id="align"' not in html
    with pytest.raises(KeyError, match="unknown report config keys \\['titel'\\]"):
        report_stage(RunDir(run), {**cfg, "report": {"titel": "x"}})
    with pytest.raises(ValueError, match="need 'label' and 'keys'"):
        report_stage(RunDir(run), {**cfg, "report": {"headline": [{"label": "no keys"}]}})


def test_references_resolve_registry_keys_and_deduplicate():
    from workbench.registry import cite
    from workbench.report.metrics import collect_references

    key = cite("wbtest_report_2024", "Tester A. (2024) A report test. J Tests 1:1.")
    metrics = {"intervene": {"references": [key]},
               "train": {"references": ["Tester A. (2024) A report test. J Tests 1:1.", "Other B. (2020) X."]},
               "align": {"rsa": {"references": ["other b. (2020)  x."]}}}
    # pipeline order (train first), the registry key replaced by its text, case/whitespace duplicates dropped
    assert collect_references(metrics) == ["Tester A. (2024) A report test. J Tests 1:1.", "Other B. (2020) X."]
