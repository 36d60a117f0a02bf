"""Reports, rendered from the real metrics of a tiny run of the default study (``tiny_run``): every stage's headline
resolves and is a summary card, sections follow the stage registry, references are the stages' references; the
report config; the sweep report and its CSV; the CLI. Hand-built values only for the formatting helpers."""

from __future__ import annotations

import base64
import csv
import html as htmllib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.config import ConfigError, parse
from workbench.report import build_run_report, collect_references, numeric_leaves
from workbench.report import html as H
from workbench.report.cli import main as report_main
from workbench.report.config import ReportConfig
from workbench.report.metrics import headline_leaves, stage_headlines
from workbench.report.sweep import build_sweep_report, sweep_table
from workbench.run import get_metric
from workbench.stages import STAGES, stage, stage_order

# Stages whose numbers the summary box has always shown (test accuracy, smoothness, RSA and V4 predictivity,
# interventional alignment): each must keep proposing at least one headline.
STAGES_WITH_HEADLINES = ("train", "topography", "align", "intervene")


# -- helpers -----------------------------------------------------------------------------------------------------------

def copy_run(run, dest: Path) -> Path:
    """The files a report reads (config, provenance, metrics, figures) of a run, in a folder a test may change."""
    source = Path(getattr(run, "path", run))
    dest.mkdir(parents=True)
    for name in ("config.yaml", "provenance.json", "metrics.json"):
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    if (source / "figures").is_dir():
        shutil.copytree(source / "figures", dest / "figures")
    return dest


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def write_metrics(run: Path, metrics: dict) -> None:
    (run / "metrics.json").write_text(json.dumps(metrics))


def section_of(html: str, anchor: str) -> str:
    m = re.search(rf'<section id="{re.escape(anchor)}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def summary_of(html: str) -> str:
    """The summary box ("" when the report has none)."""
    start = html.find('<div class="summary" id="summary">')
    return "" if start < 0 else html[start:html.index("<section", start)]


def card_keys(html: str) -> list[str]:
    return [htmllib.unescape(k) for k in re.findall(r'<div class="key" title="([^"]*)"', summary_of(html))]


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def all_headlines(metrics: dict) -> list[tuple[str, dict]]:
    """(stage, headline entry) of every stage, in pipeline order."""
    order = [s for s in stage_order() if s in metrics] + [s for s in metrics if s not in stage_order()]
    return [(s, h) for s in order for h in metrics[s].get("headline") or []]


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a stage may headline a NaN it could not compute)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# -- the real run --------------------------------------------------------------------------------------------------------

def test_every_stage_headline_resolves_and_is_a_summary_card(tiny_run):
    run, metrics = tiny_run
    for name, section in metrics.items():
        assert isinstance(section.get("headline"), list), f"stage {name} returned no headline list"
        names = [h["name"] for h in section["headline"]]
        assert len(names) == len(set(names)), f"{name}: headline names repeat: {names}"
    for name in STAGES_WITH_HEADLINES:
        assert metrics[name]["headline"], f"stage {name} proposes no headline number"
    headlines = all_headlines(metrics)
    for name, h in headlines:
        assert {"name", "value", "label", "key"} <= set(h), h
        assert h["key"].startswith(name + "."), h
        assert same(get_metric(metrics, h["key"]), h["value"]), (name, h)
    html = (run.path / "report.html").read_text()
    # the pipeline's report shows exactly the stages' headlines, in pipeline order, with their labels
    assert card_keys(html) == [h["key"] for _, h in headlines]
    summary = summary_of(html)
    for _, h in headlines:
        assert H.esc(h["label"]) in summary


def test_report_references_are_exactly_the_stages_references(tiny_run):
    run, metrics = tiny_run
    html = (run.path / "report.html").read_text()
    shown = [htmllib.unescape(r) for r in re.findall(r"<li>(.*?)</li>", section_of(html, "references"), re.S)]
    union = {ref for section in metrics.values() for ref in section.get("references") or []}
    assert shown and set(shown) == union and len(shown) == len(union)
    assert shown == collect_references(metrics)


def test_every_stage_has_its_registry_section_with_its_figures(tiny_run):
    run, metrics = tiny_run
    html = (run.path / "report.html").read_text()
    stages = [s for s in stage_order() if s in metrics and s != "report"]
    assert [s for s in section_ids(html) if s in STAGES] == stages  # pipeline order, the report itself left out
    for name in stages:
        spec = STAGES.get(name)
        section = section_of(html, name)
        assert f"<h2>{H.esc(spec.title)}" in section and H.esc(spec.lede) in section
    # every PNG embedded exactly once, in the section of the stage that drew it; the PDFs are not embedded
    pngs = sorted((run.path / "figures").glob("*.png"))
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert pngs and len(images) == len(pngs)
    assert {base64.b64decode(b) for b in images} == {p.read_bytes() for p in pngs}
    for png in pngs:
        owner = max((s for s in stages if png.stem.startswith(s + "_")), key=len)
        assert f'id="fig-{png.stem}"' in section_of(html, owner)
    assert "%PDF" not in html
    # self-contained: no script, no remote URL, a CSP that forbids any fetch
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert "default-src 'none'" in html


def test_report_headline_config_picks_cards_and_names_the_nearest_key(tiny_run, tmp_path):
    run = copy_run(tiny_run[0], tmp_path / "run")
    metrics = read_metrics(run)
    (first_stage, first), *rest = all_headlines(metrics)
    other_key = (rest[0][1] if rest else first)["key"]
    html = build_run_report(run, headline=[f"{first_stage}.{first['name']}",
                                           {"label": "Chosen by key", "key": other_key}]).read_text()
    assert card_keys(html) == [first["key"], other_key] and "Chosen by key" in summary_of(html)
    # a key with a typo: the error names the nearest key the run has
    with pytest.raises(ConfigError, match=rf"report.headline\[0\].*did you mean {re.escape(repr(first['key']))}"):
        build_run_report(run, headline=[{"label": "typo", "key": first["key"][:-1]}])
    # a stage headline that does not exist: the nearest one the stages wrote
    wrong = f"{first_stage}.{first['name']}x"
    with pytest.raises(ConfigError, match=re.escape(f"did you mean '{first_stage}.{first['name']}'")):
        build_run_report(run, headline=[wrong])
    # the stage part is checked with the config, before any stage runs
    with pytest.raises(ConfigError, match="did you mean 'align'"):
        parse(ReportConfig, {"headline": ["algn.best"]}, "report")
    with pytest.raises(ConfigError, match="needs both 'label' and 'key'"):
        parse(ReportConfig, {"headline": [{"label": "no key"}]}, "report")
    # no cards at all when asked for none
    assert card_keys(build_run_report(run, headline=[]).read_text()) == []


def test_report_stage_builds_from_its_config_section(tiny_run, tmp_path):
    from workbench.context import StageContext
    from workbench.report.stage import report_stage
    from workbench.run import RunDir

    run = copy_run(tiny_run[0], tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    keys = [h["key"] for _, h in all_headlines(read_metrics(run))]
    cfg["report"] = {"title": "Lab meeting", "sections": ["summary", "train"],
                     "headline": [{"label": "Only card", "key": keys[0]}], "captions": {"train_curves": "Curves!"}}
    section = report_stage(StageContext.create(cfg, RunDir(run), "report"))
    assert section == {"report": str(run / "report.html"), "headline": []}
    html = (run / "report.html").read_text()
    assert "<title>Lab meeting</title>" in html and card_keys(html) == keys[:1]
    assert section_ids(html) == ["train"] and "Curves!" in html
    with pytest.raises(ConfigError, match="'titel' in report \\(did you mean 'title'\\?\\)"):
        StageContext.create({**cfg, "report": {"titel": "x"}}, RunDir(run), "report")
    with pytest.raises(ConfigError, match="report.sections names 'algn' \\(did you mean 'align'\\?\\)"):
        StageContext.create({**cfg, "report": {"sections": ["algn"]}}, RunDir(run), "report")


def test_a_plugin_stage_gets_its_own_section_card_and_references(tiny_run, tmp_path):
    run = copy_run(tiny_run[0], tmp_path / "run")
    metrics = read_metrics(run)
    plugin = {"value": 2.5, "references": ["Plugin, P. (2025). A stage from outside. J Plugins 1, 1."],
              "headline": [{"name": "value", "value": 2.5, "label": "Plugin value", "key": "wbtest_plugin.value"}]}
    write_metrics(run, {**metrics, "wbtest_plugin": plugin, "wbtest_unregistered": {"number": 3.25}})
    shutil.copy(next((run / "figures").glob("*.png")), run / "figures" / "wbtest_plugin_map.png")

    @stage("wbtest_plugin", after="align", title="Plugin analysis", lede="A stage from outside the package.")
    def wbtest_plugin_stage(ctx):
        return plugin

    try:
        html = build_run_report(run).read_text()
    finally:
        STAGES.remove("wbtest_plugin")
    ids = section_ids(html)
    assert ids.index("align") < ids.index("wbtest_plugin") < ids.index("wbtest_unregistered") < ids.index(
        "references")
    if "attribute" in ids:
        assert ids.index("wbtest_plugin") < ids.index("attribute")
    section = section_of(html, "wbtest_plugin")
    assert "<h2>Plugin analysis" in section and "A stage from outside the package." in section
    assert 'id="fig-wbtest_plugin_map"' in section
    keys = card_keys(html)
    align_cards = [i for i, k in enumerate(keys) if k.startswith("align.")]
    assert keys.index("wbtest_plugin.value") == max(align_cards) + 1  # right after align's cards
    assert "Plugin, P. (2025)" in section_of(html, "references")
    assert "3.25" in section_of(html, "wbtest_unregistered")  # a stage not registered is still shown


def test_run_report_robustness(tiny_run, tmp_path):
    run = copy_run(tiny_run[0], tmp_path / "run")
    (run / "figures" / "align_broken.png").write_bytes(b"not a png at all")
    html = build_run_report(run, title="My talk", sections=["summary", "align"]).read_text()
    assert "<title>My talk</title>" in html and section_ids(html) == ["align"]
    assert "align_broken.png is not a valid PNG" in html  # a corrupt figure is reported, not shown broken
    # metrics alone (no figures, no provenance, no config) still give a report
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "metrics.json", bare / "metrics.json")
    html = build_run_report(bare).read_text()
    assert "No provenance.json" in html and card_keys(html)
    # a headline in the old {label: {value, detail}} form is an error that says what a headline is
    metrics = read_metrics(bare)
    name = next(s for s in metrics if metrics[s].get("headline"))
    metrics[name]["headline"] = {"Old": {"value": 1.0, "detail": "x"}}
    write_metrics(bare, metrics)
    with pytest.raises(ValueError, match=rf"{name}.headline is a dict, not a list.*StageContext.headline"):
        build_run_report(bare)
    (bare / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_run_report(bare)


# -- formatting helpers (hand-built values) ----------------------------------------------------------------------------

def test_metrics_tables_show_records_intervals_checks_and_curves():
    section = {"rsa": {"conv1": {"score": 0.05, "ci": [0.01, 0.09], "p": 0.2},
                       "conv3": {"score": 0.21, "ci": [0.16, 0.26], "p": 0.001}},
               "noise_ceiling": {"lower": 0.28, "upper": 0.41},
               "checks": [{"check": "model randomisation", "passed": True}, {"check": "labels", "passed": False}],
               "history": {"train_loss": list(np.linspace(2.3, 0.9, 10))},
               "headline": [{"name": "x", "value": 1, "label": "X", "key": "s.x"}], "references": ["R."]}
    out = H.metrics_html(section, "s")
    assert '<th scope="row">conv3</th>' in out and "[0.16, 0.26]" in out and "[0.28, 0.41]" in out
    assert "model randomisation" in out and "✓" in out and "✗" in out
    assert '<svg class="spark"' in out and "2.3 → 0.9 (n=10" in out
    assert "headline" not in out and "R." not in out  # the report's own keys are not metrics


def test_numeric_leaves_skip_report_keys_and_headlines_get_stable_columns():
    metrics = {"train": {"test_accuracy": 0.7, "curve": [1, 2], "references": ["R."],
                         "headline": [{"name": "acc", "value": 0.7, "label": "Accuracy", "key": "train.test_accuracy"},
                                      {"name": "note", "value": "text", "label": "Note", "key": "train.note"}]},
               "align": {"summary": {"ci": {"lo": 0.1, "hi": 0.4}}, "ok": True}}
    assert numeric_leaves(metrics) == {"train.test_accuracy": 0.7, "train.curve.0": 1, "train.curve.1": 2,
                                       "align.summary.ci.lo": 0.1, "align.summary.ci.hi": 0.4, "align.ok": 1}
    assert headline_leaves(metrics) == {"train.headline.acc": 0.7}  # numbers only
    assert [c.source for c in stage_headlines(metrics)] == ["train.acc", "train.note"]
    with pytest.raises(ValueError, match=r"train.headline\[1\] lacks key"):
        stage_headlines({"train": {"headline": [metrics["train"]["headline"][0], {"name": "n", "value": 1,
                                                                                   "label": "N"}]}})


def test_references_in_pipeline_order_each_once():
    metrics = {"intervene": {"references": ["C. (2019)", "A. (2008)"]},
               "train": {"references": ["A. (2008)", "B. (2020)"], "nested": {"references": ["not a stage's"]}}}
    assert collect_references(metrics) == ["A. (2008)", "B. (2020)", "C. (2019)"]
    with pytest.raises(ValueError, match="train.references should be a list"):
        collect_references({"train": {"references": "A. (2008)"}})


def test_summary_cards_format_percent_units_and_details():
    from workbench.report.metrics import Card
    from workbench.report.run_report import summary_html

    out = summary_html([Card("Accuracy", 0.105, "train.test_accuracy", "fraction", percent=True),
                        Card("hIT RSA", 0.1345, "align.x", "Spearman r", {"layer": "fc", "noise_ceiling": [0.37, 0.67],
                                                                          "ci": {"lower": 0.1, "upper": 0.2}})])
    assert "10.5 %" in out and "fraction" not in out
    assert "0.1345" in out and "Spearman r" in out
    assert "layer fc · noise ceiling [0.37, 0.67]" in out and '<div class="ci">CI [0.1, 0.2]</div>' in out
    assert "no CI computed" in out.split("hIT RSA")[0]  # the accuracy card says it has none


def test_cards_of_different_sessions_are_boxed_apart_not_side_by_side():
    from workbench.report.metrics import Card
    from workbench.report.run_report import summary_html

    def v4(session: str, value: float) -> Card:
        return Card(f"V4 predictivity ({session})", value, f"align.ridge.{session}.layers.conv4.r2_over_c_median",
                    "r²/c", {"layer": "conv4", "dataset": session})

    out = summary_html([v4("session_a", 0.2), Card("Accuracy", 0.5, "train.test_accuracy"), v4("session_b", 0.4),
                        v4("session_a", 0.3)])
    loose, first, second = out.split('<div class="session">')  # cards of no session first, then one box each
    assert "Accuracy" in loose and loose.count('class="card') == 1
    assert first.count('class="card') == 2 and "session_b" not in first
    assert second.count('class="card') == 1 and "session_a" not in second
    # one session only: nothing to keep apart, the cards stay in the plain grid
    assert '<div class="session">' not in summary_html([v4("session_a", 0.2), Card("Accuracy", 0.5, "train.x")])


# -- sweeps ------------------------------------------------------------------------------------------------------------

def sweep_of(run, tmp_path: Path) -> Path:
    """A 2 x 2 sweep (topography weight x seed) made of copies of a real run; the first headline's number differs
    between copies (both where it lives and in the headline), so means over seeds can be checked."""
    sweep = tmp_path / "multirun"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["experiment=topographic_alignment", "model.topography.weight=0,2",
                                          "seed=0,1"]}}}))
    for w in (0, 2):
        for seed in (0, 1):
            job = copy_run(run, sweep / f"model.topography.weight={w},seed={seed}")
            if seed == 1:
                shutil.rmtree(job / "figures")
            cfg = yaml.safe_load((job / "config.yaml").read_text())
            cfg["seed"], cfg["model"]["topography"]["weight"] = seed, w
            (job / "config.yaml").write_text(yaml.safe_dump(cfg))
            (job / ".hydra").mkdir()
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
                ["experiment=topographic_alignment", f"model.topography.weight={w}", f"seed={seed}"]))
            metrics = read_metrics(job)
            _, head = all_headlines(metrics)[0]
            set_metric(metrics, head["key"], 0.5 + 0.01 * seed - 0.02 * w)
            write_metrics(job, metrics)
    return sweep


def set_metric(metrics: dict, key: str, value: float) -> None:
    """Change the number at ``key`` and every headline that shows it."""
    stage_name, rest = key.split(".", 1)
    node, parts = metrics[stage_name], rest.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    for h in metrics[stage_name]["headline"]:
        if h["key"] == key:
            h["value"] = value


def test_sweep_report_csv_and_figures(tiny_run, tmp_path):
    sweep = sweep_of(tiny_run[0], tmp_path)
    out = build_sweep_report(sweep)
    assert out == sweep / "report.html"
    rows = list(csv.DictReader(open(sweep / "metrics.csv")))
    assert len(rows) == 4
    metrics = read_metrics(sweep / "model.topography.weight=0,seed=0")
    (name, head), *_ = all_headlines(metrics)
    column = f"{name}.headline.{head['name']}"  # one column per stage headline, the same in every run
    assert {"run", "model.topography.weight", "seed", head["key"], column} <= set(rows[0])
    assert set(headline_leaves(metrics)) <= set(rows[0]) and set(numeric_leaves(metrics)) <= set(rows[0])
    assert "experiment" not in rows[0]  # constant across runs: not a swept parameter
    by_run = {r["run"]: r for r in rows}
    r = by_run["model.topography.weight=2,seed=1"]
    assert float(r["model.topography.weight"]) == 2 and int(r["seed"]) == 1
    assert float(r[column]) == float(r[head["key"]]) == pytest.approx(0.5 + 0.01 - 0.04)
    # comparison figures as PNG + PDF, embedded in the report; each run's report linked (and built)
    pngs = sorted(p.name for p in (sweep / "figures").glob("*.png"))
    assert pngs and all((sweep / "figures" / p).with_suffix(".pdf").exists() for p in pngs)
    assert any("model.topography.weight" in p for p in pngs)
    html = out.read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    for run_name in by_run:
        assert f'href="{run_name}/report.html"' in html and (sweep / run_name / "report.html").exists()
    assert "mean ± s.d. over seeds" in html
    # runs that mapped topography get the hallmarks section and its files (hallmarks_sweep has the known answers)
    assert 'id="hallmarks"' in html
    assert (sweep / "hallmarks_table.csv").is_file() and (sweep / "hallmarks.json").is_file()
    assert sweep_table(sweep).params == ["model.topography.weight", "seed"]
    # the headline's card: the weight whose mean over seeds is best (weight 0: 0.505 against 0.465)
    card = re.search(rf'<div class="label">{re.escape(H.esc(head["label"]))}</div>.*?<div class="detail">(.*?)</div>',
                     summary_of(html), re.S)
    assert card and card.group(1) == "best at model.topography.weight=0 (mean of 2 runs)"


def test_sweep_headline_selection_and_typos(tiny_run, tmp_path):
    from workbench.report.sweep import headline_columns

    sweep = sweep_of(tiny_run[0], tmp_path)
    table = sweep_table(sweep)
    (name, head), *_ = all_headlines(table.metrics[0])
    columns = headline_columns(table, [{"label": "By key", "key": head["key"]}, f"{name}.{head['name']}"])
    assert [(c.label, c.column) for c in columns] == [("By key", head["key"]),
                                                      (head["label"], f"{name}.headline.{head['name']}")]
    with pytest.raises(ConfigError, match=re.escape(f"did you mean {head['key']!r}")):
        headline_columns(table, [{"label": "typo", "key": head["key"][:-1]}])


def test_sweep_config_diff_without_hydra_overrides(tiny_run, tmp_path):
    sweep = tmp_path / "sweep"
    for folder, weight in (("a", 0.0), ("b/nested", 1.0)):  # one nested a level deeper
        run = copy_run(tiny_run[0], sweep / folder)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["model"]["topography"]["weight"] = weight
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    name, head = all_headlines(read_metrics(sweep / "a"))[0]
    build_sweep_report(sweep, headline=[f"{name}.{head['name']}"], run_reports=False)  # one panel: quick
    rows = list(csv.DictReader(open(sweep / "metrics.csv")))
    assert [r["run"] for r in rows] == ["a", "b/nested"]
    assert [float(r["model.topography.weight"]) for r in rows] == [0.0, 1.0]
    assert "seed" not in rows[0]  # the same in both runs


def test_cli_run_sweep_and_bad_path(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run[0], tmp_path / "results" / "topographic_alignment" / "2024-05-01_12-30-00")
    assert report_main([str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    sweep = sweep_of(tiny_run[0], tmp_path / "s")
    assert report_main([str(sweep), "--no-run-reports"]) == 0
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

