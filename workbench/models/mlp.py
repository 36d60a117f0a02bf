"""A fully connected network without convolution's locality prior, sized like the default small_cnn (~0.1 M
parameters).

It is the control in the inductive-bias study: trained the same way as the CNN, it asks whether weight sharing
and local receptive fields are what make a network's representations brain-like.
"""

from __future__ import annotations

import torch
from torch import nn

MLP_LAYERS = ["dense1", "dense2", "dense3", "fc"]


def _dense_block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=False))


class MLP(nn.Module):
    """Flatten -> three dense blocks (Linear-BN-ReLU) -> linear read-out."""

    def __init__(self, num_classes: int = 10, image_size: int = 32, hidden: tuple[int, ...] = (28, 64, 128),
                 in_channels: int = 3):
        super().__init__()
        if len(hidden) != 3 or min(hidden) < 1:
            raise ValueError(f"hidden must be three positive layer widths, got {hidden}")
        self.image_size = image_size
        n_in = in_channels * image_size * image_size
        self.dense1 = _dense_block(n_in, hidden[0])
        self.dense2 = _dense_block(hidden[0], hidden[1])
        self.dense3 = _dense_block(hidden[1], hidden[2])
        self.fc = nn.Linear(hidden[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"this MLP takes {self.image_size} px images, got {tuple(x.shape[-2:])}; set "
                             f"model.preprocess.image_size={self.image_size}")
        return self.fc(self.dense3(self.dense2(self.dense1(x.flatten(1)))))
