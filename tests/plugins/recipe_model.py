"""Recipe: a model, from outside the package (CONTRIBUTING.md, "Adding a model").

One function registered in ``workbench.models.MODELS``: its keyword arguments are the model's options (what a study
may set under ``model:``, checked by name), it returns an ``nn.Module``, and ``workbench_layers`` names the layers
that extraction, topography, alignment and lesions may use (``named_modules()`` paths, in forward order). The
citation goes on the registry entry: every run that trains or analyses the model lists it in its references.

Use it with ``plugins: [recipe_model]`` and ``model: {name: recipe_net, width: 8}`` (in a study, after
``defaults: [override /model: null]``; on the command line ``~model '+model={name:recipe_net,width:8}'``).
"""

import torch
from torch import nn

from workbench.models import MODELS

CITATION = ("LeCun, Y., Bottou, L., Bengio, Y., & Haffner, P. (1998). Gradient-based learning applied to document "
            "recognition. Proceedings of the IEEE, 86(11), 2278-2324.")


class RecipeNet(nn.Module):
    """Two conv-ReLU-pool blocks and a linear read-out: 32 px input, conv2 is an 8x8 map (room for a sheet)."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv2(self.conv1(x))))


@MODELS.register("recipe_net", citation=CITATION, description="2 conv blocks + linear read-out, 32 px (a recipe)")
def recipe_net(num_classes: int = 10, width: int = 8, weights: str | None = None) -> nn.Module:
    if weights:
        raise ValueError("recipe_net has no pretrained weights; set model.weights: null")
    model = RecipeNet(num_classes, width)
    model.workbench_layers = ["conv1", "conv2", "pool", "fc"]
    return model
