"""The report of one run: a self-contained report.html built from what the stages left in the run directory."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from workbench.report import html as H
from workbench.report.discovery import read_json, read_yaml, require_run_dir
from workbench.report.metrics import (STAGE_ORDER, HeadlineSpec, collect_references, find_headlines,
                                      ordered_stages)
from workbench.utils import atomic_write_text

STAGE_INFO: dict[str, tuple[str, str]] = {
    "train": ("Training",
              "Task training of the network, with the spatial (topographic) loss where configured: learning curves "
              "and final accuracy."),
    "topography": ("Topography",
                   "Units laid out on a cortical sheet: maps of their selectivity, and how similar the tuning of two "
                   "units is as a function of their distance on the sheet (smoothness)."),
    "extract": ("Feature extraction", "Layer activations to the neural stimulus sets, cached for the stages below."),
    "align": ("Brain alignment",
              "Representational similarity with human and monkey inferior temporal cortex (RSA, against the noise "
              "ceiling of the data) and encoding-model predictivity of macaque V4 responses."),
    "attribute": ("Attribution",
                  "Which input pixels drive class, unit and neural-site targets, with sanity checks of the maps."),
    "intervene": ("Intervention",
                  "Lesions of units and connections: their effect on the task and on brain alignment, summarised by "
                  "the interventional-alignment score."),
}
SPECIAL_SECTIONS = ("summary", "config", "provenance", "other", "references")
_TIMESTAMP_DIR = re.compile(r"(\d{4}-\d{2}-\d{2})[_T ](\d{2})[-:](\d{2})[-:](\d{2})")


def run_timestamp(run: Path, provenance: Mapping[str, Any]) -> str:
    """When the run started: provenance, else the run folder's timestamp name, else metrics.json's mtime."""
    if provenance.get("started"):
        try:
            started = datetime.fromisoformat(str(provenance["started"]))
        except ValueError:
            return str(provenance["started"])
        return started.strftime("%Y-%m-%d %H:%M:%S") + (f" {started.tzname()}" if started.tzinfo else "")
    for part in (run.name, run.parent.name):
        m = _TIMESTAMP_DIR.search(part)
        if m:
            return f"{m.group(1)} {m.group(2)}:{m.group(3)}:{m.group(4)}"
    for marker in ("metrics.json", "config.yaml"):
        if (run / marker).exists():
            mtime = datetime.fromtimestamp((run / marker).stat().st_mtime, tz=timezone.utc)
            return mtime.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "unknown time"


def figure_files(figures_dir: Path) -> list[Path]:
    """Embeddable images of figures/, one per stem (PNG preferred over the other formats of the same figure)."""
    if not figures_dir.is_dir():
        return []
    by_stem: dict[str, Path] = {}
    preference = list(H.IMAGE_TYPES)
    for p in sorted(figures_dir.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in H.IMAGE_TYPES:
            continue
        old = by_stem.get(p.stem)
        if old is None or preference.index(p.suffix.lower()) < preference.index(old.suffix.lower()):
            by_stem[p.stem] = p
    return [by_stem[s] for s in sorted(by_stem)]


def assign_figures(files: Iterable[Path], stages: Iterable[str]) -> dict[str, list[Path]]:
    """Group figures by the stage prefix of their name (`<stage>_<what>`); the longest matching stage wins, figures
    that match no stage go under "other"."""
    names = sorted(set(stages), key=len, reverse=True)
    groups: dict[str, list[Path]] = {}
    for f in files:
        owner = next((s for s in names if f.stem == s or f.stem.startswith(s + "_")), "other")
        groups.setdefault(owner, []).append(f)
    return groups


def _caption(stem: str, stage: str, captions: Mapping[str, str]) -> str:
    short = stem[len(stage) + 1:] if stage and stem.startswith(stage + "_") else stem
    for key in (stem, short):
        if key in captions:
            return str(captions[key])
    # "train_curves" -> "Train curves" (one word alone says too little); "align_rsa_layer_profile" -> "RSA layer ..."
    return H.humanize(stem if "_" not in short else short)


def _headline_value(h) -> str:
    v = h.value
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if h.percent and 0 <= v <= 1:
            return f"{100 * v:.1f} %"
        return H.format_number(v)
    return str(v)


def _detail_text(value: Any) -> str:
    interval = H.interval_of(value) if isinstance(value, Mapping) else None
    if interval:
        return H.format_interval(*interval)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(H.is_number(x) for x in value):
        return H.format_interval(*value)
    if H.is_number(value):
        return H.format_number(value)
    return str(value)


def summary_html(metrics: Mapping[str, Any], specs: list[HeadlineSpec] | None) -> str:
    cards = []
    for h in find_headlines(metrics, specs):
        detail = " · ".join(f"{name} {_detail_text(v)}".strip() for name, v in h.details.items())
        cards.append((h.label, _headline_value(h), detail, h.key))
    return H.summary_cards(cards)


def provenance_html(prov: Mapping[str, Any]) -> str:
    if not prov:
        return '<p class="muted">No provenance.json in this run.</p>'
    facts = []
    for key in ("started", "workbench", "git", "seed", "device", "cuda", "python", "platform"):
        if key in prov:
            facts.append((key, prov[key]))
    if prov.get("command"):
        cmd = prov["command"]
        facts.append(("command", " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)))
    known = {"started", "workbench", "git", "seed", "device", "cuda", "python", "platform", "command", "packages",
             "data_files", "previous"}
    facts += [(k, v) for k, v in prov.items() if k not in known]
    parts = ["<div>" + H.key_value_table(facts, "provenance") + "</div>"]
    if isinstance(prov.get("packages"), Mapping) and prov["packages"]:
        rows = [(name, H.esc(str(v)) if v else '<span class="na">not installed</span>')
                for name, v in prov["packages"].items()]
        parts.append("<div><h3>Package versions</h3>" + H.key_value_table(rows, "package versions", raw_html=True)
                     + "</div>")
    if isinstance(prov.get("data_files"), Mapping) and prov["data_files"]:
        rows = [(name, f"<code>{H.esc(str(h))}</code>") for name, h in prov["data_files"].items()]
        parts.append("<div><h3>Data files (sha256)</h3>" + H.key_value_table(rows, "data files", raw_html=True)
                     + "</div>")
    if isinstance(prov.get("previous"), list) and prov["previous"]:
        parts.append("<h3>Earlier sessions that wrote into this run</h3>"
                     + H.records_table(prov["previous"], "earlier sessions"))
    return '<div class="provgrid">' + "".join(parts) + "</div>"


def config_html(run: Path, cfg: Any) -> str:
    text = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    if not text.strip():
        return '<p class="muted">No config.yaml in this run.</p>'
    n_lines = text.count("\n") + 1
    return (f'<details class="block"><summary>Resolved config.yaml ({n_lines} lines)</summary>'
            f'<pre class="config">{H.esc(text)}</pre></details>')


def _validate_sections(sections: Iterable[str] | None, stages: list[str]) -> set[str] | None:
    if sections is None:
        return None
    sections = [sections] if isinstance(sections, str) else list(sections)
    valid = set(SPECIAL_SECTIONS) | set(STAGE_ORDER) | set(stages)
    unknown = [s for s in sections if s not in valid]
    if unknown:
        raise ValueError(f"report.sections names {unknown}, which are neither stages of this run "
                         f"({', '.join(stages) or 'none'}) nor report sections ({', '.join(SPECIAL_SECTIONS)}); "
                         f"fix the names or leave report.sections null to show everything")
    return set(sections)


def build_run_report(run_path: str | os.PathLike, *, title: str | None = None,
                     sections: Iterable[str] | None = None, headline: Iterable[Mapping[str, Any]] | None = None,
                     captions: Mapping[str, str] | None = None, output: str | os.PathLike | None = None) -> Path:
    """Write <run>/report.html (self-contained) and return its path.

    title: defaults to cfg["report"]["title"], else the study name. sections: stage names and/or "summary",
    "config", "provenance", "other" (figures of no stage), "references" to show; None shows everything present.
    headline: summary-card specs ({label, keys: [glob patterns over dotted metric keys], details, percent}); None
    uses DEFAULT_HEADLINES. captions: figure stem -> caption (stages may also give metrics[stage]["captions"]).
    """
    run = require_run_dir(getattr(run_path, "path", run_path))
    metrics = read_json(run / "metrics.json")
    cfg = read_yaml(run / "config.yaml") or {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{run / 'config.yaml'} should hold a mapping (the resolved config), got {type(cfg).__name__}")
    prov = read_json(run / "provenance.json")
    report_cfg = cfg.get("report") if isinstance(cfg.get("report"), Mapping) else {}

    stages = ordered_stages(metrics)
    shown = _validate_sections(sections if sections is not None else report_cfg.get("sections"), stages)

    def want(name: str) -> bool:
        return shown is None or name in shown

    study = str(cfg.get("study") or run.parent.name or "run")
    title = title or report_cfg.get("title") or H.humanize(study)
    when = run_timestamp(run, prov)
    specs = None
    headline = headline if headline is not None else report_cfg.get("headline")
    if headline:
        specs = [HeadlineSpec.from_config(item) for item in headline]

    figures = assign_figures(figure_files(run / "figures"), set(STAGE_ORDER) | set(stages))
    fig_stages = [s for s in STAGE_ORDER if s in figures and s not in stages]

    body: list[str] = []
    nav: list[tuple[str, str]] = []
    if want("summary"):
        body.append(summary_html(metrics, specs))
    if want("config"):
        nav.append(("config", "Config"))
        body.append(f'<section id="config"><h2>Configuration</h2>{config_html(run, cfg)}</section>')
    if want("provenance"):
        nav.append(("provenance", "Provenance"))
        body.append(f'<section id="provenance"><h2>Provenance</h2>{provenance_html(prov)}</section>')

    all_captions = dict(report_cfg.get("captions") or {})
    all_captions.update(captions or {})
    for stage in [s for s in STAGE_ORDER if s in stages or s in fig_stages] + [s for s in stages
                                                                                if s not in STAGE_ORDER]:
        if not want(stage):
            continue
        section = metrics.get(stage, {})
        name, lede = STAGE_INFO.get(stage, (H.humanize(stage), ""))
        stage_captions = dict(all_captions)
        if isinstance(section.get("captions"), Mapping):
            stage_captions.update(section["captions"])
        cards = [H.figure_html(f, _caption(f.stem, stage, stage_captions)) for f in figures.get(stage, [])]
        metrics_part = (H.metrics_html(section, stage) if stage in metrics else
                        '<p class="muted">This stage saved figures but recorded no metrics (interrupted?).</p>')
        nav.append((stage, name))
        body.append(
            f'<section id="{H.esc(stage)}" class="stage"><h2>{H.esc(name)}<span class="stagekey">{H.esc(stage)}'
            f"</span></h2>" + (f'<p class="lede">{H.esc(lede)}</p>' if lede else "")
            + H.figure_grid(cards) + metrics_part + "</section>"
        )
    if want("other") and figures.get("other"):
        cards = [H.figure_html(f, _caption(f.stem, "", all_captions)) for f in figures["other"]]
        nav.append(("other", "Other figures"))
        body.append(f'<section id="other"><h2>Other figures</h2>{H.figure_grid(cards)}</section>')
    if want("references"):
        refs = collect_references(metrics)
        nav.append(("references", "References"))
        items = "".join(f"<li>{H.esc(r)}</li>" for r in refs)
        body.append('<section id="references"><h2>References</h2>'
                    + (f'<ol class="refs">{items}</ol>' if refs else
                       '<p class="muted">No stage recorded references.</p>') + "</section>")

    subtitle = (f"Study <strong>{H.esc(study)}</strong> · {H.esc(when)} · run <code>{H.esc(run.name)}</code>")
    out = Path(output) if output is not None else run / "report.html"
    atomic_write_text(out, H.page(title, subtitle, nav, "".join(body)))
    return out
