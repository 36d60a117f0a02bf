"""The report of a sweep (a Hydra multirun directory): metrics.csv, comparison figures, report.html.

    <sweep>/multirun.yaml                 Hydra's record of the sweep (which overrides were swept)
    <sweep>/<job>/[<run>/]                one run directory per job: config.yaml, metrics.json, .hydra/overrides.yaml
    -> <sweep>/metrics.csv                one row per run: swept parameters + every numeric leaf of metrics.json +
                                          one column <stage>.headline.<name> per numeric stage headline
    -> <sweep>/figures/sweep_<param>.{png,pdf}   headline metrics against each swept parameter, seeds as error bars
    -> <sweep>/report.html                the figures, a table of runs linking to each run's own report.html
    -> <sweep>/hallmarks_*.csv, hallmarks.json, figures/sweep_hallmarks_maps.*   when runs mapped topography: the
                                          topographic hallmarks per spatial weight over seeds
                                          (workbench.report.hallmarks_sweep)
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.report import html as H
from workbench.report.discovery import (find_run_dirs, not_a_run_message, read_json, read_yaml)
from workbench.config import ConfigError
from workbench.report.metrics import (Card, flatten, headline_card, headline_leaves, is_number, numeric_leaves,
                                      ordered_stages, stage_headlines)
from workbench.run import NotARunError
from workbench.utils import atomic_write_bytes, atomic_write_text

SEED_KEY = "seed"
MAX_PANELS = 8  # headline metrics per comparison figure
# Config keys that differ between runs of one sweep without being swept (paths, timestamps).
_NOT_PARAMS = re.compile(r"^(hydra\b|run_dir$|sweep_dir$|results_root$|.*\.(dir|path|output_dir)$)")
_SWEEP_SYNTAX = re.compile(r"^(range|choice|interval|glob|tag|shuffle|sort)\(")


@dataclass
class SweepTable:
    """The runs of a sweep: `frame` has one row per run (columns: run, stages, swept params, metric leaves)."""

    root: Path
    runs: list[Path]
    params: list[str]
    metric_columns: list[str]
    frame: pd.DataFrame
    metrics: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def rel(self, run: Path) -> str:
        return run.relative_to(self.root).as_posix()


def _parse_override(item: str) -> tuple[str, Any] | None:
    """'model.topography.weight=0.5' -> ('model.topography.weight', 0.5); deletions (~key) -> None."""
    item = str(item).strip()
    if not item or item.startswith("~") or "=" not in item:
        return None
    key, _, raw = item.partition("=")
    key = key.lstrip("+")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (list, dict)):
        value = raw  # a list-valued override is one categorical value of the sweep
    return key, value


def _split_top_level_commas(raw: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def swept_keys_from_multirun(sweep_dir: Path) -> list[str]:
    """Keys that multirun.yaml's task overrides sweep (`key=a,b`, `key=range(...)`), in command-line order."""
    data = read_yaml(sweep_dir / "multirun.yaml")
    try:
        task = data["hydra"]["overrides"]["task"]
    except (TypeError, KeyError):
        return []
    keys = []
    for item in task or []:
        key, _, raw = str(item).partition("=")
        if _SWEEP_SYNTAX.match(raw) or len(_split_top_level_commas(raw)) > 1:
            keys.append(key.lstrip("+"))
    return keys


def _run_overrides(run: Path, root: Path) -> dict[str, Any] | None:
    """The Hydra overrides of the job that wrote `run` (in the run dir, or in the job dir holding it)."""
    folder = run
    while True:
        path = folder / ".hydra" / "overrides.yaml"
        if path.is_file():
            items = read_yaml(path) or []
            return dict(kv for kv in (_parse_override(i) for i in items) if kv is not None)
        if folder == root or folder.parent == folder or root not in folder.parents:
            return None
        folder = folder.parent


def _config_lookup(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.replace("/", ".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if not isinstance(node, (Mapping, list)) else str(node)


def _differs(values: list[Any]) -> bool:
    return len({repr(v) for v in values}) > 1


def sweep_table(sweep_dir: str | os.PathLike) -> SweepTable:
    """Collect the runs of a sweep directory into a table (no files written)."""
    root = Path(sweep_dir)
    runs = find_run_dirs(root, max_depth=2) if root.is_dir() else []
    if not runs:
        raise NotARunError(not_a_run_message(root, "a sweep directory"))
    configs = [read_yaml(r / "config.yaml") or {} for r in runs]
    metrics = [read_json(r / "metrics.json") for r in runs]
    overrides = [_run_overrides(r, root) for r in runs]

    declared = swept_keys_from_multirun(root)
    if any(o is not None for o in overrides):
        keys: list[str] = list(declared)
        for o in overrides:
            keys += [k for k in (o or {}) if k not in keys]
        values = {k: [(o or {}).get(k, _config_lookup(c, k)) for o, c in zip(overrides, configs)] for k in keys}
        params = [k for k in keys if (k in declared or _differs(values[k])) and not _NOT_PARAMS.match(k)]
    else:
        # No Hydra bookkeeping: the swept parameters are the config leaves that differ between runs.
        flat = [dict(flatten(c)) for c in configs]
        keys = []
        for f in flat:
            keys += [k for k in f if k not in keys]
        values = {k: [f.get(k) for f in flat] for k in keys}
        params = [k for k in keys if not _NOT_PARAMS.match(k) and _differs(values[k])]
    params = [p for p in params if p != SEED_KEY] + ([SEED_KEY] if SEED_KEY in params else [])

    leaves = [{**numeric_leaves(m), **headline_leaves(m)} for m in metrics]
    metric_columns: list[str] = []
    seen: set[str] = set()
    for lv in leaves:
        for k in lv:
            if k not in seen:
                seen.add(k)
                metric_columns.append(k)
    rows = []
    for run, m, lv, i in zip(runs, metrics, leaves, range(len(runs))):
        row: dict[str, Any] = {"run": run.relative_to(root).as_posix(),
                               "completed_stages": "+".join(ordered_stages(m))}
        for p in params:
            v = values[p][i]
            row[p] = v if (is_number(v) or v is None) else str(v)
        for k in metric_columns:
            col = k if k not in row else f"metrics.{k}"
            row[col] = lv.get(k, np.nan)
        rows.append(row)
    metric_columns = [k if k not in params and k not in ("run", "completed_stages") else f"metrics.{k}"
                      for k in metric_columns]
    frame = pd.DataFrame(rows, columns=["run", "completed_stages", *params, *metric_columns])
    return SweepTable(root, runs, params, metric_columns, frame, metrics)


# -- comparison figures -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadlineColumn:
    """A headline metric of the sweep: its card label, its metrics.csv column, and how to show its numbers."""

    label: str
    column: str
    percent: bool = False


def _column_of(card: Card) -> str:
    """A stage's headline is compared by name (``<stage>.headline.<name>``, the same in every run even when its key
    names another best layer); a card the config asked for by key, by that key."""
    if card.source:
        stage, name = card.source.split(".", 1)
        return f"{stage}.headline.{name}"
    return card.key


def _cards_per_entry(table: SweepTable, entries: list[Any] | None) -> list[list[Card]]:
    """For each headline entry (each stage headline when ``entries`` is None), its card in every run that has it.
    An entry no run resolves is a ConfigError (a typo); one that only some runs lack (a failed run) is not."""
    if entries is None:
        return [[card] for m in table.metrics for card in stage_headlines(m)]
    per_entry = []
    for i, entry in enumerate(entries):
        cards, errors = [], []
        for m in table.metrics:
            try:
                cards.append(headline_card(m, entry, f"headline[{i}]"))
            except ConfigError as err:
                errors.append(str(err))
        if not cards and errors:
            raise ConfigError(errors[0])
        per_entry.append(cards)
    return per_entry


def headline_columns(table: SweepTable, entries: list[Any] | None = None) -> list[HeadlineColumn]:
    """The sweep's headline metrics: every numeric stage headline any run wrote (pipeline order), or the
    ``report.headline``-style ``entries`` (``"<stage>.<name>"`` or ``{label, key}``) in their order."""
    from workbench.stages import stage_order

    found: dict[str, HeadlineColumn] = {}
    for cards in _cards_per_entry(table, entries):
        for card in cards:
            column = _column_of(card)
            if column in table.frame.columns and column not in found:
                found[column] = HeadlineColumn(card.label, column, card.percent)
    columns = list(found.values())
    if entries is None:  # runs that stopped early list fewer stages: put every column back in pipeline order
        rank = {stage: i for i, stage in enumerate(stage_order())}
        columns.sort(key=lambda c: rank.get(c.column.split(".", 1)[0], len(rank)))
    labels = [c.label for c in columns]
    columns = [c if labels.count(c.label) == 1 else HeadlineColumn(f"{c.label} ({c.column})", c.column, c.percent)
               for c in columns]
    if not columns:
        # no headline: the numeric columns that vary across runs, so the figure still says something
        varying = [c for c in table.metric_columns if table.frame[c].nunique(dropna=True) > 1]
        columns = [HeadlineColumn(c, c) for c in varying[:4]]
    return columns


def _is_numeric_series(s: pd.Series) -> bool:
    return all(is_number(v) for v in s.dropna()) and s.notna().any()


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if is_number(v) else (1, 0.0, str(v))


def aggregate(table: SweepTable, x: str, y: str) -> pd.DataFrame:
    """Mean, s.d. and n of `y` over seeds (and any parameter not in `x` or the grouping) per value of `x` and of
    the other non-seed parameters: columns group, x, mean, sd, n."""
    others = [p for p in table.params if p not in (x, SEED_KEY)]
    df = table.frame[[x, y, *others]].copy()
    df = df[df[y].notna() & df[x].notna()]
    df["group"] = (df[others].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
                   if others else "")
    out = (df.groupby(["group", x], dropna=False, sort=False)[y]
           .agg(mean="mean", sd=lambda s: float(np.std(s, ddof=1)) if len(s) > 1 else 0.0, n="count")
           .reset_index())
    return out


def comparison_figure(table: SweepTable, x: str | None, columns: Sequence[HeadlineColumn]):
    """One panel per headline metric (the first MAX_PANELS) against parameter `x` (None: across seeds only),
    mean ± s.d. over seeds with single runs as dots."""
    from matplotlib.figure import Figure

    columns = list(columns)[:MAX_PANELS]
    ncols = min(len(columns), 4)
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    frame = table.frame
    for ax, headline in zip(axes, columns):
        label, col = headline.label, headline.column
        if x is None:
            vals = frame[col].dropna().to_numpy(float)
            ax.scatter(np.zeros_like(vals) + np.linspace(-0.08, 0.08, len(vals)), vals, s=18, alpha=0.5,
                       color="0.4", zorder=2)
            if len(vals):
                ax.errorbar([0], [vals.mean()], yerr=[vals.std(ddof=1) if len(vals) > 1 else 0], fmt="o",
                            color="C0", capsize=4, ms=7, zorder=3)
            ax.set_xticks([0], [f"all runs (n={len(vals)})"])
            ax.set_xlim(-0.6, 0.6)
        else:
            agg = aggregate(table, x, col)
            numeric = _is_numeric_series(frame[x])
            categories = sorted(frame[x].dropna().unique().tolist(), key=_sort_key)
            pos = (lambda v: float(v)) if numeric else (lambda v: categories.index(v))
            for i, (group, g) in enumerate(agg.groupby("group", sort=False)):
                g = g.sort_values(x, key=lambda s: s.map(_sort_key))
                xs = np.array([pos(v) for v in g[x]])
                ax.errorbar(xs, g["mean"], yerr=g["sd"], fmt="-o", color=f"C{i}", capsize=4, ms=5, lw=1.5,
                            label=group or None, zorder=3)
            runs = frame[[x, col]].dropna()
            ax.scatter([pos(v) for v in runs[x]], runs[col], s=12, color="0.35", alpha=0.45, zorder=2,
                       label="single runs")
            if not numeric:
                ax.set_xticks(range(len(categories)), [_short(str(c)) for c in categories], rotation=20,
                              ha="right")
            ax.set_xlabel(x)
        _honest_ylim(ax, frame[col].dropna().to_numpy(float))
        ax.set_title(label, fontsize=10)
        # no y label: the title names the metric (a dotted metrics path is no axis title; it is in the runs table)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if len(names) > 1:
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), fontsize=8, frameon=False)
    return fig


def _honest_ylim(ax, values: np.ndarray) -> None:
    """Keep 0 on the y axis of a metric whose values share a sign: matplotlib's auto-limits would zoom onto the
    data and draw a 0.001 difference as a cliff."""
    if not len(values):
        return
    lo, hi = ax.get_ylim()
    if values.min() >= 0:
        ax.set_ylim(0, hi)
    elif values.max() <= 0:
        ax.set_ylim(lo, 0)


def seed_spread(table: SweepTable, column: str) -> float | None:
    """The s.d. over seeds of ``column`` within runs that share every other swept value, pooled over those groups
    (None without two seeds of one setting): the yardstick for a difference between two runs."""
    if SEED_KEY not in table.params:
        return None
    others = [p for p in table.params if p != SEED_KEY]
    frame = table.frame[[*others, column]].dropna(subset=[column])
    groups = frame.groupby(others, dropna=False)[column] if others else [(None, frame[column])]
    variances = [(len(g) - 1, float(np.var(g, ddof=1))) for _, g in groups if len(g) > 1]
    dof = sum(d for d, _ in variances)
    return math.sqrt(sum(d * v for d, v in variances) / dof) if dof else None


def run_vs_run_html(table: SweepTable, columns: Sequence[HeadlineColumn]) -> str:
    """Each run against the first: the swept values it changes and the change of each headline metric, beside the
    seed spread of that metric (a change within the seed spread is not a difference the sweep can show)."""
    if len(table.runs) < 2 or not columns:
        return '<p class="muted">One run: nothing to compare.</p>'
    frame = table.frame
    ref = frame.iloc[0]
    spreads = {c.column: seed_spread(table, c.column) for c in columns}
    head = ["run", f"differs from {ref['run']} in"] + [
        f"Δ {c.label} (seed s.d. {H.format_number(spreads[c.column]) if spreads[c.column] is not None else 'n/a'})"
        for c in columns]
    rows = []
    for _, r in frame.iloc[1:].iterrows():
        changed = [f"{p}: {_param_text(ref[p])} → {_param_text(r[p])}" for p in table.params
                   if str(ref[p]) != str(r[p])]
        cells = [H.esc(r["run"]), H.esc("; ".join(changed) or "nothing swept")]
        for c in columns:
            a, b = ref[c.column], r[c.column]
            delta = b - a if is_number(a) and is_number(b) and not (_isnan(a) or _isnan(b)) else None
            spread = spreads[c.column]
            within = delta is not None and spread is not None and abs(delta) <= 2 * spread
            cells.append("—" if delta is None else H.esc(f"{delta:+.3g}") + (
                ' <span class="na">(within 2 s.d. of seeds)</span>' if within else ""))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<div class="metrics"><table class="matrix"><thead><tr>'
            + "".join(f'<th scope="col">{H.esc(h)}</th>' for h in head)
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _save(fig, path_stem: Path) -> Path:
    png = None
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        out = atomic_write_bytes(path_stem.parent / f"{path_stem.name}.{fmt}", buf.getvalue())
        png = png or out
    return png


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", name).strip("-") or "param"


# -- the report ---------------------------------------------------------------------------------------------------

def _best_cards(table: SweepTable, columns: Sequence[HeadlineColumn]) -> list[tuple[str, str, str, str, str]]:
    """A card per headline metric: its best mean over seeds and where in the sweep it was reached."""
    cards = [("Runs", str(len(table.runs)), "",
              ", ".join(f"{p}: {len(table.frame[p].dropna().unique())} values" for p in table.params)
              or "no swept parameter found", "")]
    group_by = [p for p in table.params if p != SEED_KEY]
    lower_is_better = re.compile(r"loss|error|drop", re.I)
    for headline in columns:
        label, col = headline.label, headline.column
        df = table.frame[[*group_by, col]].dropna(subset=[col])
        if df.empty:
            continue
        if group_by:
            means = df.groupby(group_by, dropna=False)[col].agg(["mean", "count"]).reset_index()
        else:
            means = pd.DataFrame({"mean": [df[col].mean()], "count": [len(df)]})
        best = means.loc[means["mean"].idxmin() if lower_is_better.search(label) else means["mean"].idxmax()]
        where = ", ".join(f"{p}={_param_text(best[p])}" for p in group_by)
        detail = f"best at {where} (mean of {int(best['count'])} runs)" if where else f"mean of {int(best['count'])}"
        value = best["mean"]
        text = f"{100 * value:.1f} %" if headline.percent and 0 <= value <= 1 else H.format_number(value)
        cards.append((label, text, "", detail, col))
    return cards


def _needs_report(run: Path) -> bool:
    report = run / "report.html"
    if not report.exists():
        return True
    newest = max((run / m).stat().st_mtime for m in ("metrics.json", "config.yaml") if (run / m).exists())
    return report.stat().st_mtime < newest


def _comparison_figures(table: SweepTable, columns: Sequence[HeadlineColumn]) -> list[str]:
    """figures/sweep_<param>.{png,pdf}, one per swept parameter (seeds: error bars), as embedded figure cards."""
    cards: list[str] = []
    if not columns:
        return cards
    n_seeds = table.frame[SEED_KEY].nunique() if SEED_KEY in table.params else 1
    for x in [p for p in table.params if p != SEED_KEY] or [None]:
        png = _save(comparison_figure(table, x, columns), table.root / "figures" / f"sweep_{_safe(x or 'seeds')}")
        what = f"against {x}" if x else "across runs"
        caption = (f"Headline metrics {what}: mean ± s.d. over seeds ({n_seeds} seed"
                   f"{'s' if n_seeds != 1 else ''}); grey dots are single runs.")
        cards.append(H.figure_html(png, caption, wide=True))
    return cards


def _run_links(table: SweepTable, run_reports: bool) -> dict[str, str]:
    """run -> relative link to its report.html (built first when missing or stale, if ``run_reports``)."""
    from workbench.report.run_report import build_run_report

    if run_reports:
        from tqdm.auto import tqdm

        for run in tqdm([r for r in table.runs if _needs_report(r)], desc="run reports", disable=None):
            build_run_report(run)
    return {table.rel(run): quote(f"{table.rel(run)}/report.html", safe="/=,+:@")
            for run in table.runs if (run / "report.html").exists()}


def _runs_table(table: SweepTable, columns: Sequence[HeadlineColumn], links: Mapping[str, str]) -> str:
    """The table of runs: parameters, headline metrics, completed stages, a link to the run's report."""
    head = ["run", *table.params, *(c.label for c in columns), "completed stages"]
    rows = []
    for _, r in table.frame.iterrows():
        cells = [f'<a href="{H.esc(links[r["run"]])}">{H.esc(r["run"])}</a>' if r["run"] in links
                 else H.esc(r["run"])]
        cells += [H.format_value(None if _isnan(r[p]) else r[p], p) for p in table.params]
        cells += [H.format_value(None if _isnan(r[c.column]) else r[c.column], c.column) for c in columns]
        done = r["completed_stages"]
        cells.append(H.esc(done.replace("+", " › ")) if done else '<span class="na">none</span>')
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<div class="metrics"><table class="matrix"><thead><tr>'
            + "".join(f'<th scope="col">{H.esc(h)}</th>' for h in head)
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def build_sweep_report(sweep_dir: str | os.PathLike, *, title: str | None = None,
                       headline: Iterable[Any] | None = None, run_reports: bool = True) -> Path:
    """Write <sweep>/metrics.csv, <sweep>/figures/sweep_*.{png,pdf} and <sweep>/report.html; return the report.

    headline: the metrics to compare, as in ``report.headline`` (``"<stage>.<name>"`` or ``{label, key}``); None:
    every numeric stage headline. run_reports: also (re)build each run's own report.html when it is missing or
    older than its metrics, so the links from the sweep report work.
    """
    table = sweep_table(sweep_dir)
    root = table.root
    atomic_write_text(root / "metrics.csv", table.frame.to_csv(index=False))
    columns = headline_columns(table, None if headline is None else list(headline))
    figure_cards = _comparison_figures(table, columns)
    runs_table = _runs_table(table, columns, _run_links(table, run_reports))
    hallmarks = _hallmarks_section(table)

    multirun = root / "multirun.yaml"
    sweep_cfg = (f'<details class="block"><summary>multirun.yaml</summary><pre class="config">'
                 f"{H.esc(multirun.read_text())}</pre></details>" if multirun.is_file() else
                 '<p class="muted">No multirun.yaml (not a Hydra multirun); parameters were found by comparing the '
                 "runs' configs.</p>")
    study = next((str(c.get("study")) for c in (read_yaml(r / "config.yaml") or {} for r in table.runs)
                  if isinstance(c, Mapping) and c.get("study")), root.name)
    title = title or f"Sweep: {H.humanize(study)}"
    body = [H.summary_cards(_best_cards(table, columns)),
            '<section id="comparison"><h2>Comparison across runs</h2>'
            f'<p class="lede">Swept: {H.esc(", ".join(table.params) or "nothing (runs differ only by chance)")}. '
            "Figures are also saved as PNG and PDF under <code>figures/</code>.</p>"
            + (H.figure_grid(figure_cards) if figure_cards else
               '<p class="muted">No numeric metric to compare across runs yet.</p>') + "</section>",
            '<section id="runvsrun"><h2>Run vs run</h2><p class="lede">Each run against the first: what it '
            "changes and how each headline metric moves, next to the spread over seeds.</p>"
            + run_vs_run_html(table, columns) + "</section>",
            *([hallmarks] if hallmarks else []),
            '<section id="runs"><h2>Runs</h2><p class="lede">Each run links to its own report. All numeric metrics '
            'of every run: <a href="metrics.csv">metrics.csv</a>.</p>' + runs_table + "</section>",
            f'<section id="sweepconfig"><h2>Sweep configuration</h2>{sweep_cfg}</section>']
    n_runs = len(table.runs)
    n_done = int((table.frame["completed_stages"] != "").sum()) if n_runs else 0
    subtitle = (f"Study <strong>{H.esc(study)}</strong> · {n_runs} run{'s' if n_runs != 1 else ''}"
                + (f" ({n_done} with results)" if n_done != n_runs else "") + f" · <code>{H.esc(root.name)}</code>")
    nav = [("comparison", "Comparison"), ("runvsrun", "Run vs run"), *([("hallmarks", "Hallmarks")] if hallmarks
                                                                          else []),
           ("runs", "Runs"), ("sweepconfig", "Sweep configuration")]
    out = root / "report.html"
    atomic_write_text(out, H.page(title, subtitle, nav, "".join(body)))
    return out


def _hallmarks_section(table: SweepTable) -> str:
    """The topographic-hallmarks section (and its files next to the report) when any run has a topography
    section; "" otherwise."""
    from workbench.report.hallmarks_sweep import analyse_hallmarks, hallmarks_section_html, write_hallmarks

    if not any(isinstance(m, Mapping) and "topography" in m for m in table.metrics):
        return ""
    hallmarks = analyse_hallmarks(table.runs)
    files = write_hallmarks(hallmarks, table.root)
    return hallmarks_section_html(hallmarks, files.get("figure"))


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _param_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return H.format_number(v) if is_number(v) else str(v)


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]
