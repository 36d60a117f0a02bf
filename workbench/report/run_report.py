"""The report of one run: a self-contained report.html built from what the stages left in the run directory.

Sections come from the stage registry (``workbench.stages.STAGES``: title, lede, pipeline order), summary cards from
the stages' ``headline`` lists, references from their ``references`` lists; nothing here names a stage's metrics.
"""

from __future__ import annotations

import importlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from workbench.config import parse, to_dict
from workbench.report import html as H
from workbench.report.checks import (FAILED_RUN_FILE, FailedCheck, best_layer_caveat, card_interval, failed_checks,
                                     includes_zero)
from workbench.report.config import ReportConfig
from workbench.report.discovery import read_json, read_yaml, require_run_dir
from workbench.report.metrics import Card, collect_references, ordered_stages, select_headlines
from workbench.stages import STAGES, stage_order
from workbench.utils import atomic_write_text

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


def card_value(card: Card) -> str:
    """The big number of a card: a fraction as a percentage when the stage asked for it."""
    v = card.value
    if H.is_number(v) and card.percent and 0 <= v <= 1:
        return f"{100 * v:.1f} %"
    return detail_text(v)


def detail_text(value: Any) -> str:
    """A value as short text: numbers formatted, intervals ([lo, hi] lists, {lower, upper}) as [lo, hi]."""
    interval = H.interval_of(value) if isinstance(value, Mapping) else None
    if interval:
        return H.format_interval(*interval)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(H.is_number(x) for x in value):
        return H.format_interval(*value)
    if value is None:
        return "—"
    if H.is_number(value):
        return H.format_number(value)
    return str(value)


def summary_html(cards: Iterable[Card], metrics: Mapping[str, Any] | None = None,
                 checks: Iterable[FailedCheck] = ()) -> str:
    """The summary box: one card per headline (label, value, unit, its CI or "no CI", details, the metrics.json key).
    A card is flagged when its CI includes 0 (not distinguishable from 0), when its best layer is not significantly
    better than the runner-up, or when it shows the number of a failed check. Cards of different data sets (their
    ``dataset`` detail: V4 sessions) are boxed per data set, never side by side."""
    failed = {c.key: c.message for c in checks}
    rows, sessions = [], []
    for card in cards:
        sessions.append(str(card.details.get("dataset") or ""))
        details = " · ".join(f"{H.detail_name(name)} {detail_text(v)}".strip() for name, v in card.details.items()
                             if name != "ci")
        interval = card_interval(card, metrics or {})
        ci_html = (f"CI {H.esc(H.format_interval(*interval))}" if interval else
                   '<span class="none">no CI computed</span>')
        warnings = ["CI includes 0: not distinguishable from 0, not a finding" if includes_zero(interval) else "",
                    best_layer_caveat(card, metrics or {}), failed.get(card.key, "")]
        warning = "; ".join(w for w in warnings if w)
        rows.append((card.label, card_value(card), "" if card.percent else card.unit, details, card.key, ci_html,
                     warning))
    return H.summary_cards(rows, sessions)


def failure_banner(failure: Mapping[str, Any] | None) -> str:
    """The banner of a run that stopped: which stage failed, with what error, and what is missing."""
    if not failure:
        return ""
    missing = ", ".join(failure.get("missing") or []) or "nothing"
    return H.notice("failed", f"This run stopped: stage {H.esc(str(failure.get('stage')))} failed. This report is "
                    f"partial.", [f"Error: <code>{H.esc(str(failure.get('error')))}</code>",
                                  f"Missing (not run or not finished): {H.esc(missing)}",
                                  "Fix the cause, then resume: <code>workbench resume &lt;this run folder&gt;</code>"])


def checks_summary(checks: list[FailedCheck]) -> str:
    """The failed-check box at the top: each check, linked to the section where it is flagged again."""
    if not checks:
        return ""
    items = [f'<a href="#{H.esc(c.stage)}">{H.esc(c.stage)}</a>: {H.esc(c.message)}' for c in checks]
    return H.notice("checks", f"{len(checks)} check{'s' if len(checks) > 1 else ''} failed", items,
                    anchor="failed-checks")


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


def _as_list(items: Iterable[Any] | None) -> Any:
    """A list of any iterable but a string (a string is left for the config check to refuse)."""
    return items if items is None or isinstance(items, (str, list)) else list(items)


def report_config(cfg: Mapping[str, Any], config: ReportConfig | Mapping[str, Any] | None = None,
                  **overrides: Any) -> ReportConfig:
    """The report's settings: ``config`` (the report stage's section), else the run's config.yaml ``report``
    section, with the non-None ``overrides`` (title, sections, headline, captions) on top; captions are merged."""
    base = to_dict(config) if config is not None else cfg.get("report")
    merged = dict(base or {}) if isinstance(base, Mapping) else base
    if isinstance(merged, dict):
        for key, value in overrides.items():
            if value is None:
                continue
            merged[key] = {**(merged.get(key) or {}), **value} if key == "captions" else value
    return parse(ReportConfig, merged, "report")


def import_plugins(cfg: Mapping[str, Any]) -> None:
    """Import the run's ``plugins`` so a report rebuilt later (``workbench-report``) gives a plugin stage its title
    and section. Best effort: a plugin that cannot be imported now still has its section, under its own name."""
    names = cfg.get("plugins") or []
    for name in [names] if isinstance(names, str) else names:
        try:
            importlib.import_module(str(name))
        except Exception:  # noqa: BLE001 - the report of a finished run must not depend on the plugin still working
            continue


def stage_title(stage: str) -> tuple[str, str]:
    """(title, lede) of a stage's section, from its registry entry; a stage not registered here gets its name."""
    if stage in STAGES:
        spec = STAGES.get(stage)
        return spec.title or H.humanize(stage), spec.lede
    return H.humanize(stage), ""


def stage_section_html(stage: str, section: Mapping[str, Any] | None, figures: list[Path],
                       captions: Mapping[str, str], checks: Iterable[FailedCheck] = ()) -> str:
    """One stage's section: its title and lede, its figures, its metrics as tables (``section`` None: the stage
    saved figures but no metrics)."""
    title, lede = stage_title(stage)
    own = (section or {}).get("captions")
    stage_captions = {**(own if isinstance(own, Mapping) else {}), **captions}  # the report config's captions win
    cards = [H.figure_html(f, _caption(f.stem, stage, stage_captions)) for f in figures]
    metrics_part = (H.metrics_html(section, stage) if section is not None else
                    '<p class="muted">This stage saved figures but recorded no metrics (interrupted?).</p>')
    warnings = "".join(f'<p class="stage-warning">Check failed: {H.esc(c.message)} (<code>{H.esc(c.key)}</code>)'
                       f"</p>" for c in checks if c.stage == stage)
    return (f'<section id="{H.esc(stage)}" class="stage"><h2>{H.esc(title)}<span class="stagekey">'
            f"{H.esc(stage)}</span></h2>" + (f'<p class="lede">{H.esc(lede)}</p>' if lede else "") + warnings
            + H.figure_grid(cards) + metrics_part + "</section>")


def references_html(refs: list[str]) -> str:
    items = "".join(f"<li>{H.esc(r)}</li>" for r in refs)
    return ('<section id="references"><h2>References</h2>'
            + (f'<ol class="refs">{items}</ol>' if refs else '<p class="muted">No stage recorded references.</p>')
            + "</section>")


def shown_stages(metrics: Mapping[str, Any], figures: Mapping[str, list[Path]]) -> list[str]:
    """Stages with metrics or figures, in pipeline order; stages not registered here after them."""
    with_metrics = ordered_stages(metrics)
    known = [s for s in stage_order() if s != "report" and (s in with_metrics or s in figures)]
    return known + [s for s in with_metrics if s not in known]


def build_run_report(run_path: str | os.PathLike, *, config: ReportConfig | Mapping[str, Any] | None = None,
                     title: str | None = None, sections: Iterable[str] | None = None,
                     headline: Iterable[Any] | None = None, captions: Mapping[str, str] | None = None,
                     output: str | os.PathLike | None = None) -> Path:
    """Write <run>/report.html (self-contained) and return its path.

    ``config``: the report settings (``ReportConfig`` or its mapping); default: the run's config.yaml ``report``
    section. ``title``, ``sections``, ``headline``, ``captions`` override it (see ``ReportConfig``).
    """
    run = require_run_dir(getattr(run_path, "path", run_path))
    metrics = read_json(run / "metrics.json")
    cfg = read_yaml(run / "config.yaml") or {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{run / 'config.yaml'} should hold a mapping (the resolved config), got {type(cfg).__name__}")
    prov = read_json(run / "provenance.json")
    import_plugins(cfg)
    rc = report_config(cfg, config, title=title, sections=_as_list(sections), headline=_as_list(headline),
                       captions=captions)
    want = (lambda name: True) if rc.sections is None else set(rc.sections).__contains__
    figures = assign_figures(figure_files(run / "figures"), stage_order() + ordered_stages(metrics))

    checks = failed_checks(metrics)
    body: list[str] = [failure_banner(read_json(run / FAILED_RUN_FILE)), checks_summary(checks)]
    nav: list[tuple[str, str]] = []
    if want("summary"):
        body.append(summary_html(select_headlines(metrics, rc.headline), metrics, checks))
    for stage in filter(want, shown_stages(metrics, figures)):
        nav.append((stage, stage_title(stage)[0]))
        body.append(stage_section_html(stage, metrics.get(stage), figures.get(stage, []), rc.captions, checks))
    if want("other") and figures.get("other"):
        cards = [H.figure_html(f, _caption(f.stem, "", rc.captions)) for f in figures["other"]]
        nav.append(("other", "Other figures"))
        body.append(f'<section id="other"><h2>Other figures</h2>{H.figure_grid(cards)}</section>')
    if want("references"):
        nav.append(("references", "References"))
        body.append(references_html(collect_references(metrics)))
    # where the numbers came from: at the end, so the first screen is the results
    if want("config"):
        nav.append(("config", "Config"))
        body.append(f'<section id="config"><h2>Configuration</h2>{config_html(run, cfg)}</section>')
    if want("provenance"):
        nav.append(("provenance", "Provenance"))
        body.append(f'<section id="provenance"><h2>Provenance</h2>{provenance_html(prov)}</section>')

    study = str(cfg.get("study") or run.parent.name or "run")
    subtitle = (f"Study <strong>{H.esc(study)}</strong> · {H.esc(run_timestamp(run, prov))} · run "
                f"<code>{H.esc(run.name)}</code>")
    out = Path(output) if output is not None else run / "report.html"
    atomic_write_text(out, H.page(rc.title or H.humanize(study), subtitle, nav, "".join(body)))
    return out
