"""HTML building blocks for self-contained reports: value formatting, tables, embedded figures, the page shell.

Reports are static HTML: inline CSS, images as base64 data URIs, no script, and a Content-Security-Policy that
forbids every network fetch, so a report opens identically offline, from an e-mail attachment, or years later.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from workbench.report.metrics import META_KEYS, flatten, interval_of, is_number, looks_like_interval_key

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".gif": "image/gif", ".webp": "image/webp"}
# Tables longer than this start folded (a <details> element: no script needed to unfold).
FOLD_ROWS = 25
FOLD_KV_ROWS = 60  # key/value lists are laid out in columns, so they stay readable longer
# Matrix tables (rows = e.g. layers, columns = metrics) are used up to this many columns; beyond, flat key/value.
MAX_MATRIX_COLUMNS = 12

esc = html.escape


# -- values ------------------------------------------------------------------------------------------------------------

def format_number(x: Any) -> str:
    """A number as a scientist would print it: 4 significant digits, thousands separators for large integers."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 1000 else str(x)
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e5 or a < 1e-3:
        return f"{x:.3e}"
    if a >= 100:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def format_interval(lo: Any, hi: Any) -> str:
    return f"[{format_number(lo)}, {format_number(hi)}]"


def sparkline(values: Sequence[float], width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of a curve (e.g. loss per epoch): the shape at a glance inside a table cell."""
    finite = [(i, float(v)) for i, v in enumerate(values) if is_number(v) and math.isfinite(v)]
    if len(finite) < 2:
        return ""
    lo = min(v for _, v in finite)
    hi = max(v for _, v in finite)
    span = (hi - lo) or 1.0
    n = len(values) - 1
    pts = " ".join(f"{2 + (width - 4) * i / n:.1f},{height - 2 - (height - 4) * (v - lo) / span:.1f}"
                   for i, v in finite)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="curve"><polyline points="{pts}" /></svg>')


def format_value(value: Any, key: str = "") -> str:
    """HTML for one metric value: numbers formatted, intervals as [lo, hi], curves as a sparkline + summary."""
    if value is None:
        return '<span class="na">—</span>'
    if isinstance(value, bool):
        return '<span class="ok">✓ yes</span>' if value else '<span class="bad">✗ no</span>'
    if is_number(value):
        return f'<span class="num">{esc(format_number(value))}</span>'
    if isinstance(value, tuple) and len(value) == 2 and all(is_number(v) for v in value):
        return f'<span class="num">{esc(format_interval(*value))}</span>'
    if isinstance(value, Mapping):
        interval = interval_of(value)
        if interval is not None:
            return f'<span class="num">{esc(format_interval(*interval))}</span>'
        if not value:
            return '<span class="na">{}</span>'
        return f"<code>{esc(_compact_json(value))}</code>"
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="na">[]</span>'
        if all(is_number(v) for v in value):
            if len(value) == 2 and looks_like_interval_key(key):
                return f'<span class="num">{esc(format_interval(*value))}</span>'
            if len(value) <= 6:
                return f'<span class="num">[{", ".join(esc(format_number(v)) for v in value)}]</span>'
            finite = [float(v) for v in value if math.isfinite(float(v))]
            summary = (f"{format_number(value[0])} → {format_number(value[-1])}"
                       f" (n={len(value)}, min {format_number(min(finite))}, max {format_number(max(finite))})"
                       if finite else f"n={len(value)}, no finite values")
            return f'{sparkline(value)}<span class="num small">{esc(summary)}</span>'
        if all(isinstance(v, str) for v in value):
            return esc(", ".join(value))
        nested = _format_nested(value)
        if nested is not None:
            return f'<span class="num">{esc(nested if len(nested) <= 300 else nested[:299] + "…")}</span>'
        return f"<code>{esc(_compact_json(value))}</code>"
    text = str(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40,64}(-dirty)?", text):
        return f'<code title="{esc(text)}">{esc(text[:12])}…</code>'
    return esc(text)


def _format_nested(value: Any) -> str | None:
    """Nested lists of numbers (e.g. per-size CIs) with every number formatted; None if anything is not a number."""
    if is_number(value):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        parts = [_format_nested(v) for v in value]
        return None if any(p is None for p in parts) else "[" + ", ".join(parts) + "]"
    return None


def _compact_json(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- tables ------------------------------------------------------------------------------------------------------------

def _fold(table: str, n_rows: int, title: str, limit: int = FOLD_ROWS) -> str:
    if n_rows <= limit:
        return table
    return f'<details class="fold"><summary>{esc(title)} ({n_rows} rows)</summary>{table}</details>'


def key_value_table(rows: Iterable[tuple[str, Any]], title: str = "values", raw_html: bool = False) -> str:
    """Key/value rows; a long list is laid out in side-by-side columns so it reads like a table, not a scroll."""
    rows = list(rows)
    if not rows:
        return ""
    n_cols = 1 if len(rows) <= 10 else 2 if len(rows) <= 40 else 3
    per_col = math.ceil(len(rows) / n_cols)
    tables = []
    for start in range(0, len(rows), per_col):
        body = "".join(
            f'<tr><th scope="row"><code>{esc(str(k))}</code></th>'
            f"<td>{v if raw_html else format_value(v, str(k))}</td></tr>"
            for k, v in rows[start:start + per_col]
        )
        tables.append(f'<table class="kv"><tbody>{body}</tbody></table>')
    return _fold(f'<div class="kvcols">{"".join(tables)}</div>', len(rows), title, limit=FOLD_KV_ROWS)


def matrix_table(rows: Mapping[str, Mapping[str, Any]], title: str, row_header: str = "") -> str:
    """Rows = the keys of `rows` (e.g. layers), columns = the union of their flattened keys."""
    flat_rows = {str(name): dict(flatten(row)) for name, row in rows.items()}
    columns: list[str] = []
    for row in flat_rows.values():
        columns += [c for c in row if c not in columns]
    head = f'<th scope="col">{esc(row_header)}</th>' + "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    body = "".join(
        f'<tr><th scope="row">{esc(name)}</th>'
        + "".join(f"<td>{format_value(row[c], c) if c in row else ''}</td>" for c in columns) + "</tr>"
        for name, row in flat_rows.items()
    )
    table = f'<table class="matrix"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return _fold(table, len(flat_rows), title)


def records_table(records: Sequence[Mapping[str, Any]], title: str) -> str:
    flat = [dict(flatten(r)) for r in records]
    columns: list[str] = []
    for row in flat:
        columns += [c for c in row if c not in columns]
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{format_value(r[c], c) if c in r else ''}</td>" for c in columns)
                   + "</tr>" for r in flat)
    return _fold(f'<table class="matrix"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
                 len(flat), title)


def _is_leafy(value: Any) -> bool:
    return not isinstance(value, Mapping) or interval_of(value) is not None


def _is_record_dict(value: Any) -> bool:
    """A dict of comparable records (e.g. layer -> {rsa, ci, p}) that reads best as a matrix table."""
    if not isinstance(value, Mapping) or len(value) < 2:
        return False
    rows = list(value.values())
    if not all(isinstance(r, Mapping) and r and interval_of(r) is None for r in rows):
        return False
    # rows made only of sub-dicts are one level too high (e.g. region -> layer -> record): go deeper instead
    if any(sum(_is_leafy(v) for v in r.values()) * 2 < len(r) for r in rows):
        return False
    columns: set[str] = set()
    flats = []
    for r in rows:
        keys = [k for k, _ in flatten(r)]
        flats.append(set(keys))
        columns.update(keys)
    if len(columns) > MAX_MATRIX_COLUMNS:
        return False
    return all(len(f) * 2 >= len(columns) for f in flats)


def _is_record_list(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= 1 and all(isinstance(r, Mapping) and r for r in value)
            and len({k for r in value for k, _ in flatten(r)}) <= MAX_MATRIX_COLUMNS)


def metrics_html(section: Mapping[str, Any], stage: str) -> str:
    """A stage's metrics as tables: scalars in one key/value table (dotted keys), record-like parts (per layer,
    per check) as matrix tables under their key."""
    scalars: list[tuple[str, Any]] = []
    tables: list[tuple[str, str]] = []

    def walk(obj: Mapping[str, Any], path: str) -> None:
        for k, v in obj.items():
            if not path and k in META_KEYS:
                continue
            key = f"{path}.{k}" if path else str(k)
            if _is_record_dict(v):
                tables.append((key, matrix_table(v, f"{stage}.{key}")))
            elif _is_record_list(v):
                tables.append((key, records_table(v, f"{stage}.{key}")))
            elif isinstance(v, Mapping) and v and interval_of(v) is None:
                walk(v, key)
            else:
                scalars.append((key, v))

    walk(section, "")
    parts = []
    if scalars:
        parts.append(key_value_table(scalars, f"{stage} metrics"))
    for key, table in tables:
        parts.append(f'<h4 class="tabletitle"><code>{esc(key)}</code></h4>{table}')
    if not parts:
        return '<p class="muted">No metrics recorded.</p>'
    return '<div class="metrics">' + "".join(parts) + "</div>"


# -- figures -----------------------------------------------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG header, None when `data` is not a PNG."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


_TOKENS = {"rsa": "RSA", "rdm": "RDM", "rdms": "RDMs", "v1": "V1", "v2": "V2", "v4": "V4", "it": "IT", "hit": "hIT",
           "mit": "mIT", "cka": "CKA", "pls": "PLS", "pca": "PCA", "roc": "ROC", "auc": "AUC", "acc": "accuracy",
           "nc": "noise ceiling", "vs": "vs", "cifar10": "CIFAR-10", "ig": "integrated gradients", "shap": "SHAP",
           "gradcam": "Grad-CAM", "lr": "learning rate", "ci": "CI", "id": "ID"}


def humanize(name: str) -> str:
    """'align_rsa_layer_profile' -> 'RSA layer profile' style captions from file stems."""
    words = [w for w in re.split(r"[_\-\s]+", name) if w]
    words = [_TOKENS.get(w.lower(), w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else name


def detail_name(name: str) -> str:
    """'noise_ceiling' -> 'noise ceiling', 'ci' -> 'CI': the name of a detail under a summary card, mid-sentence."""
    return " ".join(_TOKENS.get(w.lower(), w) for w in re.split(r"[_\s]+", str(name)) if w)


def figure_html(path: Path, caption: str, wide: bool | None = None) -> str:
    """A figure card with the image embedded as a data URI (wide figures span the grid's full width)."""
    data = path.read_bytes()
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    size = png_size(data) if mime == "image/png" else None
    if mime == "image/png" and size is None:
        # A truncated or mislabelled file must not show as a broken image in a talk: say what is wrong instead.
        return (f'<figure class="fig missing"><div class="broken">{esc(path.name)} is not a valid PNG '
                f'({len(data)} bytes); re-run the stage that wrote it.</div>'
                f"<figcaption>{esc(caption)}</figcaption></figure>")
    if wide is None:
        wide = size is not None and size[0] > 2.5 * size[1]
    # fill the card, but never upscale past the pixels the figure was saved with (blurry in a talk)
    dims = f' width="{size[0]}" height="{size[1]}" style="max-width:min(100%,{size[0]}px)"' if size else ""
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure class="fig{" wide" if wide else ""}" id="fig-{esc(path.stem)}">'
            f'<img src="data:{mime};base64,{b64}" alt="{esc(caption)}"{dims}>'
            f'<figcaption><span class="figname">{esc(path.stem)}</span> {esc(caption)}</figcaption></figure>')


def figure_grid(cards: Sequence[str]) -> str:
    return f'<div class="figgrid">{"".join(cards)}</div>' if cards else ""


# -- page --------------------------------------------------------------------------------------------------------------

CSS = """
:root{--ink:#1d2330;--muted:#5f6b7a;--line:#e3e7ee;--bg:#f6f7fa;--card:#fff;--accent:#2f5d9e;--accent2:#e8eef8;
--ok:#1b7f4b;--bad:#b3261e}
*{box-sizing:border-box}
html{font-size:15px}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.5;
font-family:"Inter","Source Sans 3","Segoe UI",-apple-system,"Helvetica Neue",Arial,sans-serif;
font-feature-settings:"tnum" 1}
code,pre,.mono{font-family:"JetBrains Mono","SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;
font-size:.86em}
header.top{background:linear-gradient(120deg,#1f3b63,#2f5d9e);color:#fff;padding:2.2rem 3rem 1.6rem}
header.top h1{margin:0;font-size:2.1rem;font-weight:650;letter-spacing:-.01em}
header.top .sub{margin-top:.35rem;opacity:.85;font-size:1rem}
header.top .sub code{background:rgba(255,255,255,.14);padding:.05rem .35rem;border-radius:4px}
nav.toc{position:sticky;top:0;z-index:2;background:rgba(255,255,255,.96);border-bottom:1px solid var(--line);
padding:.55rem 3rem;display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;font-size:.92rem}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a:hover{text-decoration:underline}
main{max-width:1500px;margin:0 auto;padding:1.5rem 3rem 3rem}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1.3rem 1.6rem 1.5rem;
margin:0 0 1.4rem;box-shadow:0 1px 2px rgba(20,30,50,.04)}
section h2{margin:0 0 .2rem;font-size:1.45rem;font-weight:620}
section h2 .stagekey{font-size:.8rem;color:var(--muted);font-weight:400;margin-left:.6rem}
section p.lede{margin:.1rem 0 1rem;color:var(--muted)}
h3{font-size:1.05rem;margin:1.2rem 0 .5rem;color:var(--ink)}
h4.tabletitle{font-size:.95rem;margin:1rem 0 .35rem;font-weight:600}
.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:1rem;margin:0 0 1.4rem}
.session{grid-column:1/-1;border:1px dashed #c4ccd8;border-radius:10px;padding:.7rem .9rem}
.session-title{font-size:.86rem;color:var(--muted);margin:0 0 .6rem}
.session-cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:1rem}
.card{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:10px;
padding:.9rem 1.1rem}
.card .label{font-size:.86rem;font-weight:600;letter-spacing:.01em;color:var(--muted)}
.card .value{font-size:2rem;font-weight:650;line-height:1.2;margin:.15rem 0}
.card .value .unit{font-size:.85rem;font-weight:400;color:var(--muted);margin-left:.4rem}
.card .detail{font-size:.85rem;color:var(--muted)}
.card .ci{font-size:.9rem}
.card .ci .none{color:var(--muted);font-style:italic}
.card.flagged{border-left-color:#c0392b}
.card .warning,.notice.checks li,.stage-warning{color:#a0281b}
.notice{border:1px solid #e2b4ae;background:#fdf1ef;border-radius:10px;padding:.7rem 1rem;margin:0 0 1rem}
.notice.failed{border-color:#c0392b;background:#fbe3df}
.notice ul{margin:.3rem 0 0 1.1rem;padding:0}
.stage-warning{border-left:4px solid #c0392b;padding:.3rem .8rem;margin:.5rem 0;background:#fdf1ef}
.card .key{font-size:.72rem;color:#8a95a5;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.provgrid{display:flex;flex-wrap:wrap;gap:0 2.5rem;align-items:flex-start}
.provgrid h3{margin-top:.2rem}
.figgrid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,460px),1fr));gap:1.1rem;
margin:.6rem 0 1rem}
figure.fig{margin:0;border:1px solid var(--line);border-radius:8px;padding:.7rem;background:#fff;
display:flex;flex-direction:column}
figure.fig.wide{grid-column:1/-1}
figure.fig img{width:100%;max-width:100%;height:auto;display:block;margin:auto}
figure.fig figcaption{font-size:.88rem;color:var(--muted);margin-top:.5rem}
figure.fig .figname{font-family:Menlo,Consolas,monospace;font-size:.75rem;color:#8a95a5;margin-right:.4rem}
.broken{padding:2rem 1rem;background:#fff4f2;color:var(--bad);border-radius:6px;font-size:.9rem}
.kvcols{display:flex;flex-wrap:wrap;gap:0 2.2rem;align-items:flex-start}
table{border-collapse:collapse;font-size:.88rem;margin:.2rem 0 .8rem;max-width:100%}
.metrics{overflow-x:auto}
table th,table td{padding:.28rem .7rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.matrix thead th{background:var(--accent2);font-weight:600;white-space:nowrap}
table.matrix tbody th{font-weight:600;white-space:nowrap}
table.kv th{font-weight:400;color:#39465a;white-space:nowrap}
table tbody tr:nth-child(even){background:#fafbfd}
td .num,.num{font-variant-numeric:tabular-nums}
.small{font-size:.8rem;color:var(--muted)}
svg.spark{vertical-align:middle;margin-right:.5rem}
svg.spark polyline{fill:none;stroke:var(--accent);stroke-width:1.4}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
.na,.muted{color:var(--muted)}
details.fold>summary,details.block>summary{cursor:pointer;color:var(--accent);font-weight:500;margin:.3rem 0}
pre.config{background:#f3f5f9;border:1px solid var(--line);border-radius:6px;padding:.9rem 1rem;overflow:auto;
max-height:40rem;font-size:.82rem;line-height:1.45}
ol.refs li{margin:.25rem 0}
a{color:var(--accent)}
footer{color:var(--muted);font-size:.82rem;text-align:center;padding:0 0 2rem}
@media print{nav.toc{display:none}body{background:#fff}section{break-inside:avoid-page;box-shadow:none}
header.top{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""

# No script, no external fetch: anything but inline styles and data: images is blocked by the browser itself.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def summary_cards(cards: Sequence[tuple], sessions: Sequence[str] | None = None) -> str:
    """(label, value, unit, detail, source key[, CI html, warning]) cards for the headline numbers. A card with a
    warning is drawn as flagged (class "flagged"). ``sessions``: per card, the data set / recording session its
    number comes from ("" for none); when the cards come from more than one session, each session's cards sit in a
    box of their own, after the cards of no session, so that numbers of different sessions never stand side by side
    as if comparable."""
    if not cards:
        return ""
    items = [_card(*card) for card in cards]
    of = list(sessions) if sessions is not None else [""] * len(items)
    named = list(dict.fromkeys(s for s in of if s))
    if len(named) < 2:
        body = "".join(items)
    else:
        body = "".join(item for item, s in zip(items, of) if not s) + "".join(
            _session_box(name, [item for item, s in zip(items, of) if s == name]) for name in named)
    return f'<div class="summary" id="summary">{body}</div>'


def _card(label: str, value: str, unit: str, detail: str, key: str, *extra: str) -> str:
    ci_html, warning = (list(extra) + ["", ""])[:2]
    return (f'<div class="card{" flagged" if warning else ""}"><div class="label">{esc(label)}</div>'
            f'<div class="value num">{esc(value)}' + (f'<span class="unit">{esc(unit)}</span>' if unit else "")
            + "</div>" + (f'<div class="ci">{ci_html}</div>' if ci_html else "")
            + (f'<div class="warning">{esc(warning)}</div>' if warning else "")
            + (f'<div class="detail">{esc(detail)}</div>' if detail else "")
            + (f'<div class="key" title="{esc(key)}"><code>{esc(key)}</code></div>' if key else "") + "</div>")


def _session_box(session: str, items: Sequence[str]) -> str:
    return (f'<div class="session"><div class="session-title">Data set / session <code>{esc(session)}</code> '
            f'(compare within a session; another session has other neuroids and another ceiling)</div>'
            f'<div class="session-cards">{"".join(items)}</div></div>')


def notice(kind: str, title: str, items: Sequence[str], anchor: str = "") -> str:
    """A coloured box above the content: ``kind`` "failed" (a stage stopped the run) or "checks" (failed checks)."""
    lis = "".join(f"<li>{item}</li>" for item in items)
    return (f'<div class="notice {esc(kind)}"' + (f' id="{esc(anchor)}"' if anchor else "") + f'><strong>{title}'
            f"</strong>" + (f"<ul>{lis}</ul>" if lis else "") + "</div>")


def page(title: str, subtitle_html: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    from workbench import __version__

    nav_html = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><div class="sub">{subtitle_html}</div></header>'
        + (f'<nav class="toc">{nav_html}</nav>' if nav else "")
        + f"<main>{body}</main>"
        f"<footer>Generated by workbench {esc(__version__)} on {generated}. "
        "Self-contained: figures are embedded, nothing is fetched from the network.</footer>"
        "</body></html>\n"
    )
