"""Synthesis on known answers: the optimum of a linear readout under an L2 budget, a grating-tuned unit's preferred
orientation, seeding, population objectives, the natural-image comparison, and errors for inputs that cannot work."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from workbench.attribution.targets import NeuralSiteTarget, UnitTarget
from workbench.synthesis import (NormBudget, PatternObjective, SiteContrastTarget, SynthesisError, Transforms,
                                 compare_with_natural, fit_split_readouts, synthesize)
from workbench.synthesis.objectives import TargetObjective

STILL = Transforms(jitter=0, rotate=0, scale=(1.0, 1.0))
SHAPE = (3, 16, 16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Images of 16-32 px: one intra-op thread is several times faster than two (no hand-off per small kernel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_model(w: torch.Tensor) -> nn.Module:
    """x -> w . flatten(x): the model output is one linear readout of the pixels."""
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), readout=nn.Linear(w.numel(), 1, bias=False)))
    with torch.no_grad():
        model.readout.weight.copy_(w.view(1, -1))
    return model


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_a_linear_readout_under_an_l2_budget_gives_the_direction_of_its_weights(param):
    w = torch.randn(int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(1))
    result = synthesize(linear_model(w), 0, shape=SHAPE, budget=2.0, seeds=[0, 1], steps=120, param=param,
                        transforms=STILL, progress=False)
    x = result.images.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(x, w[None].expand_as(x))
    assert (cosine > 0.99).all(), cosine
    assert torch.allclose(x.norm(dim=1), torch.full((2,), 2.0), atol=1e-4)  # on the budget's surface
    np.testing.assert_allclose(result.values, 2.0 * float(w.norm()), rtol=5e-3)  # = r |w| cos


def test_the_frequency_penalty_trades_drive_for_smoothness():
    from workbench.synthesis import frequency_penalty

    w = torch.randn(int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(5))  # white: rough optimum
    model = linear_model(w)
    rough, smooth = (synthesize(model, 0, shape=SHAPE, budget=2.0, steps=60, param="pixel", transforms=STILL,
                                frequency_penalty=weight, progress=False) for weight in (0.0, 2.0))
    assert float(frequency_penalty(torch.ones(1, *SHAPE))) == 0.0
    assert float(frequency_penalty(smooth.images)) < 0.5 * float(frequency_penalty(rough.images))
    assert smooth.values[0] < rough.values[0]


def grating_unit(theta_deg: float, size: int = 9, wavelength: float = 8.0) -> nn.Module:
    """Grey level -> a Gabor filter at ``theta_deg`` -> squared (phase-invariant energy after the channel mean)."""
    yy, xx = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2, indexing="ij")
    theta = math.radians(theta_deg)
    carrier = torch.cos(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / wavelength)
    kernel = carrier * torch.exp(-(xx ** 2 + yy ** 2) / (2 * 3.0 ** 2))

    class Square(nn.Module):
        def forward(self, x):
            return x * x

    model = nn.Sequential(OrderedDict(grey=nn.Conv2d(3, 1, 1, bias=False), gabor=nn.Conv2d(1, 1, size, bias=False),
                                      energy=Square()))
    with torch.no_grad():
        model.grey.weight.fill_(1 / 3)
        model.gabor.weight.copy_(kernel.view(1, 1, size, size))
    return model


def dominant_orientation(image: torch.Tensor) -> float:
    """Angle (degrees, mod 180) of the wave vector with the most power in the grey image's 2-D FFT."""
    grey = image.mean(0).numpy()
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    ky, kx = np.unravel_index(np.argmax(power), power.shape)
    fy, fx = np.fft.fftfreq(grey.shape[0])[ky], np.fft.fftfreq(grey.shape[1])[kx]
    return math.degrees(math.atan2(fy, fx)) % 180


@pytest.mark.parametrize("theta", [60.0, 150.0])
def test_a_unit_tuned_to_one_grating_orientation_gets_an_image_of_that_orientation(theta):
    result = synthesize(grating_unit(theta), UnitTarget(layer="energy", channel=0), shape=(3, 32, 32), budget=4.0,
                        seeds=[0], steps=60, param="fourier", transforms=Transforms(jitter=1, rotate=3),
                        progress=False)
    error = abs((dominant_orientation(result.images[0]) - theta + 90) % 180 - 90)
    assert error < 12, (dominant_orientation(result.images[0]), theta)


def test_the_same_seed_gives_the_same_image_and_other_seeds_other_images():
    model = grating_unit(0.0)
    kwargs = dict(shape=(3, 32, 32), budget=3.0, steps=20, progress=False, diversity=0.1)
    a = synthesize(model, UnitTarget(layer="energy", channel=0), seeds=[3, 4], **kwargs)
    b = synthesize(model, UnitTarget(layer="energy", channel=0), seeds=[3, 4], **kwargs)
    assert torch.equal(a.images, b.images)
    assert not torch.allclose(a.images[0], a.images[1])


def test_site_contrast_drives_one_neuroid_against_the_mean_of_the_others():
    coef = np.random.default_rng(0).normal(size=(3, int(np.prod(SHAPE))))
    model = nn.Sequential(OrderedDict(flat=nn.Flatten()))
    site = SiteContrastTarget(layer="flat", coef=coef, intercept=np.array([1.0, 2.0, 4.0]), neuroid=0)
    w, b = site.weights((coef.shape[1],), model)
    np.testing.assert_allclose(w.numpy(), coef[0] - coef[1:].mean(0))
    assert float(b) == pytest.approx(1.0 - 3.0)
    result = synthesize(model, site, shape=SHAPE, budget=2.0, steps=100, param="pixel", transforms=STILL,
                        progress=False)
    direction = torch.from_numpy(coef[0] - coef[1:].mean(0)).float()
    assert float(torch.nn.functional.cosine_similarity(result.images.flatten(1), direction[None])) > 0.99


def test_a_reachable_response_pattern_is_matched():
    rng = np.random.default_rng(1)
    coef, intercept = rng.normal(size=(4, int(np.prod(SHAPE)))), rng.normal(size=4)
    goal_image = rng.normal(size=coef.shape[1]) * 0.5 / math.sqrt(coef.shape[1])  # well inside the budget
    model = nn.Sequential(OrderedDict(flat=nn.Flatten()))
    site = NeuralSiteTarget(layer="flat", coef=coef, intercept=intercept)
    objective = PatternObjective(model, site, coef @ goal_image + intercept, torch.zeros(1, *SHAPE))
    result = synthesize(model, objective, shape=SHAPE, budget=1.0, steps=200, param="pixel", transforms=STILL,
                        progress=False)
    assert result.values[0] > -1e-3  # minus the squared error over the pattern's variance


def test_a_linear_synthesis_beats_every_natural_image_under_the_same_budget():
    w = torch.randn(int(np.prod(SHAPE)), generator=torch.Generator().manual_seed(2))
    model = linear_model(w)
    natural = torch.randn(50, *SHAPE, generator=torch.Generator().manual_seed(3)) * 0.3
    budget = NormBudget.from_stimuli(natural, quantile=0.5)
    result = synthesize(model, 0, shape=SHAPE, budget=budget, steps=100, param="pixel", transforms=STILL,
                        progress=False)
    comparison = compare_with_natural(TargetObjective(model, 0, natural[:1]), result.images, natural, budget)
    assert (budget.norms(result.images) <= budget.radius * (1 + 1e-5)).all()
    assert comparison.summary()["fraction_above_best_natural"] == 1.0
    assert comparison.best_natural == comparison.natural.max() and len(comparison.top) == 3


def test_split_readouts_use_disjoint_halves_and_recover_a_linear_code():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(80, 10))
    responses = features @ rng.normal(size=(10, 3)) + 0.05 * rng.normal(size=(80, 3))
    a, b = fit_split_readouts(features, responses, seed=0)
    assert not set(a["train"]) & set(b["train"]) and len(a["train"]) + len(b["train"]) == 80
    assert (a["held_out_r"] > 0.95).all() and (b["held_out_r"] > 0.95).all()


# -- inputs that cannot work -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, words", [("conv3", "is a string"), ({"kind": "blob"}, "unknown"),
                                           (3.5, "unknown target")])
def test_an_unknown_target_is_refused(target, words):
    with pytest.raises((TypeError, ValueError), match=words):
        synthesize(linear_model(torch.ones(int(np.prod(SHAPE)))), target, shape=SHAPE, budget=1.0, steps=1,
                   progress=False)


def test_a_readout_fitted_on_another_layer_is_refused():
    model = grating_unit(0.0)  # gabor: 1 x 24 x 24 units; the readout was fitted on 16 x 16 x 3 inputs
    site = NeuralSiteTarget(layer="gabor", coef=np.ones((2, int(np.prod(SHAPE)))))
    with pytest.raises(ValueError, match="features but layer 'gabor' has 576 units"):
        synthesize(model, site, shape=(3, 32, 32), budget=1.0, steps=1, progress=False)


@pytest.mark.parametrize("radius", [0, 0.0, -1.0, float("nan")])
def test_a_budget_of_zero_is_refused(radius):
    with pytest.raises(ValueError, match="positive L2 radius"):
        synthesize(linear_model(torch.ones(int(np.prod(SHAPE)))), 0, shape=SHAPE, budget=radius, steps=1,
                   progress=False)


class _DeadRoot(nn.Module):
    """sqrt(0 * x): a unit that is 0 for every image, whose derivative is inf * 0 = NaN."""

    def forward(self, x):
        return torch.sqrt(0 * x)


class _Dead(nn.Module):
    def forward(self, x):
        return torch.relu(x - 1e3)


class _NaNOut(nn.Module):
    def forward(self, x):
        return x * float("nan")


@pytest.mark.parametrize("unit, words", [(_DeadRoot(), "NaN or inf gradient"), (_Dead(), "zero at every"),
                                         (_NaNOut(), "objective became NaN")])
def test_a_dead_unit_raises_instead_of_returning_an_image(unit, words):
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 3), dead=unit))
    with pytest.raises(SynthesisError, match=words):
        synthesize(model, UnitTarget(layer="dead", channel=0), shape=(3, 16, 16), budget=1.0, steps=5,
                   progress=False)


# -- the stage, from Python without Hydra ----------------------------------------------------------------------------
def test_the_stage_saves_images_of_the_targets_that_work_and_reports_the_dead_one(data_root, tmp_path):
    from workbench.context import StageContext
    from workbench.run import RunDir
    from workbench.synthesis.stage import synthesize_stage

    cfg = {"seed": 0, "device": "cpu", "model": {"name": "small_cnn", "preprocess": {"image_size": 16}},
           "synthesize": {"units": [{"layer": "conv", "channel": 0}, {"layer": "dead", "channel": 0}],
                          "patches": None, "neural_sites": None, "steps": 4, "n_seeds": 2, "top_natural": 2}}
    run = RunDir(tmp_path / "run")
    ctx = StageContext.create(cfg, run, "synthesize", log=lambda _msg: None)
    ctx.model = lambda: nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 3), dead=_DeadRoot()))
    section = synthesize_stage(ctx)
    assert list(section["targets"]) == ["unit_conv_c0"] and "NaN" in section["errors"]["unit_dead_c0"]
    assert run.synthesis_names() == ["unit_conv_c0"]  # no file, let alone a NaN image, for the dead unit
    saved = run.load_synthesis("unit_conv_c0")
    assert saved["images"].shape == (2, 3, 16, 16) and np.isfinite(saved["images"]).all()
    drive = section["targets"]["unit_conv_c0"]["drive"]
    assert drive["best_natural"] == max(saved["natural_values"]) and len(drive["top_natural"]) == 2
    assert (run.figures / "synthesize_units.png").is_file()
    assert section["headline"][0]["key"] == "synthesize.summary.fraction_above_best_natural"


def test_an_objective_of_ones_own_is_one_class(monkeypatch):
    """CONTRIBUTING.md, "Adding a synthesis objective": tests/plugins/recipe_objective.py."""
    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    from recipe_objective import LayerEnergy

    model = grating_unit(45.0)
    objective = LayerEnergy(model, "gabor", torch.zeros(1, 3, 32, 32))
    result = synthesize(model, objective, shape=(3, 32, 32), budget=4.0, steps=60, transforms=STILL,
                        progress=False)
    assert result.objective["label"] == "gabor energy"
    error = abs((dominant_orientation(result.images[0]) - 45.0 + 90) % 180 - 90)
    assert result.history[-1] > result.history[0] and error < 12
