"""Recipe: a new synthesis objective, from outside the package (CONTRIBUTING.md, "Adding a synthesis objective").

DeepDream's objective (Mordvintsev, Olah & Tyka 2015): the mean squared activation of a whole layer, i.e. whatever
the layer already responds to, amplified. One ``Objective`` subclass: the layer's output (for the diversity term) and
one value per image; ``TargetForward`` of an attribution target supplies the layer hook.
"""

import torch

from workbench.attribution.targets import TargetForward, UnitTarget
from workbench.synthesis import Objective

CITATION = ("Mordvintsev, A., Olah, C., & Tyka, M. (2015). Inceptionism: going deeper into neural networks. Google "
            "Research Blog.")


class LayerEnergy(Objective):
    def __init__(self, model: torch.nn.Module, layer: str, example: torch.Tensor):
        super().__init__()
        # the hook and the unit shape of a channel target of the layer; its reduction is not used
        self.forward_fn = TargetForward(model, UnitTarget(layer=layer, channel=0), example)
        self.label = f"{layer} energy"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.forward_fn.features(x)
        return feats, feats.pow(2).flatten(1).mean(1)
