"""Reading metrics.json for reports: flattening, numeric leaves, headline cards, references.

Nothing here knows a stage's metric names. Each stage section carries what the report shows about it:

    metrics["align"]["headline"] = [{"name": "best_hIT", "value": 0.21, "label": "hIT RSA (best layer)",
                                     "key": "align.rsa.hIT.scores.conv3.score", "unit": "Spearman r",
                                     "details": {"layer": "conv3"}}, ...]     # StageContext.headline
    metrics["align"]["references"] = ["Nili, H. et al. (2014) ...", ...]      # StageContext.cite

``key`` is the dotted metrics.json path of ``value``, so a card names where its number lives.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Iterable, Iterator, Mapping, Sequence

from workbench.config import ConfigError, parse
from workbench.report.config import HeadlineCard
from workbench.run import get_metric
from workbench.stages import stage_order

# Keys of a stage section that are about the report itself rather than results, so tables leave them out.
META_KEYS = ("references", "headline", "captions")

# Keys (last path component) that name a [lo, hi] interval when their value is a two-number list.
INTERVAL_WORDS = ("ci", "interval", "ceiling", "bounds", "range", "band")
INTERVAL_PAIRS = (("lo", "hi"), ("low", "high"), ("lower", "upper"), ("min", "max"))


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def interval_of(value: Any) -> tuple[float, float] | None:
    """(lo, hi) when `value` is a confidence interval / ceiling: a dict {lo, hi} (or low/high, lower/upper)."""
    if isinstance(value, Mapping):
        for lo_key, hi_key in INTERVAL_PAIRS:
            if lo_key in value and hi_key in value and is_number(value[lo_key]) and is_number(value[hi_key]):
                rest = set(value) - {lo_key, hi_key}
                # a level/alpha/method tag may ride along with the bounds; anything else makes it a real record
                if rest <= {"level", "alpha", "method", "n_bootstrap", "n"}:
                    return float(value[lo_key]), float(value[hi_key])
    return None


def looks_like_interval_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    return any(last == w or last.endswith("_" + w) or last.startswith(w + "_") for w in INTERVAL_WORDS)


def flatten(obj: Any, prefix: str = "", *, skip: Iterable[str] = (), expand_lists: bool = False,
            ) -> Iterator[tuple[str, Any]]:
    """Yield (dotted key, leaf) pairs of a nested dict.

    Intervals ({lo, hi} dicts) stay whole as a (lo, hi) tuple. With `expand_lists`, lists become `key.0`, `key.1`...
    (so every number of a curve is a leaf); otherwise a list is one leaf.
    """
    skip = set(skip)
    if isinstance(obj, Mapping):
        interval = interval_of(obj)
        if interval is not None and prefix:
            yield prefix, interval
            return
        if not obj and prefix:
            yield prefix, {}
            return
        for key, value in obj.items():
            if key in skip:
                continue
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key), expand_lists=expand_lists)
    elif expand_lists and isinstance(obj, (list, tuple)) and prefix:
        for i, value in enumerate(obj):
            yield from flatten(value, f"{prefix}.{i}", expand_lists=expand_lists)
    else:
        yield prefix, obj


def numeric_leaves(metrics: Mapping[str, Any], skip_stages: Iterable[str] = ("report",)) -> dict[str, float]:
    """Every numeric leaf of metrics.json with a dotted key (lists expanded `key.0`...; booleans as 0/1)."""
    out: dict[str, float] = {}
    for stage, section in metrics.items():
        if stage in set(skip_stages):
            continue
        if not isinstance(section, Mapping):
            continue
        for key, value in flatten(section, stage, skip=META_KEYS, expand_lists=True):
            if isinstance(value, tuple):  # an interval kept whole by flatten
                out[f"{key}.lo"], out[f"{key}.hi"] = value
            elif isinstance(value, bool):
                out[key] = int(value)
            elif is_number(value):
                out[key] = float(value) if isinstance(value, float) else value
    return out


def ordered_stages(metrics: Mapping[str, Any]) -> list[str]:
    """Stage sections of metrics.json in pipeline order (``workbench.stages.stage_order``); sections of stages not
    registered in this process (a plugin not imported) after them, in file order. The report's own section is left
    out: it says where the report is, nothing about the run."""
    present = [s for s in metrics if isinstance(metrics[s], Mapping) and s != "report"]
    known = [s for s in stage_order() if s in present]
    return known + [s for s in present if s not in known]


# -- metric keys -----------------------------------------------------------------------------------------------------

def metric_paths(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Every dotted path of metrics.json (inner sections as well as leaves) -> its value; a stage's headline,
    references and captions are about the report, not results, and are left out."""
    paths: dict[str, Any] = {}

    def walk(node: Any, prefix: str, depth: int) -> None:
        paths[prefix] = node
        if isinstance(node, Mapping):
            for key, value in node.items():
                if depth == 1 and key in META_KEYS:
                    continue
                walk(value, f"{prefix}.{key}", depth + 1)

    for stage, section in metrics.items():
        walk(section, str(stage), 1)
    return paths


def nearest_key(key: str, paths: Iterable[str]) -> str | None:
    """The dotted key most like ``key`` (a typo, a renamed metric), or None if nothing is close."""
    close = difflib.get_close_matches(key, list(paths), n=1, cutoff=0.6)
    return close[0] if close else None


def resolve_key(metrics: Mapping[str, Any], key: str, where: str) -> Any:
    """The value at dotted ``key`` (``workbench.run.get_metric``); a key that is not there is a ConfigError naming
    ``where`` and the nearest full key that is."""
    try:
        return get_metric(metrics, key)
    except KeyError as err:
        close = nearest_key(key, metric_paths(metrics))
        raise ConfigError(f"{where}: metrics.json has no key {key!r}" + (f" (did you mean {close!r}?)" if close else "")
                          + f"; {err.args[0]}") from None


# -- headline cards --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Card:
    """One number of the summary box. ``source`` is ``<stage>.<name>`` for a stage's own headline, "" for a card
    the report config asked for by key."""

    label: str
    value: Any
    key: str
    unit: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    percent: bool = False
    source: str = ""


HEADLINE_FIELDS = ("name", "value", "label", "key")
HEADLINE_HELP = ("each entry of a stage's headline is a {name, value, label, key[, unit, details, percent]} mapping "
                 "(StageContext.headline); rerun the stage to rewrite it")


def stage_headlines(metrics: Mapping[str, Any]) -> list[Card]:
    """Every headline the stages wrote, in pipeline order and, within a stage, in the stage's order."""
    cards = []
    for stage in ordered_stages(metrics):
        entries = metrics[stage].get("headline")
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ValueError(f"metrics.json {stage}.headline is a {type(entries).__name__}, not a list; "
                             f"{HEADLINE_HELP}")
        for i, entry in enumerate(entries):
            missing = [f for f in HEADLINE_FIELDS if not isinstance(entry, Mapping) or f not in entry]
            if missing:
                raise ValueError(f"metrics.json {stage}.headline[{i}] lacks {', '.join(missing)}; {HEADLINE_HELP}")
            cards.append(Card(str(entry["label"]), entry["value"], str(entry["key"]), str(entry.get("unit") or ""),
                              dict(entry.get("details") or {}), bool(entry.get("percent", False)),
                              f"{stage}.{entry['name']}"))
    return cards


def select_headlines(metrics: Mapping[str, Any], entries: Sequence[Any] | None = None) -> list[Card]:
    """The summary box: every stage headline (``entries`` None), or the ``report.headline`` entries in their order
    (see ``headline_card``)."""
    if entries is None:
        return stage_headlines(metrics)
    return [headline_card(metrics, entry, f"report.headline[{i}]") for i, entry in enumerate(entries)]


def headline_card(metrics: Mapping[str, Any], entry: str | HeadlineCard | Mapping[str, Any], where: str) -> Card:
    """The card of one ``report.headline`` entry: ``"<stage>.<name>"`` picks a stage's own headline; a card
    ``{label, key[, unit, percent]}`` (``HeadlineCard``) reads the value at an exact dotted key. A name or key this
    run does not have is a ConfigError naming ``where`` and the nearest one it has."""
    if isinstance(entry, str):
        by_source = {card.source: card for card in stage_headlines(metrics)}
        if entry not in by_source:
            close = nearest_key(entry, by_source)
            raise ConfigError(f"{where}: no stage wrote a headline {entry!r}"
                              + (f" (did you mean {close!r}?)" if close else "")
                              + f"; headlines in this run: {', '.join(by_source) or 'none'}")
        return by_source[entry]
    if isinstance(entry, Mapping):
        entry = parse(HeadlineCard, entry, where)
    value = resolve_key(metrics, entry.key, where)
    return Card(entry.label, value, entry.key, entry.unit, {}, entry.percent)


def headline_leaves(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``<stage>.headline.<name>`` -> value for every numeric stage headline: a column of the sweep's metrics.csv
    that means the same in every run (the key behind it may differ: the best layer of one run is not another's)."""
    out = {}
    for card in stage_headlines(metrics):
        if is_number(card.value):
            stage, name = card.source.split(".", 1)
            out[f"{stage}.headline.{name}"] = card.value
    return out


# -- references ------------------------------------------------------------------------------------------------------

def collect_references(metrics: Mapping[str, Any]) -> list[str]:
    """The stages' ``references`` lists (what they cited: StageContext.cite), in pipeline order, each text once."""
    refs: list[str] = []
    for stage in ordered_stages(metrics):
        items = metrics[stage].get("references")
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(r, str) for r in items):
            raise ValueError(f"metrics.json {stage}.references should be a list of citation texts, got {items!r}; "
                             f"a stage cites what it used with ctx.cite(REGISTRY, name)")
        refs += [r for r in items if r and r not in refs]
    return refs
