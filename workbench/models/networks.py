"""Network definitions with named layers (the names are what extraction, topography and lesions refer to)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "resnet18_cifar", "resnet18_imagenet", "RESNET_LAYERS", "SMALL_CNN_LAYERS"]

SMALL_CNN_LAYERS = ["conv1", "conv2", "conv3", "conv4", "avgpool", "fc"]
RESNET_LAYERS = ["relu", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=False),  # not in place: hooks and attribution methods need the pre-ReLU tensor intact
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Four conv blocks (conv-BN-ReLU[-maxpool]) and a linear read-out; ~0.3 M parameters at width 32.

    Unit shapes for a 32 px input and width w: conv1 (w, 32, 32), conv2 (2w, 16, 16), conv3 (4w, 8, 8),
    conv4 (8w, 4, 4), avgpool (8w,), fc (num_classes,).
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        self.conv1 = _conv_block(in_channels, width, pool=False)
        self.conv2 = _conv_block(width, 2 * width, pool=True)
        self.conv3 = _conv_block(2 * width, 4 * width, pool=True)
        self.conv4 = _conv_block(4 * width, 8 * width, pool=True)
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.fc(self.dropout(self.avgpool(x)))


def _no_inplace(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def _load_torchvision_weights(model: nn.Module, weights: str, skip_prefixes: tuple[str, ...]) -> None:
    """Copy torchvision ResNet-18 weights by enum name (needs network access or a filled torch hub cache)."""
    from torchvision.models import ResNet18_Weights

    try:
        enum = ResNet18_Weights[weights] if weights != "DEFAULT" else ResNet18_Weights.DEFAULT
    except KeyError:
        raise ValueError(
            f"unknown torchvision weights {weights!r} for resnet18; use one of "
            f"{[w.name for w in ResNet18_Weights]} or 'DEFAULT'"
        ) from None
    state = enum.get_state_dict(progress=True)
    own = model.state_dict()
    kept = {k: v for k, v in state.items()
            if not k.startswith(skip_prefixes) and k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)


def resnet18_imagenet(num_classes: int = 1000, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-18 with its full-resolution stem (7x7/2 conv + max-pool), for 224 px inputs."""
    from torchvision.models import resnet18

    model = _no_inplace(resnet18(weights=None, num_classes=num_classes))
    if weights:
        # The classifier is re-initialised when the class count differs from ImageNet's 1000.
        _load_torchvision_weights(model, weights, skip_prefixes=() if num_classes == 1000 else ("fc.",))
    return model


def resnet18_cifar(num_classes: int = 10, weights: str | None = None) -> nn.Module:
    """ResNet-18 with a 32 px stem: 3x3/1 first conv and no max-pool, so layer4 keeps a 4x4 map."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    model = _no_inplace(model)
    if weights:
        # The 7x7 ImageNet stem does not fit the 3x3 stem; everything else transfers.
        _load_torchvision_weights(model, weights, skip_prefixes=("conv1.",) + (() if num_classes == 1000 else ("fc.",)))
    return model
