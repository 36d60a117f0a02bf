"""``synthesize(model, target, ...)``: images that maximise a target under a norm budget, one per seed.

Gradient ascent (Adam) on an image parametrisation (``workbench.synthesis.image``), each rendered image projected
onto the budget, through random robustness transforms, with optional frequency and diversity penalties
(``workbench.synthesis.transforms``); the approach of Erhan et al. (2009), Olah et al. (2017), Walker et al. (2019,
most exciting inputs) and Bashivan, Kar & DiCarlo (2019, neural control). Seeds are batched: image ``i`` starts from
seed ``seeds[i]`` and draws its transforms from its own generator, so the same seeds give the same images.

A synthesis that cannot work stops with a ``SynthesisError`` instead of returning an image: non-finite objective
values or gradients, or an objective whose gradient is zero at every step (a dead unit: its value does not depend
on the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from workbench.synthesis.image import NormBudget, make_image
from workbench.synthesis.objectives import Objective, as_objective
from workbench.synthesis.transforms import Transforms, diversity_penalty, frequency_penalty

__all__ = ["synthesize", "SynthesisResult", "SynthesisError", "SynthesisSettings"]


class SynthesisError(ValueError):
    """The objective cannot be optimised (NaN/inf values or gradients, or no gradient at all)."""


@dataclass
class SynthesisSettings:
    """How to optimise: parametrisation (pixel | fourier), steps, Adam's learning rate, penalties and transforms."""

    param: str = "fourier"
    steps: int = 256
    lr: float = 0.05
    transforms: Transforms = field(default_factory=Transforms)
    frequency_penalty: float = 0.0
    diversity: float = 0.0
    init_scale: float = 0.5                # starting distance from the budget's centre / its radius
    decay: float = 1.0                     # Fourier: spectrum scale 1 / frequency ** decay

    def __post_init__(self):
        if int(self.steps) < 1 or not self.lr > 0:
            raise ValueError(f"synthesis needs steps >= 1 and lr > 0, got steps={self.steps}, lr={self.lr}")
        if self.frequency_penalty < 0 or self.diversity < 0:
            raise ValueError("frequency_penalty and diversity are penalty weights: they must be >= 0")


@dataclass
class SynthesisResult:
    """``images`` (n_seeds, C, H, W) in the model's input space, inside ``budget``; ``values`` their objective
    without transforms; ``history`` the mean objective (through the transforms) per step."""

    images: torch.Tensor
    values: np.ndarray
    seeds: list[int]
    history: np.ndarray
    budget: NormBudget
    objective: dict[str, Any]
    settings: SynthesisSettings

    @property
    def best(self) -> int:
        return int(np.argmax(self.values))

    def arrays(self) -> dict[str, np.ndarray]:
        """What a run saves (``RunDir.save_synthesis``): images, values, seeds, history, budget radius."""
        return {"images": self.images.cpu().numpy().astype(np.float32), "values": self.values,
                "seeds": np.asarray(self.seeds), "history": self.history, "radius": np.float64(self.budget.radius)}


def synthesize(model: nn.Module, target: Any, *, shape: Sequence[int] = (3, 32, 32), budget: NormBudget | float,
               seeds: Sequence[int] = (0,), settings: SynthesisSettings | None = None,
               colour: torch.Tensor | None = None, device: str | torch.device | None = None,
               progress: bool = True, desc: str = "synthesis", **options: Any) -> SynthesisResult:
    """Images (one per seed) that maximise ``target`` (a class index, an attribution ``Target``, a dict with
    ``kind``, or an ``Objective``) within ``budget`` (a ``NormBudget``, or a radius around 0).

    ``settings`` (or its fields as keyword ``options``): parametrisation, steps, learning rate, transforms,
    frequency and diversity penalties. ``colour``: the Fourier parametrisation's colour mix (``colour_sqrt(stimuli)``).
    The model is moved to ``device`` (default: where its parameters are) and put in eval mode; its parameters get
    no gradients.
    """
    settings = SynthesisSettings(**options) if settings is None else replace(settings, **options)
    budget = budget if isinstance(budget, NormBudget) else NormBudget(budget)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, at least one; got {seeds}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    model = model.to(device).eval()
    image = make_image(settings.param, tuple(shape), seeds, budget, init_scale=settings.init_scale,
                       colour=colour, decay=settings.decay).to(device)
    with torch.no_grad():
        objective = as_objective(model, target, image()[:1]).to(device)
    history = _optimise(image, objective, settings, seeds, progress, desc)
    with torch.no_grad():
        final = image().detach()
        values = objective(final)[1].double().cpu().numpy()
    _check_finite(final, values, objective)
    return SynthesisResult(final.cpu(), values, seeds, history, budget, objective.describe(), settings)


CHECK_EVERY = 16  # steps between health checks (each one waits for the device)


def _optimise(image: nn.Module, objective: Objective, settings: SynthesisSettings, seeds: list[int],
              progress: bool, desc: str) -> np.ndarray:
    """Adam on the image's parameters; returns the mean objective per step. Raises SynthesisError on NaN/inf or on a
    gradient that is zero at every step."""
    from tqdm.auto import tqdm

    from workbench.logs import progress_disabled

    params = list(image.parameters())
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    generators = [torch.Generator().manual_seed(10_000 + s) for s in seeds]
    health = _Health(objective.label, params[0].device)
    history = torch.empty(int(settings.steps), device=params[0].device)
    for step in tqdm(range(int(settings.steps)), desc=desc, leave=False, disable=progress_disabled(progress)):
        x = image()
        feats, values = objective(settings.transforms(x, generators))
        drive = -values.mean()
        if settings.diversity > 0:
            drive = drive + settings.diversity * diversity_penalty(feats)
        # gradients with respect to the image only: the model's own parameters are left untouched
        grads = _image_gradients(drive, params, settings.frequency_penalty > 0)
        health.update(values, grads)
        if settings.frequency_penalty > 0:
            smooth = torch.autograd.grad(settings.frequency_penalty * frequency_penalty(x).mean(), params)
            grads = [g + s for g, s in zip(grads, smooth)]
        for p, g in zip(params, grads):
            p.grad = g
        optimiser.step()
        history[step] = values.detach().mean()
        if (step + 1) % CHECK_EVERY == 0:
            health.check(step)
    health.check(int(settings.steps) - 1, final=True)
    return history.double().cpu().numpy()


class _Health:
    """Flags kept on the device (no wait per step): were the values and gradients finite, did a gradient move."""

    def __init__(self, label: str, device: torch.device):
        self.label = label
        self.values_finite = torch.ones((), dtype=torch.bool, device=device)
        self.grads_finite = torch.ones((), dtype=torch.bool, device=device)
        self.moved = torch.zeros((), dtype=torch.bool, device=device)

    def update(self, values: torch.Tensor, grads: Sequence[torch.Tensor]) -> None:
        # NaN values after a NaN gradient are its consequence (the image became NaN): blame the gradient
        self.values_finite &= torch.isfinite(values.detach()).all() | ~self.grads_finite
        for g in grads:
            self.grads_finite &= torch.isfinite(g).all()
            self.moved |= (g != 0).any()

    def check(self, step: int, final: bool = False) -> None:
        if not bool(self.values_finite):
            raise SynthesisError(f"{self.label}: the objective became NaN or inf by step {step}; the model's output "
                                 "is not finite for these images; no image was made")
        if not bool(self.grads_finite):
            raise SynthesisError(f"{self.label}: NaN or inf gradient by step {step} although the objective is "
                                 "finite (a unit whose derivative is undefined, e.g. sqrt at 0 or a dead unit "
                                 "multiplied by an infinite slope); no image was made")
        if final and not bool(self.moved):
            raise SynthesisError(f"{self.label}: the objective's gradient was zero at every one of {step + 1} steps: "
                                 "the target does not depend on the image (a dead unit, e.g. a ReLU that is off for "
                                 "every input); pick another unit or layer")


def _image_gradients(drive: torch.Tensor, params: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
    """d drive / d params; zeros where the objective does not reach the image at all (no graph: a constant)."""
    if not drive.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(drive, params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _check_finite(images: torch.Tensor, values: np.ndarray, objective: Objective) -> None:
    if not torch.isfinite(images).all() or not np.isfinite(values).all():
        raise SynthesisError(f"{objective.label}: the synthesised image or its value is not finite; no image was "
                             "made")
