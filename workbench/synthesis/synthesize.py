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


def _optimise(image: nn.Module, objective: Objective, settings: SynthesisSettings, seeds: list[int],
              progress: bool, desc: str) -> np.ndarray:
    """Adam on the image's parameters; returns the mean objective per step. Raises SynthesisError on NaN/inf or on a
    gradient that is zero at every step."""
    from tqdm.auto import tqdm

    from workbench.logs import progress_disabled

    params = list(image.parameters())
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    generators = [torch.Generator().manual_seed(10_000 + s) for s in seeds]
    history = np.empty(int(settings.steps))
    ever_moved = False
    for step in tqdm(range(int(settings.steps)), desc=desc, leave=False, disable=progress_disabled(progress)):
        x = image()
        feats, values = objective(settings.transforms(x, generators))
        if not torch.isfinite(values).all():
            raise SynthesisError(f"{objective.label}: the objective is {values.detach().cpu().tolist()} at step "
                                 f"{step} (NaN or inf); the model's output is not finite for these images")
        drive = -values.mean() + settings.diversity * diversity_penalty(feats)
        # gradients with respect to the image only: the model's own parameters are left untouched
        grads = _image_gradients(drive, params, settings.frequency_penalty > 0, objective)
        ever_moved |= _check_gradients(grads, objective, step)
        if settings.frequency_penalty > 0:
            smooth = torch.autograd.grad(settings.frequency_penalty * frequency_penalty(x).mean(), params)
            grads = [g + s for g, s in zip(grads, smooth)]
        for p, g in zip(params, grads):
            p.grad = g
        optimiser.step()
        history[step] = float(values.detach().mean())
    if not ever_moved:
        raise SynthesisError(f"{objective.label}: the objective's gradient was zero at every one of {settings.steps} "
                             "steps: the target does not depend on the image (a dead unit, e.g. a ReLU that is off "
                             "for every input); pick another unit or layer")
    return history


def _image_gradients(drive: torch.Tensor, params: list[torch.Tensor], retain: bool, objective: Objective
                     ) -> list[torch.Tensor]:
    """d drive / d params; zeros where the objective does not reach the image at all (no graph: a constant)."""
    if not drive.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(drive, params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _check_gradients(grads: Sequence[torch.Tensor], objective: Objective, step: int) -> bool:
    """True when the objective moved the image this step; SynthesisError when a gradient is NaN or inf."""
    moved = False
    for g in grads:
        if not torch.isfinite(g).all():
            raise SynthesisError(f"{objective.label}: NaN or inf gradient at step {step} although the objective "
                                 "is finite (a unit whose derivative is undefined, e.g. sqrt at 0 or a dead "
                                 "unit multiplied by an infinite slope); no image was made")
        moved |= bool(g.abs().max() > 0)
    return moved


def _check_finite(images: torch.Tensor, values: np.ndarray, objective: Objective) -> None:
    if not torch.isfinite(images).all() or not np.isfinite(values).all():
        raise SynthesisError(f"{objective.label}: the synthesised image or its value is not finite; no image was "
                             "made")
