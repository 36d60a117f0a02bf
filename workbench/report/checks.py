"""What the report must not let pass silently: sanity checks that failed, headline numbers whose interval includes 0
or that have none, and a run that stopped before its last stage.

Each rule reads metrics.json only (no stage code), so a report rebuilt later from an old run gets the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from workbench.report.metrics import Card, interval_of, is_number
from workbench.run import get_metric

# Adebayo et al. (2018): maps that stay rank-correlated with the trained model's after every layer is randomised do
# not depend on what the model learned. Spearman (of |map|) above this counts as "still correlated".
RANDOMISATION_MAX_SPEARMAN = 0.5
# A method that promises completeness (sum of map = f(x) - f(baseline)) and misses by more than half of f(x) -
# f(baseline) on the median image does not do what it claims (DeepLift through unsupported layers reaches ~1).
COMPLETENESS_MAX_RELATIVE_ERROR = 0.5
FAILED_RUN_FILE = "failed.json"


@dataclass
class FailedCheck:
    stage: str      # the report section it belongs to
    key: str        # dotted metrics.json path of the number that failed
    message: str


def failed_checks(metrics: Mapping[str, Any]) -> list[FailedCheck]:
    """Every rule below applied to a run's metrics, in pipeline order of the stages."""
    return (_randomisation_failures(metrics) + _completeness_failures(metrics) + _patch_failures(metrics))


def _attribution_checks(metrics: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    checks = (metrics.get("attribute") or {}).get("checks") or {}
    for method, entry in (checks.get("methods") or {}).items():
        if isinstance(entry, Mapping):
            yield method, entry


def _randomisation_failures(metrics: Mapping[str, Any]) -> list[FailedCheck]:
    out = []
    for method, entry in _attribution_checks(metrics):
        rho = (entry.get("randomisation") or {}).get("spearman_fully_randomised")
        if is_number(rho) and rho > RANDOMISATION_MAX_SPEARMAN:
            out.append(FailedCheck(
                "attribute", f"attribute.checks.methods.{method}.randomisation.spearman_fully_randomised",
                f"randomisation check failed for {method}: its maps stay correlated with the trained model's "
                f"(Spearman {rho:.2f} > {RANDOMISATION_MAX_SPEARMAN}) after every layer is randomised, so they do "
                f"not show what the model learned (Adebayo et al. 2018)"))
    return out


def _completeness_failures(metrics: Mapping[str, Any]) -> list[FailedCheck]:
    out = []
    for method, entry in _attribution_checks(metrics):
        error = (entry.get("completeness") or {}).get("relative_error_median")
        if is_number(error) and error > COMPLETENESS_MAX_RELATIVE_ERROR:
            out.append(FailedCheck(
                "attribute", f"attribute.checks.methods.{method}.completeness.relative_error_median",
                f"completeness check failed for {method}: its maps sum to f(x) - f(baseline) only within a relative "
                f"error of {error:.2f} (median image; > {COMPLETENESS_MAX_RELATIVE_ERROR}), though the method "
                f"promises equality"))
    return out


def _patch_failures(metrics: Mapping[str, Any]) -> list[FailedCheck]:
    """A category with no patch in any layer, in a run whose study asks about patches (topography ran)."""
    layers = (metrics.get("topography") or {}).get("layers") or {}
    found: dict[str, int] = {}
    for layer in layers.values():
        for contrast, entry in ((layer or {}).get("contrasts") or {}).items():
            if isinstance(entry, Mapping) and is_number(entry.get("n_patches")):
                found[contrast] = found.get(contrast, 0) + int(entry["n_patches"])
    return [FailedCheck("topography", f"topography.layers.*.contrasts.{contrast}.n_patches",
                        f"0 {contrast} patches found in any layer: the {contrast} selectivity maps have no patch, so "
                        f"patch-based lesions and patch targets for {contrast} have nothing to act on")
            for contrast, n in found.items() if n == 0]


def card_interval(card: Card, metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    """A headline's confidence interval: its ``ci`` detail, else a ``ci`` beside its value in metrics.json
    (``...scores.fc.score`` -> ``...scores.fc.ci``), else ``<value key>_ci``."""
    found = as_interval(card.details.get("ci"))
    if found:
        return found
    parent = card.key.rpartition(".")[0]
    for key in (f"{parent}.ci" if parent else "ci", f"{card.key}_ci"):
        try:
            found = as_interval(get_metric(metrics, key))
        except KeyError:
            continue
        if found:
            return found
    return None


def as_interval(value: Any) -> tuple[float, float] | None:
    """(lo, hi) of a [lo, hi] list or a {lo, hi}-style mapping; None for anything else."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return interval_of(value) if isinstance(value, Mapping) else None


def includes_zero(interval: tuple[float, float] | None) -> bool:
    return interval is not None and interval[0] <= 0 <= interval[1]


def best_layer_caveat(card: Card, metrics: Mapping[str, Any]) -> str:
    """For a "best layer" headline whose section holds layer scores and bootstrap differences between layers
    (RSA: ``<section>.scores.<layer>.score``, ``<section>.differences["a - b"].ci``): a sentence when the best layer
    is not significantly better than the runner-up (the difference's CI includes 0), else ""."""
    if ".scores." not in card.key:
        return ""
    try:
        section = get_metric(metrics, card.key.split(".scores.")[0])
    except KeyError:
        return ""
    scores, best = section.get("scores") or {}, section.get("best_layer")
    others = {layer: s.get("score") for layer, s in scores.items() if layer != best and isinstance(s, Mapping)
              and is_number(s.get("score"))}
    if best not in scores or not others:
        return ""
    runner = max(others, key=others.get)
    differences = section.get("differences") or {}
    entry = differences.get(f"{best} - {runner}") or differences.get(f"{runner} - {best}") or {}
    interval = as_interval(entry.get("ci")) if isinstance(entry, Mapping) else None
    if not includes_zero(interval):
        return ""
    return (f"best layer {best} is not significantly better than the runner-up {runner} (difference CI "
            f"[{interval[0]:.3g}, {interval[1]:.3g}] includes 0)")
