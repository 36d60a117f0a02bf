"""Attribution: numbers checked against autograd, plain captum calls and hand-built readouts."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from workbench.attribution import (
    ClassTarget, NeuralSiteTarget, PatchTarget, UnitTarget, attribute, method_names,
)
from workbench.attribution.checks import (
    deletion_insertion, method_agreement, model_randomisation, spearman_rows,
)


def small_net(seed: int = 0, relu=nn.ReLU) -> nn.Sequential:
    """Conv net with biases and softplus-free ReLUs: not positively homogeneous, so IG needs its steps."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), relu(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), relu(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).eval()


def images(n=3, seed=1, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# -- completeness and the autograd / captum oracles -------------------------------------------------------------
def test_ig_completeness_within_one_percent_and_needs_steps():
    model, x = small_net(), images()
    base = torch.full_like(x[:1], -1.5)   # far from the inputs: the path crosses many ReLU kinks
    fine = attribute(model, x, 2, "integrated_gradients", baselines=base, n_steps=300, progress=False)
    coarse = attribute(model, x, 2, "integrated_gradients", baselines=base, n_steps=2, integration="riemann_left",
                       progress=False)
    assert fine.attributions.shape == tuple(x.shape)
    with torch.no_grad():
        expected = (model(x)[:, 2] - model(base)[:, 2]).numpy()
    sums = fine.attributions.reshape(3, -1).sum(1)
    np.testing.assert_allclose(sums, expected, rtol=0.01)
    assert np.all(fine.relative_completeness_error < 0.01)
    # the same check catches a poor integral (so it is not vacuous)
    assert np.max(coarse.relative_completeness_error) > 0.01


def test_saliency_equals_autograd_gradient():
    model, x = small_net(), images()
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 3].sum().backward()
    signed = attribute(model, x, 3, "saliency", abs=False, progress=False)
    np.testing.assert_allclose(signed.attributions, xg.grad.numpy(), rtol=1e-5, atol=1e-7)
    absolute = attribute(model, x, 3, "saliency", progress=False)
    np.testing.assert_allclose(absolute.attributions, xg.grad.abs().numpy(), rtol=1e-5, atol=1e-7)


def test_unit_target_gradient_matches_autograd():
    model, x = small_net(), images()
    xg = x.clone().requires_grad_(True)
    model[:5](xg)[:, 4].mean(dim=(1, 2)).sum().backward()   # channel 4 of the second ReLU, spatial mean
    a = attribute(model, x, UnitTarget(layer="4", channel=4), "saliency", abs=False, progress=False)
    np.testing.assert_allclose(a.attributions, xg.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_wrappers_match_plain_captum_calls():
    from captum.attr import DeepLift, GradientShap, IntegratedGradients

    model, x = small_net(), images()
    base = torch.zeros_like(x)
    ours = attribute(model, x, 1, "integrated_gradients", n_steps=32, internal_batch_size=7, progress=False)
    plain = IntegratedGradients(model).attribute(x, base, target=1, n_steps=32)
    np.testing.assert_allclose(ours.attributions, plain.numpy(), rtol=1e-4, atol=1e-6)
    ours = attribute(model, x, 1, "deeplift", progress=False)
    plain = DeepLift(small_net()).attribute(x, base, target=1)
    np.testing.assert_allclose(ours.attributions, plain.detach().numpy(), rtol=1e-4, atol=1e-6)
    bg = images(4, seed=5)
    ours = attribute(model, x, 1, "gradient_shap", baselines=bg, n_samples=6, seed=3, progress=False)
    torch.manual_seed(3)
    np.random.seed(3)   # captum draws the baselines with numpy's global RNG
    plain = GradientShap(model).attribute(x, bg, n_samples=6, target=1)
    np.testing.assert_allclose(ours.attributions, plain.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["deeplift", "shap_deep"])
def test_module_rule_methods_are_complete(method):
    model, x = small_net(), images(2)
    bg = images(3, seed=7) if method == "shap_deep" else None
    a = attribute(model, x, 0, method, baselines=bg, progress=False)
    assert np.all(a.relative_completeness_error < 1e-3)


def test_every_method_returns_input_shape_and_metadata():
    model, x = small_net(), images(2)
    bg = images(3, seed=9)
    for m in method_names():
        a = attribute(model, x, 0, m, baselines=bg if m in ("gradient_shap", "shap_gradient", "shap_deep") else None,
                      progress=False, **({"n_samples": 8} if m in ("gradient_shap", "shap_gradient") else {}))
        assert a.attributions.shape == tuple(x.shape) and np.isfinite(a.attributions).all(), m
        meta = a.metadata()
        assert meta["method"] == m and meta["target"]["kind"] == "class" and meta["citation"]


def test_ig_noise_tunnel_option():
    model, x = small_net(), images(2)
    a = attribute(model, x, 0, "integrated_gradients", n_steps=8, progress=False,
                  noise_tunnel={"nt_samples": 3, "stdevs": 0.2})
    b = attribute(model, x, 0, "integrated_gradients", n_steps=8, progress=False)
    assert a.attributions.shape == b.attributions.shape and not np.allclose(a.attributions, b.attributions)
    assert a.delta is None and a.options["noise_tunnel"]["nt_samples"] == 3


# -- neural-site and patch targets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "deeplift"])
def test_neural_site_equals_hand_built_linear_readout(method, tmp_path):
    from captum.attr import DeepLift, IntegratedGradients, Saliency

    model, x = small_net(), images()
    n_units = 8 * 4 * 4   # layer "4" (second ReLU) on 8 px inputs after one 2x pool
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(3, n_units)), rng.normal(size=3)
    path = tmp_path / "4.npz"
    np.savez(path, coef=coef, intercept=intercept, neuroid_ids=np.array(["n0", "n1", "n2"]))
    target = NeuralSiteTarget.from_npz(path, neuroid="n1")
    assert target.layer == "4" and target.neuroid == 1
    ours = attribute(model, x, target, method, progress=False)

    readout = nn.Linear(n_units, 1)
    with torch.no_grad():
        readout.weight.copy_(torch.as_tensor(coef[1:2], dtype=torch.float32))
        readout.bias.copy_(torch.as_tensor(intercept[1:2], dtype=torch.float32))
    hand = nn.Sequential(*list(small_net().children())[:5], nn.Flatten(), readout).eval()
    with torch.no_grad():
        np.testing.assert_allclose(ours.outputs, hand(x)[:, 0].numpy(), rtol=1e-5)
    plain = {"saliency": lambda: Saliency(hand).attribute(x.clone().requires_grad_(), target=0),
             "integrated_gradients": lambda: IntegratedGradients(hand).attribute(x, target=0),
             "deeplift": lambda: DeepLift(hand).attribute(x, torch.zeros_like(x), target=0)}[method]()
    np.testing.assert_allclose(ours.attributions, plain.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_neural_site_from_a_run_directorys_readout(tmp_path):
    """The stage reads readouts through RunDir; from_arrays and from_npz build the same target."""
    from workbench.run import RunDir

    run = RunDir(tmp_path / "run")
    rng = np.random.default_rng(2)
    coef, intercept = rng.normal(size=(2, 8 * 4 * 4)), rng.normal(size=2)
    run.save_readout("recordings_x", "4", coef=coef, intercept=intercept, neuroid_ids=np.array(["a", "b"]))
    assert run.readout_layers("recordings_x") == ["4"]
    from_run = NeuralSiteTarget.from_arrays(run.load_readout("recordings_x", "4"), neuroid="b", layer="4")
    from_file = NeuralSiteTarget.from_npz(run.readout_path("recordings_x", "4"), neuroid=1)
    assert from_run.label == from_file.label == "neuroid b via 4"
    np.testing.assert_array_equal(from_run.coef, from_file.coef)
    model, x = small_net(), images(2)
    np.testing.assert_allclose(attribute(model, x, from_run, "saliency", progress=False).attributions,
                               attribute(model, x, from_file, "saliency", progress=False).attributions)
    with pytest.raises(KeyError, match="no 'coef' array"):
        NeuralSiteTarget.from_arrays({"intercept": intercept}, layer="4")


def test_neural_site_standardisation_folds_into_readout():
    model, x = small_net(), images(2)
    rng = np.random.default_rng(1)
    n = 8 * 4 * 4
    coef, mean, scale = rng.normal(size=(1, n)), rng.normal(size=n), rng.uniform(0.5, 2, size=n)
    t = NeuralSiteTarget(layer="4", coef=coef, intercept=[0.3], feature_mean=mean, feature_scale=scale)
    a = attribute(model, x, t, "saliency", progress=False)
    with torch.no_grad():
        f = model[:5](x).flatten(1).double().numpy()
    np.testing.assert_allclose(a.outputs, ((f - mean) / scale) @ coef[0] + 0.3, rtol=1e-4)


def test_patch_target_is_mean_of_units_within_radius():
    model, x = small_net(), images(2)
    c, h, w = 8, 4, 4
    # positions: channel c at (c, 0) offset by the spatial location: a simple sheet
    cc, hh, ww = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    positions = np.stack([ww.ravel() + 10.0 * (cc.ravel() % 2), hh.ravel()], 1).astype(float)
    model.cortical_sheets = {"4": type("Sheet", (), {"positions": positions})()}
    t = PatchTarget(layer="4", centre=(1.0, 1.0), radius=1.2)
    a = attribute(model, x, t, "saliency", progress=False)
    inside = np.hypot(positions[:, 0] - 1, positions[:, 1] - 1) <= 1.2
    with torch.no_grad():
        f = model[:5](x).flatten(1).numpy()
    np.testing.assert_allclose(a.outputs, f[:, inside].mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="no unit"):
        attribute(model, x, PatchTarget(layer="4", centre=(100.0, 100.0), radius=1.0), "saliency", progress=False)


# -- unsafe models -------------------------------------------------------------------------------------------------
class ReusedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class FunctionalReLU(ReusedReLU):
    def forward(self, x):
        x = torch.relu(self.conv2(torch.nn.functional.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_inplace_relu_model_works_and_is_left_untouched():
    model = small_net(relu=lambda: nn.ReLU(inplace=True))
    x = images(2)
    a = attribute(model, x, 0, "deeplift", progress=False)
    assert "1" in a.model_report["inplace_switched_off"]
    assert np.all(a.relative_completeness_error < 1e-3)
    assert model[1].inplace is True   # the user's model is not modified


def test_reused_module_object_is_cloned_per_place():
    torch.manual_seed(0)
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu, nn.Conv2d(4, 4, 3, padding=1), relu,
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    a = attribute(model, images(2), 1, "deeplift", progress=False)
    assert a.model_report["cloned_reused_modules"] == ["3"]
    assert np.all(a.relative_completeness_error < 1e-3)


@pytest.mark.parametrize("method", ["deeplift", "shap_deep"])
def test_module_called_twice_or_functional_relu_is_named(method):
    x = images(1)
    bg = images(2, seed=3) if method == "shap_deep" else None
    with pytest.raises(ValueError, match=r"'relu' \(2 calls\)"):
        attribute(ReusedReLU(), x, 0, method, baselines=bg, progress=False)
    with pytest.raises(ValueError, match="relu"):
        attribute(FunctionalReLU(), x, 0, method, baselines=bg, progress=False)
    # gradient methods are unaffected by reuse and are allowed
    attribute(ReusedReLU(), x, 0, "integrated_gradients", n_steps=4, progress=False)


# -- bad input -----------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model, x = small_net(), images(2)
    with pytest.raises(ValueError, match=r"class 7 is out of range: the model has 5 outputs"):
        attribute(model, x, 7, "saliency", progress=False)
    with pytest.raises(KeyError, match=r"no layer 'conv9'; valid layer names are: 0, 1, 2"):
        attribute(model, x, UnitTarget(layer="conv9", channel=0), "saliency", progress=False)
    with pytest.raises(ValueError, match=r"channel 99 is out of range"):
        attribute(model, x, UnitTarget(layer="4", channel=99), "saliency", progress=False)
    with pytest.raises(ValueError, match=r"expects 3; inputs must be \(N, 3, H, W\) \(channels last"):
        attribute(model, x.permute(0, 2, 3, 1), 0, "saliency", progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attribute(model, x[0], 0, "saliency", progress=False)
    with pytest.raises(ValueError, match="uint8"):
        attribute(model, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0, "saliency", progress=False)
    with pytest.raises(ValueError, match=r"baselines have shape \(1, 3, 4, 4\)"):
        attribute(model, x, 0, "integrated_gradients", baselines=torch.zeros(1, 3, 4, 4), progress=False)
    with pytest.raises(ValueError, match="baselines have 3 images but inputs have 2"):
        attribute(model, x, 0, "integrated_gradients", baselines=torch.zeros(3, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        attribute(model, x * float("nan"), 0, "saliency", progress=False)
    with pytest.raises(KeyError, match="unknown attribution method 'gradcam'"):
        attribute(model, x, 0, "gradcam", progress=False)
    with pytest.raises(TypeError, match="does not take option"):
        attribute(model, x, 0, "saliency", n_steps=3, progress=False)
    with pytest.raises(ValueError, match="neuroid 5 is out of range"):
        NeuralSiteTarget(layer="4", coef=np.zeros((2, 128)), neuroid=5)
    with pytest.raises(ValueError, match="readout coef has 10 features but layer '4' has 128 units"):
        attribute(model, x, NeuralSiteTarget(layer="4", coef=np.zeros((1, 10))), "saliency", progress=False)


# -- checks ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _trained_square_detector(steps: int = 60) -> tuple[nn.Module, torch.Tensor]:
    """A tiny CNN trained to say whether a bright square sits in the left or right half of a noisy image."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 12 * 12, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rr, cc = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")

    def batch(n, g):
        y = torch.randint(0, 2, (n,), generator=g)
        top = torch.randint(0, 9, (n, 1, 1), generator=g)
        left = torch.randint(0, 3, (n, 1, 1), generator=g) + 6 * y.view(n, 1, 1)
        square = (rr >= top) & (rr < top + 3) & (cc >= left) & (cc < left + 3)
        return 0.3 * torch.randn(n, 3, 12, 12, generator=g) + 2.0 * square[:, None].float(), y

    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        xb, yb = batch(64, g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    x, y = batch(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9, f"the toy model did not learn its task (accuracy {accuracy:.2f})"
    return model.eval(), x[:6]


def test_randomising_the_model_lowers_rank_correlation():
    model, x = _trained_square_detector()
    res = model_randomisation(model, x, 1, "saliency", progress=False)
    assert res.layers == ["5", "2", "0"]   # top-down
    same = attribute(model, x, 1, "saliency", progress=False)
    again = attribute(model, x, 1, "saliency", progress=False)
    assert np.allclose(spearman_rows(same.maps("abs").reshape(6, -1), again.maps("abs").reshape(6, -1)), 1)
    assert res.spearman.shape == (3, 6)
    assert res.mean[-1] < 0.5 and res.mean[-1] < res.mean[0] + 0.05
    ig = model_randomisation(model, x, 1, "integrated_gradients", method_options={"n_steps": 16}, progress=False)
    assert ig.mean[-1] < 0.9


def test_deletion_beats_random_for_a_faithful_map():
    model, x = _trained_square_detector()
    a = attribute(model, x, 1, "integrated_gradients", n_steps=32, progress=False)
    res = deletion_insertion(model, x, a, 1, n_steps=12, n_random=3)
    s = res.summary()
    assert res.deletion.shape == (6, 13)
    with torch.no_grad():
        np.testing.assert_allclose(res.deletion[:, 0], model(x)[:, 1].numpy(), rtol=1e-5)
        np.testing.assert_allclose(res.insertion[:, -1], model(x)[:, 1].numpy(), rtol=1e-5)
    assert s["deletion_gain"] > 0 and s["insertion_gain"] > 0
    # a map that ranks pixels backwards is worse than random
    worse = deletion_insertion(model, x, -a.attributions, 1, n_steps=12, n_random=3).summary()
    assert worse["deletion_gain"] < 0


def test_method_agreement_and_spearman_oracle():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    np.testing.assert_allclose(spearman_rows(a, b), [spearmanr(a[i], b[i])[0] for i in range(4)])
    maps = rng.normal(size=(2, 3, 5, 5))
    agree = method_agreement({"x": maps, "y": maps, "z": -maps * 2, "w": rng.normal(size=(2, 3, 5, 5))})
    m = np.asarray(agree["spearman_mean"])
    assert m[0, 1] == pytest.approx(1) and m[0, 2] == pytest.approx(1)   # |.| maps: sign and scale do not matter
    assert abs(m[0, 3]) < 0.6
