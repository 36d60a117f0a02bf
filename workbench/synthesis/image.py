"""What is optimised: an image parametrisation, and the norm budget every rendered image is projected onto.

* ``PixelImage``: one free value per pixel (the plain parametrisation of Erhan et al. 2009 / Simonyan et al. 2014).
* ``FourierImage``: a 2-D spectrum scaled by 1 / frequency, so that a gradient step changes low frequencies as much
  as high ones, and a colour mix through the square root of the colour covariance (decorrelated colour); the
  parametrisation of Olah, Mordvintsev & Schubert (2017, "Feature Visualization", Distill) and of lucent. Written
  here from the paper's description: the spectrum scale, the colour covariance (from the stimulus set when given)
  and the budget projection are ours.
* ``NormBudget``: images live in the model's input space; the budget is a ball of L2 radius ``radius`` around
  ``centre`` (the stimulus set's mean colour), intersected with the set's per-channel value range. ``project`` maps
  any image into it (shrink towards the centre, then clip; clipping towards a centre that lies inside the range
  never leaves the ball), so a stronger drive cannot come from more contrast than the natural images have. The
  L2 radius over the square root of the number of values is the RMS contrast about the mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["NormBudget", "PixelImage", "FourierImage", "colour_sqrt", "make_image", "PARAMETRISATIONS"]

# The square root of ImageNet's colour covariance (Olah et al. 2017; lucent's color_correlation_svd_sqrt): the colour
# mix used when no stimulus set is given.
IMAGENET_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


@dataclass
class NormBudget:
    """The images a synthesis may produce: ``||x - centre||_2 <= radius`` per image, each channel within
    [``low``, ``high``] (None: unbounded). ``centre`` broadcasts against one image (C, H, W); None is zero."""

    radius: float
    centre: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    source: str = ""

    def __post_init__(self):
        radius = float(self.radius)
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"the norm budget must be a positive L2 radius, got {self.radius!r}: a budget of 0 "
                             "allows only the centre image. Use NormBudget.from_stimuli(x) for the radius of "
                             "natural images, or a radius > 0")
        self.radius = radius

    @classmethod
    def from_stimuli(cls, x: torch.Tensor, quantile: float = 0.5, source: str = "") -> "NormBudget":
        """The budget of natural images ``x`` (N, C, H, W), in the model's input space: centre = their mean colour,
        radius = the ``quantile`` of their distances from it, range = their per-channel minimum and maximum."""
        if x.ndim != 4 or len(x) < 2:
            raise ValueError(f"stimuli must be (N >= 2, C, H, W) model inputs, got shape {tuple(x.shape)}")
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
        x = x.detach().double()
        centre = x.mean(dim=(0, 2, 3)).view(-1, 1, 1)
        norms = (x - centre).flatten(1).norm(dim=1)
        radius = float(torch.quantile(norms, quantile))
        low, high = x.amin(dim=(0, 2, 3)).view(-1, 1, 1), x.amax(dim=(0, 2, 3)).view(-1, 1, 1)
        return cls(radius, centre.float(), low.float(), high.float(), source)

    def centre_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=x.device, dtype=x.dtype) if self.centre is None else \
            self.centre.to(device=x.device, dtype=x.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Each image of ``x`` (N, C, H, W) moved into the budget (differentiable; images inside stay put)."""
        centre = self.centre_like(x)
        delta = x - centre
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        shrink = (self.radius / norms).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1)))
        x = centre + delta * shrink
        if self.low is not None or self.high is not None:
            low = None if self.low is None else self.low.to(x.device, x.dtype)
            high = None if self.high is None else self.high.to(x.device, x.dtype)
            x = torch.clamp(x, low, high)
        return x

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre_like(x)).flatten(1).norm(dim=1)

    def describe(self) -> dict:
        return {"radius": self.radius, "source": self.source, "bounded_range": self.low is not None}


def colour_sqrt(x: torch.Tensor | None) -> torch.Tensor:
    """The colour mix of the decorrelated parametrisation: U sqrt(S) of the 3 x 3 colour covariance of stimuli
    ``x`` (N, 3, H, W), scaled so its largest column has norm 1; ImageNet's (Olah et al. 2017) when ``x`` is None."""
    if x is None:
        m = torch.tensor(IMAGENET_COLOUR_SQRT, dtype=torch.float64)
    else:
        pixels = x.detach().double().permute(1, 0, 2, 3).reshape(x.shape[1], -1)
        u, s, _ = torch.linalg.svd(torch.cov(pixels))
        m = u * s.clamp_min(0).sqrt()
    return (m / m.norm(dim=0).max()).float()


class PixelImage(nn.Module):
    """One parameter per input value: seeded noise around the budget's centre."""

    def __init__(self, shape: tuple[int, int, int], seeds: list[int], budget: NormBudget):
        super().__init__()
        self.delta = nn.Parameter(torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                                               for s in seeds]))
        self.budget = budget

    def offset(self) -> torch.Tensor:
        """The image minus the budget's centre, before the projection (linear in the parameters)."""
        return self.delta

    def forward(self) -> torch.Tensor:
        return self.budget.project(self.budget.centre_like(self.delta) + self.offset())


class FourierImage(nn.Module):
    """A seeded spectrum per image, scaled by 1 / max(frequency, 1 / size) ** ``decay`` and mixed through
    ``colour`` (3 x 3, see ``colour_sqrt``); the rendered image is projected onto the budget."""

    def __init__(self, shape: tuple[int, int, int], seeds: list[int], budget: NormBudget,
                 colour: torch.Tensor | None = None, decay: float = 1.0):
        super().__init__()
        channels, height, width = shape
        fy = torch.fft.fftfreq(height).view(-1, 1)
        fx = torch.fft.rfftfreq(width).view(1, -1)
        freq = torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1.0 / max(height, width))
        self.register_buffer("scale", (1.0 / freq ** decay) * np.sqrt(height * width) / freq.shape[1])
        spectrum_shape = (channels, height, width // 2 + 1, 2)
        noise = torch.stack([torch.randn(spectrum_shape, generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds])
        self.spectrum = nn.Parameter(noise)
        mix = colour if colour is not None else (colour_sqrt(None) if channels == 3 else torch.eye(channels))
        if mix.shape != (channels, channels):
            raise ValueError(f"colour must be ({channels}, {channels}) for {channels}-channel images, got "
                             f"{tuple(mix.shape)}")
        self.register_buffer("colour", mix.float())
        self.size = (height, width)
        self.budget = budget

    def offset(self) -> torch.Tensor:
        """The image minus the budget's centre, before the projection (linear in the parameters)."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.einsum("ck,nkhw->nchw", self.colour, decorrelated)

    def forward(self) -> torch.Tensor:
        image = self.offset()
        return self.budget.project(self.budget.centre_like(image) + image)


PARAMETRISATIONS = {"pixel": PixelImage, "fourier": FourierImage}


def make_image(param: str, shape: tuple[int, int, int], seeds: list[int], budget: NormBudget,
               init_scale: float = 0.5, **options) -> nn.Module:
    """Parametrisation ``param`` with one image per seed, each starting at distance ``init_scale * radius`` from
    the budget's centre: noise with the natural images' contrast scale, not a flat image (on a flat image every
    ReLU unit of a layer can be off, and its gradient zero)."""
    if param not in PARAMETRISATIONS:
        raise ValueError(f"unknown image parametrisation {param!r}; use one of {sorted(PARAMETRISATIONS)}")
    if not 0 < init_scale <= 1:
        raise ValueError(f"init_scale is a fraction of the budget radius in (0, 1], got {init_scale}")
    if param == "pixel":  # the colour mix and spectral decay belong to the Fourier parametrisation
        options = {}
    image = PARAMETRISATIONS[param](tuple(shape), list(seeds), budget, **options)
    with torch.no_grad():
        norms = image.offset().flatten(1).norm(dim=1).clamp_min(1e-12)
        for p in image.parameters():  # the offset is linear in the parameters, one image per row
            p.mul_((init_scale * budget.radius / norms).view(-1, *([1] * (p.ndim - 1))))
    return image
