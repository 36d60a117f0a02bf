"""The lesions of a lesion study: every selective lesion and its size-matched controls, at every size.

A lesion is named by a ``LesionKey``: ``LesionKey("disk_peak", "face", 2, 0)`` is the face disk at the third size;
``LesionKey("random_disk", None, 2, 3)`` the fourth random disk of that size (controls serve every category).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from workbench.intervention.selection import (SELECTIONS, ControlLesion, LesionLayer, Selection, SelectiveLesion,
                                              resolve_size)

__all__ = ["LesionKey", "LesionPlan", "plan_lesions", "control_seed"]


class LesionKey(NamedTuple):
    kind: str                  # the SELECTIONS name
    category: str | None       # the contrast a selective lesion targets; None for a control
    size_index: int            # index into the study's lesion sizes
    replicate: int = 0         # 0 for a selective lesion; 0 .. n_random - 1 for a control's draws

    def path(self) -> str:
        """``units/<kind>/<category>/<size>/<replicate>``: its name in the lesion cache."""
        return f"units/{self.kind}/{self.category}/{self.size_index}/{self.replicate}"


@dataclass
class LesionPlan:
    sizes: list[int | float]                 # as configured: fractions (floats) or unit counts (ints)
    counts: list[int]                        # the same, as unit counts of the layer
    main_index: int                          # the size of the specificity, RSA and V4 numbers
    controls: dict[str, str]                 # selective kind -> its control kind (those that run on this layer)
    categories: list[str]
    n_random: int
    lesions: dict[LesionKey, Selection] = field(default_factory=dict)

    @property
    def selective_kinds(self) -> list[str]:
        return list(self.controls)

    @property
    def control_kinds(self) -> list[str]:
        return list(dict.fromkeys(self.controls.values()))

    def is_control(self, kind: str) -> bool:
        return kind in self.control_kinds

    def keys(self, kind: str, category: str | None, size_index: int) -> list[LesionKey]:
        """A selective kind's lesion of ``category`` (one key), or a control's ``n_random`` draws (category
        ignored) at ``size_index``."""
        if self.is_control(kind):
            return [LesionKey(kind, None, size_index, r) for r in range(self.n_random)]
        return [LesionKey(kind, category, size_index, 0)]

    def main(self, kind: str, category: str | None = None) -> list[LesionKey]:
        return self.keys(kind, category, self.main_index)


def control_seed(seed: int, size_index: int, replicate: int, control: ControlLesion) -> int:
    """The seed of one control draw (distinct per size, replicate and control kind)."""
    return seed * 1000 + 17 * size_index + replicate + control.seed_offset


def plan_lesions(layer: LesionLayer, selectivity: Mapping[str, np.ndarray], selections: Sequence[str],
                 sizes: Sequence[int | float], main_size: int | float, n_random: int, seed: int) -> LesionPlan:
    """Every lesion of the study: for each size, each selection in ``selections`` that can run on ``layer`` (a
    disk needs a cortical sheet) per category of ``selectivity``, and ``n_random`` draws of each one's control."""
    counts = [resolve_size(s, layer.n_units) for s in sizes]
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"intervene.lesion_sizes must grow strictly; as unit counts of {layer.name}: {counts}")
    rules = {name: SELECTIONS.get(name)() for name in selections}
    rules = {name: rule for name, rule in rules.items() if layer.has_sheet or not rule.needs_sheet}
    for name, rule in rules.items():
        if not isinstance(rule, SelectiveLesion):
            raise ValueError(f"intervene.selections: {name!r} is not a selective lesion")
    controls = {name: rule.control for name, rule in rules.items()}
    control_rules = {name: SELECTIONS.get(name)() for name in dict.fromkeys(controls.values())}
    for name, rule in control_rules.items():
        if not isinstance(rule, ControlLesion) or (rule.needs_sheet and not layer.has_sheet):
            owner = [k for k, c in controls.items() if c == name]
            raise ValueError(f"lesion selection {owner[0]!r} names {name!r} as its control, which is not a control "
                             f"lesion that runs on {layer.name}")
    plan = LesionPlan(list(sizes), counts, list(sizes).index(main_size), controls, list(selectivity), n_random)
    for i, size in enumerate(sizes):
        for category, values in selectivity.items():
            for name, rule in rules.items():
                plan.lesions[LesionKey(name, category, i, 0)] = rule.choose(layer, size, values, category)
        for r in range(n_random):
            for name, rule in control_rules.items():
                plan.lesions[LesionKey(name, None, i, r)] = rule.choose(layer, size,
                                                                         control_seed(seed, i, r, rule))
    return plan
