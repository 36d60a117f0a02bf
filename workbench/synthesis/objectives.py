"""What a synthesis maximises: an attribution target's value, or a population objective over fitted readouts.

Single targets are the attribution targets (``workbench.attribution.targets``: class logit, unit or channel, cortical
patch, neural site) through their ``TargetForward``. Population objectives over the neuroids of one fitted readout:

* ``SiteContrastTarget``: drive one neuroid relative to the others (its predicted response minus the mean of the
  others'), the "one-hot population" control of Bashivan, Kar & DiCarlo (2019). Still a linear target, so it is a
  ``Target`` and works wherever one does (attribution included).
* ``PatternObjective``: make the predicted responses of all neuroids match a target pattern (minus the mean
  squared error, in units of the pattern's variance).

A new objective is an ``Objective``: ``forward(x) -> (layer features, values (N,))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from workbench.attribution.targets import NeuralSiteTarget, Target, TargetForward, as_target

__all__ = ["Objective", "TargetObjective", "PatternObjective", "SiteContrastTarget", "as_objective"]


class Objective(nn.Module):
    """``x -> (features, values)``: the target layer's output (for the diversity term) and one value per image."""

    label: str = ""

    def describe(self) -> dict[str, Any]:
        return {"label": self.label}


class TargetObjective(Objective):
    """The value of an attribution target (anything ``as_target`` accepts)."""

    def __init__(self, model: nn.Module, target: Any, example: torch.Tensor):
        super().__init__()
        self.target = as_target(target)
        self.forward_fn = TargetForward(model, self.target, example)
        self.label = self.target.label

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.forward_fn.features(x)
        return feats, self.forward_fn.reduce(feats)

    def describe(self) -> dict[str, Any]:
        return self.target.describe()


@dataclass
class SiteContrastTarget(NeuralSiteTarget):
    """``neuroid``'s predicted response minus the mean predicted response of ``others`` (default: every other
    neuroid of the readout): drive one site while holding the rest down."""

    others: Sequence[int] | None = field(default=None)

    kind = "site_contrast"

    def __post_init__(self):
        super().__post_init__()
        n = self.coef.shape[0]
        others = [i for i in range(n) if i != int(self.neuroid)] if self.others is None else list(self.others)
        if not others or any(not 0 <= int(i) < n or int(i) == int(self.neuroid) for i in others):
            raise ValueError(f"others must be other neuroids of the readout (0..{n - 1}, not {self.neuroid}); got "
                             f"{self.others}")
        self.others = [int(i) for i in others]

    @property
    def label(self) -> str:
        return f"{super().label} vs {len(self.others)} others"

    def describe(self):
        return {**super().describe(), "others": list(self.others)}

    def weights(self, unit_shape, model):
        w, b = NeuralSiteTarget.weights(self, unit_shape, model)
        rest = [readout_weights(self, i, unit_shape, model) for i in self.others]
        return w - torch.stack([r[0] for r in rest]).mean(0), b - torch.stack([r[1] for r in rest]).mean()


def readout_weights(site: NeuralSiteTarget, neuroid: int, unit_shape, model) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) of another neuroid of ``site``'s readout (its standardisation folded in, as for the site itself)."""
    other = NeuralSiteTarget(layer=site.layer, coef=site.coef, intercept=site.intercept, neuroid=int(neuroid),
                             feature_mean=site.feature_mean, feature_scale=site.feature_scale)
    return other.weights(unit_shape, model)


class PatternObjective(Objective):
    """Minus the mean squared difference between the predicted responses of every neuroid of ``site``'s readout
    and ``pattern`` (n_neuroids,), divided by the pattern's variance (0 = a perfect match)."""

    def __init__(self, model: nn.Module, site: NeuralSiteTarget, pattern: Sequence[float], example: torch.Tensor):
        super().__init__()
        pattern = np.asarray(pattern, dtype=np.float64).reshape(-1)
        n = site.coef.shape[0]
        if pattern.shape != (n,) or not np.isfinite(pattern).all():
            raise ValueError(f"pattern must be {n} finite values, one per neuroid of the readout; got shape "
                             f"{pattern.shape}")
        self.forward_fn = TargetForward(model, site, example)
        pairs = [readout_weights(site, i, self.forward_fn.unit_shape, model) for i in range(n)]
        dtype, device = self.forward_fn.weight.dtype, self.forward_fn.weight.device
        self.register_buffer("readout", torch.stack([w for w, _ in pairs], 1).to(device, dtype))
        self.register_buffer("intercepts", torch.stack([b for _, b in pairs]).to(device, dtype))
        self.register_buffer("pattern", torch.as_tensor(pattern).to(device, dtype))
        self.variance = float(max(pattern.var(), 1e-12))
        self.label = f"response pattern of {n} neuroids via {site.layer}"
        self.site = site

    def predicted(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.flatten(1) @ self.readout + self.intercepts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.forward_fn.features(x)
        error = (self.predicted(feats) - self.pattern).pow(2).mean(1)
        return feats, -error / self.variance

    def describe(self) -> dict[str, Any]:
        return {"kind": "pattern", "layer": self.site.layer, "label": self.label, "source": self.site.source}


def as_objective(model: nn.Module, target: Any, example: torch.Tensor) -> Objective:
    """An ``Objective`` passes through; anything else is an attribution target (``as_target``)."""
    if isinstance(target, Objective):
        return target
    if isinstance(target, str):
        raise TypeError(f"target {target!r} is a string; pass a class index, a Target (UnitTarget, PatchTarget, "
                        "NeuralSiteTarget, SiteContrastTarget), a dict with 'kind' (class, unit, patch, "
                        "neural_site) or an Objective")
    if not isinstance(target, (Target, dict, int, np.integer)):
        raise TypeError(f"unknown target {target!r}: pass a class index, a Target, a dict with 'kind' or an "
                        "Objective (workbench.synthesis.objectives)")
    return TargetObjective(model, target, example)
