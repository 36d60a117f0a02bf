"""Reading metrics.json for reports: flattening, numeric leaves, headline numbers, references.

Nothing here knows a stage's exact schema: a report must keep working when a stage adds or renames a metric, so
headline numbers are found by glob patterns over flattened keys (first pattern that matches wins), and a stage may
also name its own headline numbers under a ``headline`` key of its section:

    metrics["align"]["headline"] = {"hIT RSA (best layer)": 0.21,
                                    "V4 predictivity": {"value": 0.43, "detail": "ceiled, layer conv3"}}
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Iterable, Iterator, Mapping

# The order stages run in and are shown in; stages not listed here are shown after these, in metrics.json order.
STAGE_ORDER = ("train", "topography", "extract", "align", "attribute", "intervene")

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
        for key, value in flatten(section, stage, skip=("references", "captions"), expand_lists=True):
            if isinstance(value, tuple):  # an interval kept whole by flatten
                out[f"{key}.lo"], out[f"{key}.hi"] = value
            elif isinstance(value, bool):
                out[key] = int(value)
            elif is_number(value):
                out[key] = float(value) if isinstance(value, float) else value
    return out


# -- headline numbers ------------------------------------------------------------------------------------------------

@dataclass
class HeadlineSpec:
    """One card of the summary box: the first numeric leaf whose dotted key matches one of `keys` (glob, case-
    insensitive, tried in order); `details` are shown under the number (label -> patterns), `percent` renders a
    fraction in [0, 1] as a percentage."""

    label: str
    keys: list[str]
    details: dict[str, list[str]] = field(default_factory=dict)
    percent: bool = False
    # used when no pattern matches: flat (key, value) pairs -> (key, value, details) or None
    resolve: Callable[[list[tuple[str, Any]]], tuple[str, Any, dict[str, Any]] | None] | None = None

    @classmethod
    def from_config(cls, item: Mapping[str, Any]) -> "HeadlineSpec":
        if "label" not in item or "keys" not in item:
            raise ValueError(
                f"report.headline entries need 'label' and 'keys' (list of glob patterns over dotted metric keys, "
                f"e.g. 'train.test_acc*'); got {dict(item)!r}"
            )
        keys = [item["keys"]] if isinstance(item["keys"], str) else list(item["keys"])
        details = {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in (item.get("details") or {}).items()}
        return cls(str(item["label"]), keys, details, bool(item.get("percent", False)))


def _v4_ceiled_best_layer(flat: list[tuple[str, Any]]) -> tuple[str, Any, dict[str, Any]] | None:
    """The ceiled V4 score of the best layer of the first regression session: align.regression.<session>.best_layer
    names the layer, align.regression.<session>.layers.<layer>.<...>_over_c_median holds its ceiled score."""
    values = dict(flat)
    for key, layer in flat:
        m = re.fullmatch(r"(align\.regression\.([^.]+))\.best_layer", key)
        if not m or not isinstance(layer, str):
            continue
        prefix = f"{m.group(1)}.layers.{layer}."
        for name in ("r2_over_c_median", "r_over_c_sq_median"):  # r^2/c (Brain-Score) first
            value = values.get(prefix + name)
            if is_number(value) and math.isfinite(value):
                details = {"layer": layer, "session": m.group(2)}
                if is_number(values.get(prefix + "median_r")):
                    details["raw median r"] = values[prefix + "median_r"]
                return prefix + name, value, details
    return None


def _rsa_spec(region: str) -> HeadlineSpec:
    r = region.lower()
    return HeadlineSpec(
        f"{region} RSA (best layer)",
        [f"align.summary.best_{r}_score", f"align.*{r}*best*score*", f"align.*best*{r}*score*",
         f"align.*{r}*best*rho*", f"align.*best*{r}*"],
        details={"layer": [f"align.summary.best_{r}_layer", f"align.*{r}*best*layer*", f"align.*best*{r}*layer*"],
                 "noise ceiling": [f"align.summary.{r}_noise_ceiling", f"align.*{r}*noise_ceiling*",
                                   f"align.*{r}*ceiling*"]})


# Patterns for what stages are expected to report; a miss only leaves a card out.
DEFAULT_HEADLINES: list[HeadlineSpec] = [
    HeadlineSpec("Test accuracy", ["train.test_acc*", "train.test.acc*", "train.*test*acc*", "train.*val*acc*"],
                 percent=True),
    _rsa_spec("hIT"),
    _rsa_spec("mIT"),
    HeadlineSpec("V4 predictivity (ceiled)",
                 ["align.summary.best_v4*ceiled*", "align.*v4*best*ceiled*", "align.*best*v4*ceiled*"],
                 details={"layer": ["align.*v4*best*layer*", "align.*best*v4*layer*"]},
                 resolve=_v4_ceiled_best_layer),
    HeadlineSpec("V4 predictivity (median r)", ["align.summary.best_v4_*_median_r", "align.*best*v4*median_r"],
                 details={"layer": ["align.summary.best_v4_*_layer"]}),
    HeadlineSpec("Interventional alignment",
                 ["intervene.*interventional*alignment*", "intervene.*alignment*score*", "intervene.*score"]),
    HeadlineSpec("Topographic smoothness",
                 ["topography.summary.*smoothness*", "topography.*smoothness*mean*", "topography.*smoothness*"]),
]


@dataclass
class Headline:
    label: str
    value: Any
    key: str
    details: dict[str, Any] = field(default_factory=dict)
    percent: bool = False


def _match(flat: list[tuple[str, Any]], patterns: list[str], want_number: bool) -> tuple[str, Any] | None:
    for pattern in patterns:
        pattern = pattern.lower()
        for key, value in flat:
            if not fnmatch.fnmatchcase(key.lower(), pattern):
                continue
            if value is None or (want_number and not (is_number(value) and math.isfinite(value))):
                continue
            return key, value
    return None


def find_headlines(metrics: Mapping[str, Any], specs: Iterable[HeadlineSpec] | None = None) -> list[Headline]:
    """Headline numbers for the summary box: stages' own ``headline`` entries first, then the first match of each
    spec (a spec whose label a stage already gave is not repeated)."""
    specs = DEFAULT_HEADLINES if specs is None else list(specs)
    found: list[Headline] = []
    for stage, section in metrics.items():
        if not isinstance(section, Mapping) or not isinstance(section.get("headline"), Mapping):
            continue
        for label, entry in section["headline"].items():
            if isinstance(entry, Mapping):
                found.append(Headline(str(label), entry.get("value"), f"{stage}.headline.{label}.value",
                                      {"": entry["detail"]} if "detail" in entry else
                                      dict(entry.get("details") or {}), bool(entry.get("percent", False))))
            else:
                found.append(Headline(str(label), entry, f"{stage}.headline.{label}"))
    flat = [(k, v) for stage, section in metrics.items() if stage != "report"
            for k, v in flatten(section, stage, skip=META_KEYS)]
    taken = {h.label.lower() for h in found}
    # a stage that names its own headline numbers knows best: the generic patterns leave its section alone
    own = {h.key.split(".", 1)[0] for h in found}
    flat = [(k, v) for k, v in flat if k.split(".", 1)[0] not in own]
    for spec in specs:
        if spec.label.lower() in taken:
            continue
        hit = _match(flat, spec.keys, want_number=True)
        if hit is None and spec.resolve is not None:
            resolved = spec.resolve(flat)
            if resolved is not None:
                found.append(Headline(spec.label, resolved[1], resolved[0], resolved[2], spec.percent))
            continue
        if hit is None:
            continue
        details = {}
        for name, patterns in spec.details.items():
            detail = _match(flat, patterns, want_number=False)
            if detail is not None and detail[0] != hit[0] and detail[1] is not None:
                details[name] = detail[1]
        found.append(Headline(spec.label, hit[1], hit[0], details, spec.percent))
    # cards read in pipeline order (accuracy before alignment before lesions), whoever proposed them
    rank = {stage: i for i, stage in enumerate(ordered_stages(metrics))}
    return sorted(found, key=lambda h: rank.get(h.key.split(".", 1)[0], len(rank)))


# -- references ------------------------------------------------------------------------------------------------------

def _populate_citations() -> None:
    """Import the stage packages so that their module-level `cite(...)` calls fill workbench.registry.CITATIONS
    (a report built from the CLI has not imported them)."""
    import importlib

    for name in ("workbench.data", "workbench.models", "workbench.training", "workbench.features",
                 "workbench.alignment", "workbench.attribution", "workbench.intervention"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken or absent stage package must not stop a report
            continue


def collect_references(metrics: Mapping[str, Any]) -> list[str]:
    """Citation strings from every ``references`` list in metrics.json, in stage order, de-duplicated.

    An entry that is a key of workbench.registry.CITATIONS is replaced by its citation text."""
    from workbench.registry import CITATIONS

    raw: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            for key, value in obj.items():
                if key == "references":
                    items = [value] if isinstance(value, str) else value
                    if isinstance(items, Mapping):
                        items = list(items.values())
                    raw.extend(str(x) for x in items or [] if x)
                else:
                    walk(value)

    for stage in ordered_stages(metrics):
        walk(metrics[stage])
    if isinstance(metrics.get("references"), (list, str)):
        walk({"references": metrics["references"]})
    # a key-like entry ("nili2014") is resolved through CITATIONS; full citation text needs no import
    if any(r not in CITATIONS and len(r.split()) == 1 for r in raw):
        _populate_citations()
    seen: dict[str, None] = {}
    for ref in raw:
        text = CITATIONS.get(ref, ref).strip()
        key = " ".join(text.lower().split())
        if key and key not in {" ".join(s.lower().split()) for s in seen}:
            seen[text] = None
    return list(seen)


def ordered_stages(metrics: Mapping[str, Any]) -> list[str]:
    """Stage sections of metrics.json in pipeline order, unknown stages after, in file order."""
    present = [s for s in metrics if isinstance(metrics[s], Mapping) and s not in ("report", "references")]
    known = [s for s in STAGE_ORDER if s in present]
    return known + [s for s in present if s not in STAGE_ORDER]
