"""Regularisers of synthesis: random robustness transforms, a frequency penalty and a diversity term.

An image that drives a unit only at one exact position, angle and scale exploits the model's aliasing rather than
showing what it prefers; optimising through random jitter, rotation and scaling (Mordvintsev et al. 2015,
"Inceptionism"; Olah et al. 2017) keeps what survives them. The frequency penalty (the power spectrum weighted by squared
frequency, i.e. the mean squared spatial gradient) pushes towards the smooth images a blur would give. The diversity
term (Olah et al. 2017) pushes the images of several seeds apart in the target layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Transforms", "frequency_penalty", "diversity_penalty"]


@dataclass
class Transforms:
    """Random affine transform per image and step: shift by up to ``jitter`` pixels, rotate by up to ``rotate``
    degrees, scale by a factor in ``scale``; reflection padding. All zero / (1, 1): the identity."""

    jitter: float = 2.0
    rotate: float = 5.0
    scale: tuple[float, float] = (0.95, 1.05)

    def __post_init__(self):
        lo, hi = (float(s) for s in self.scale)
        if self.jitter < 0 or self.rotate < 0 or not 0 < lo <= hi:
            raise ValueError(f"transforms need jitter >= 0, rotate >= 0 and 0 < scale[0] <= scale[1]; got {self}")
        self.scale = (lo, hi)

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.rotate == 0 and self.scale == (1.0, 1.0)

    def draw(self, generators: list[torch.Generator]) -> torch.Tensor:
        """(N, 4) draws (angle, scale, shift x, shift y), one row per image from its own generator."""
        rows = [torch.rand(4, generator=g, dtype=torch.float64) * 2 - 1 for g in generators]
        u = torch.stack(rows)
        lo, hi = self.scale
        return torch.stack([u[:, 0] * math.radians(self.rotate), lo + (u[:, 1] + 1) / 2 * (hi - lo),
                            u[:, 2] * self.jitter, u[:, 3] * self.jitter], dim=1)

    def __call__(self, x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        if self.identity:
            return x
        angle, scale, dx, dy = self.draw(generators).to(device=x.device, dtype=x.dtype).T
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        height, width = x.shape[-2:]
        theta = torch.stack([torch.stack([cos, -sin, 2 * dx / width], 1),
                             torch.stack([sin, cos, 2 * dy / height], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def frequency_penalty(x: torch.Tensor) -> torch.Tensor:
    """Per image: the squared norm of its spatial gradient, the sum of squared differences of neighbouring values
    (by Parseval, the power spectrum weighted by 4 sin^2(pi f) per axis: high frequencies cost most); 0 for a flat
    image. In the units of the squared L2 budget."""
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    return dy.pow(2).flatten(1).sum(1) + dx.pow(2).flatten(1).sum(1)


def diversity_penalty(features: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the target-layer features of different images (0 for one image)."""
    n = len(features)
    if n < 2:
        return features.sum() * 0
    flat = F.normalize(features.flatten(1), dim=1)
    similarity = flat @ flat.T
    return (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
