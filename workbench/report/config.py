"""The report stage's config section (``report:`` in the study, ``configs/report/default.yaml``).

Imports nothing heavy: the pipeline imports every stage's schema to validate a config before anything runs, so a
misspelt section or headline in ``report`` fails at the start of a run rather than after hours of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from workbench.config import ConfigError, default_of, parse
from workbench.registry import nearest

# Report sections that are not a stage's section.
SPECIAL_SECTIONS = ("summary", "config", "provenance", "other", "references")


@dataclass
class HeadlineCard:
    """A summary card that a stage does not propose itself: the value at an exact dotted metrics.json ``key``."""

    label: str = ""
    key: str = ""                  # e.g. "align.rsa.mIT.scores.conv3.score" (the stage name first)
    unit: str = ""
    percent: bool = False          # show a fraction in [0, 1] as a percentage

    def __post_init__(self) -> None:
        if not self.label or not self.key:
            raise ConfigError(f"a report.headline card needs both 'label' and 'key' (a dotted metrics.json key, e.g. "
                              f"align.rsa.hIT.scores.conv3.score); got label={self.label!r}, key={self.key!r}")


@dataclass
class ReportConfig:
    title: str | None = None                       # null: the study name
    sections: list[str] | None = None              # null: everything present (see known_sections)
    # null: every headline the stages propose, in pipeline order; or a list of "<stage>.<headline name>" and
    # {label, key[, unit, percent]} cards (HeadlineCard). Typed Any and checked below, entry by entry, so that a
    # bad card gets HeadlineCard's own error (the generic check of `str | HeadlineCard` reports both arms at once).
    headline: list[Any] | None = None
    captions: dict[str, str] = default_of(dict)   # figure name -> caption (overrides a stage's own captions)

    def __post_init__(self) -> None:
        known = known_sections()
        for name in self.sections or []:
            if name not in known:
                raise ConfigError(f"report.sections names {name!r}{nearest(name, known)}, which is neither a stage nor "
                                  f"a report section; valid: {', '.join(known)}; or null to show everything")
        if self.headline is not None:
            self.headline = [_headline_entry(entry, f"report.headline[{i}]") for i, entry in enumerate(self.headline)]


def _headline_entry(entry: Any, where: str) -> str | HeadlineCard:
    """A ``report.headline`` entry checked: ``"<stage>.<name>"`` with a registered stage, or a HeadlineCard."""
    if isinstance(entry, HeadlineCard):
        return entry
    if isinstance(entry, Mapping):
        return parse(HeadlineCard, entry, where)
    stages = known_sections(special=False)
    stage, _, name = entry.partition(".") if isinstance(entry, str) else ("", "", "")
    if stage not in stages or not name:
        hint = nearest(stage, stages) if stage not in stages else ""
        raise ConfigError(f"{where} = {entry!r} should name a stage's headline as '<stage>.<name>' (stages: "
                          f"{', '.join(stages)}){hint}, or be a card {{label: ..., key: <dotted metrics.json key>}}")
    return entry


def known_sections(special: bool = True) -> list[str]:
    """The registered stages in pipeline order (plugins imported by then), and the report's own sections."""
    from workbench.stages import stage_order

    return [s for s in stage_order() if s != "report"] + (list(SPECIAL_SECTIONS) if special else [])
