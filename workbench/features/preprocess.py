"""Turning stimulus images into a model's input: resize and normalise, as the model's config says.

Preprocessing belongs to the model (a CIFAR model sees 32 px versions of the 92 images), so it is configured under
``model.preprocess`` and part of the activation cache key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    image_size: int = 32
    mean: tuple[float, ...] = (0.4913, 0.4821, 0.4465)
    std: tuple[float, ...] = (0.2452, 0.2428, 0.2606)

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"preprocess.image_size must be positive, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("preprocess.mean and preprocess.std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocess.std must be positive, got {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Preprocess":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"image_size", "mean", "std"}
        if unknown:
            raise KeyError(f"unknown preprocess keys {sorted(unknown)}; valid keys: image_size, mean, std")
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """uint8 images (n, H, W, 3) -> normalised float tensor (n, 3, image_size, image_size)."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be (n, H, W, 3), got shape {tuple(x.shape)}")
        x = x.to(device=device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            # antialiasing matters when shrinking 175 px images to 32 px: without it the model sees aliasing
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (n, 3, S, S) -> pixel values in [0, 1] (for plotting)."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x * std + mean).clamp(0, 1)
