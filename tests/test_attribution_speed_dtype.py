"""Attribution in the model's dtype, and the fast path: no copy when the model is safe, f(x) from the library's own
forward pass, one-time probes; every answer checked against direct captum / shap calls."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from workbench.attribution import Saliency, UnitTarget, attribute
from workbench.attribution.methods import prepare_baselines, prepare_inputs
from workbench.attribution.safety import clear_model_cache, prepare_model


def small_net(dtype=torch.float32, seed: int = 0, relu=nn.ReLU) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), relu(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), relu(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).eval().to(dtype)


def images(n=3, seed=1, size=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g).to(dtype)


class SingleOutput(nn.Module):
    """What a shap user writes to explain one class: the model reduced to that logit."""

    def __init__(self, model, index):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x):
        return self.model(x)[:, self.index:self.index + 1]


def count_forwards(model: nn.Module) -> list[int]:
    """Rows of every forward pass of ``model`` (a hook of the test's own)."""
    rows: list[int] = []
    model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    return rows


def seeded(fn, seed=3):
    torch.manual_seed(seed)
    np.random.seed(seed)
    return fn()


# -- dtype --------------------------------------------------------------------------------------------------------
def test_float64_model_equals_direct_captum_calls_in_float64():
    from captum.attr import DeepLift, GradientShap, IntegratedGradients, NoiseTunnel, Saliency as CaptumSaliency

    model, x, bg = small_net(torch.float64), images(dtype=torch.float64), images(4, seed=5, dtype=torch.float64)
    zeros = torch.zeros_like(x)
    direct = {
        "saliency": lambda: CaptumSaliency(model).attribute(x.clone().requires_grad_(), target=1),
        "smoothgrad": lambda: seeded(lambda: NoiseTunnel(CaptumSaliency(model)).attribute(
            x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=1)),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(x, zeros, target=1, n_steps=16),
        "gradient_shap": lambda: seeded(lambda: GradientShap(model).attribute(x, bg, n_samples=6, target=1)),
        "deeplift": lambda: DeepLift(small_net(torch.float64)).attribute(x, zeros, target=1),
    }
    options = {"smoothgrad": dict(nt_samples=4, stdevs=0.2), "integrated_gradients": dict(n_steps=16),
               "gradient_shap": dict(n_samples=6, seed=3, baselines=bg)}
    for method, call in direct.items():
        opts = dict(options.get(method, {}))
        run = lambda: attribute(model, x.float(), 1, method, progress=False, **opts)  # noqa: E731
        # float32 inputs are cast to the model's float64, as the baselines are
        ours = seeded(run) if method == "smoothgrad" else run()
        assert ours.attributions.dtype == np.float64, method
        np.testing.assert_allclose(ours.attributions, call().detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=method)
        with torch.no_grad():
            np.testing.assert_allclose(ours.outputs, model(x)[:, 1].numpy(), rtol=1e-12, err_msg=method)


def test_float64_unit_target_and_shap_methods():
    import shap

    model, x, bg = small_net(torch.float64), images(dtype=torch.float64), images(4, seed=5, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    model[:5](xg)[:, 4].mean(dim=(1, 2)).sum().backward()
    unit = attribute(model, x, UnitTarget(layer="4", channel=4), "saliency", abs=False, progress=False)
    np.testing.assert_allclose(unit.attributions, xg.grad.numpy(), rtol=1e-12, atol=1e-15)
    # plain GradientExplainer allocates its samples in torch's default dtype: float64 for the comparison (the
    # models are built outside that block: a float64 default changes their initial weights)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        plain_gradient = shap.GradientExplainer(SingleOutput(model, 2), bg).shap_values(x, nsamples=16, rseed=4)
    finally:
        torch.set_default_dtype(previous)
    plain_deep = shap.DeepExplainer(SingleOutput(small_net(torch.float64), 2), bg).shap_values(
        x, check_additivity=False)
    ours = attribute(model, x, 2, "shap_gradient", baselines=bg, n_samples=16, seed=4, progress=False)
    assert torch.get_default_dtype() == previous   # our call put it back too
    np.testing.assert_allclose(ours.attributions, np.asarray(plain_gradient)[..., 0], rtol=1e-10, atol=1e-14)
    ours = attribute(model, x, 2, "shap_deep", baselines=bg, progress=False)
    np.testing.assert_allclose(ours.attributions, np.asarray(plain_deep)[..., 0], rtol=1e-10, atol=1e-14)
    assert np.all(ours.relative_completeness_error < 1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_on_cpu_equals_direct_captum(dtype):
    from captum.attr import DeepLift, GradientShap, IntegratedGradients, Saliency as CaptumSaliency

    model, x, bg = small_net(dtype), images(dtype=dtype), images(4, seed=5, dtype=dtype)
    ours = attribute(model, x.float(), 1, "saliency", abs=False, progress=False)
    plain = CaptumSaliency(model).attribute(x.clone().requires_grad_(), target=1, abs=False)
    assert plain.dtype == dtype and ours.attributions.dtype == np.float32   # numpy has no bfloat16: widened
    np.testing.assert_array_equal(ours.attributions, plain.float().numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(ours.outputs, model(x)[:, 1].double().numpy())
    ours = attribute(model, x, 1, "integrated_gradients", n_steps=8, progress=False)
    plain = IntegratedGradients(model).attribute(x, torch.zeros_like(x), target=1, n_steps=8)
    np.testing.assert_allclose(ours.attributions, plain.float().numpy(), rtol=1e-2, atol=1e-3)
    ours = attribute(model, x, 1, "deeplift", progress=False)
    plain = DeepLift(small_net(dtype)).attribute(x, torch.zeros_like(x), target=1)
    np.testing.assert_array_equal(ours.attributions, plain.float().detach().numpy())
    # captum's GradientShap adds noise made in the default dtype; ours makes it in the model's dtype
    ours = attribute(model, x, 1, "gradient_shap", baselines=bg, n_samples=4, seed=3, progress=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        plain = seeded(lambda: GradientShap(model).attribute(x, bg, n_samples=4, target=1))
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_array_equal(ours.attributions, plain.float().numpy())
    assert torch.get_default_dtype() == previous


def test_inputs_and_baselines_follow_the_model_dtype_and_bfloat16_shap_is_refused():
    model = small_net(torch.float64)
    x = prepare_inputs(model, images().numpy())
    assert x.dtype == torch.float64
    assert prepare_baselines(0.5, x, distribution=False).dtype == torch.float64
    assert prepare_baselines(images(2).half(), x, distribution=True).dtype == torch.float64
    with pytest.raises(ValueError, match="numpy, which has no bfloat16"):
        attribute(small_net(torch.bfloat16), images(), 0, "shap_deep", baselines=images(2), progress=False)


# -- the model itself, no copy, nothing left on it ------------------------------------------------------------------
def test_safe_model_runs_as_is_and_is_left_as_it_was():
    model, x = small_net(), images()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for method in ("saliency", "integrated_gradients", "deeplift", "gradient_shap", "shap_gradient", "shap_deep"):
        bg = images(2, seed=4) if method in ("gradient_shap", "shap_gradient", "shap_deep") else None
        a = attribute(model, x, UnitTarget(layer="4", channel=1), method, baselines=bg, progress=False,
                      **({"n_samples": 4} if method in ("gradient_shap", "shap_gradient") else {}))
        # shap calls zero_grad and sets attributes on modules: it runs on a private copy
        assert a.model_report["copied"] == method.startswith("shap"), method
        for m in model.modules():
            assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), (method, m)
            assert not any(hasattr(m, k) for k in ("input", "output", "x", "y")), (method, m)
        assert all(p.requires_grad and torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
        assert model[1].inplace is False and not model.training


def test_cached_copy_gets_current_weights_and_a_changed_structure_a_new_copy():
    model = small_net(relu=lambda: nn.ReLU(inplace=True))
    x = images()
    first = Saliency(model, 2, abs=False)
    a = first.attribute(x, progress=False)
    assert a.model_report["copied"] and "in-place modules" in a.model_report["copy_reasons"]
    second = Saliency(model, 2, abs=False)
    assert second.model is first.model   # one cached copy per model and device
    with torch.no_grad():
        for p in model.parameters():
            p.data.mul_(1.5)   # .data: no version bump; the copy must still see it
    reference = small_net()
    reference.load_state_dict(model.state_dict())
    expected = attribute(reference, x, 2, "saliency", abs=False, progress=False).attributions
    for method in (first, second):   # a method object reused after the change, and a new one
        np.testing.assert_allclose(method.attribute(x, progress=False).attributions, expected, rtol=1e-5)
    model[3] = nn.Conv2d(6, 8, 3, padding=1)   # a new module: a new copy
    again = Saliency(model, 2, abs=False)
    assert again.model is not first.model
    reference[3] = model[3]
    np.testing.assert_allclose(again.attribute(x, progress=False).attributions,
                               attribute(reference, x, 2, "saliency", abs=False, progress=False).attributions,
                               rtol=1e-5)
    clear_model_cache()
    assert Saliency(model, 2).model is not again.model


def test_model_in_training_mode_or_elsewhere_is_copied_and_not_switched():
    model = small_net().train()
    prepared = prepare_model(model, "cpu")
    assert prepared.copied and prepared.report["copy_reasons"] == ["training mode"]
    assert not prepared.model.training and model.training
    assert not prepare_model(small_net(), "cpu").copied


# -- f(x) from the library's own pass; one-time probes --------------------------------------------------------------
def test_forward_passes_per_call():
    model, x = small_net(), images(4)
    rows = count_forwards(model)
    saliency = attribute(model, x, 1, "saliency", progress=False)
    assert rows[-1:] == [4]   # after the one-time probe: captum's pass only, f(x) read from it
    rows.clear()
    attribute(model, x, 1, "saliency", progress=False)
    assert rows == [4]
    rows.clear()
    deeplift = attribute(model, x, 1, "deeplift", progress=False)
    assert rows.count(8) == 1 and sum(rows) - 8 <= 2   # one stacked pass; the first module-rule check runs 2 x 1
    rows.clear()
    deeplift = attribute(model, x, 1, "deeplift", progress=False)
    assert rows == [8]
    with torch.no_grad():
        expected = model(x)[:, 1].double().numpy()
        base = model(torch.zeros_like(x))[:, 1].double().numpy()
    np.testing.assert_allclose(saliency.outputs, expected, rtol=1e-6)
    np.testing.assert_allclose(deeplift.outputs, expected, rtol=1e-6)
    np.testing.assert_allclose(deeplift.baseline_outputs, base, rtol=1e-6)
    rows.clear()
    ig = attribute(model, x, 1, "integrated_gradients", n_steps=8, internal_batch_size=16, progress=False)
    assert rows == [16, 16, 4 + 1]   # captum's passes, then f(x) and the shared zero baseline once
    np.testing.assert_allclose(ig.outputs, expected, rtol=1e-6)
    np.testing.assert_allclose(ig.baseline_outputs, base, rtol=1e-6)
    rows.clear()
    maps_only = attribute(model, x, 1, "integrated_gradients", n_steps=8, internal_batch_size=16, progress=False,
                          completeness=False)
    assert rows == [16, 16] and maps_only.outputs is None and maps_only.delta is None
    np.testing.assert_array_equal(maps_only.attributions, ig.attributions)


def test_alternating_captum_and_shap_keep_the_copy_and_the_probes():
    from workbench.attribution import ShapDeep

    model, x, bg = small_net(), images(2), images(3, seed=5)
    rows = count_forwards(model)
    attribute(model, x, 1, "saliency", progress=False)
    shap_copy = ShapDeep(model, 1).model
    rows.clear()
    attribute(model, x, 1, "saliency", progress=False)   # on the model itself: no new probe
    assert rows == [2]
    attribute(model, x, 1, "shap_deep", baselines=bg, progress=False)
    assert ShapDeep(model, 1).model is shap_copy


def test_changed_layer_shape_after_the_probe_is_named():
    model, x = small_net(), images()
    attribute(model, x, UnitTarget(layer="4", channel=0), "saliency", progress=False)
    model[2].kernel_size = model[2].stride = 4   # a setting, not a new module: the remembered shape is stale
    with pytest.raises(ValueError, match=r"layer '4' gives units of shape \(8, 2, 2\).*clear_model_cache"):
        attribute(model, x, UnitTarget(layer="4", channel=0), "saliency", progress=False)
    clear_model_cache()
    a = attribute(model, x, UnitTarget(layer="4", channel=0), "saliency", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(a.outputs, model[:5](x)[:, 0].mean(dim=(1, 2)).numpy(), rtol=1e-6)


# -- seeded draws ---------------------------------------------------------------------------------------------------
def test_gradient_shap_chunks_draw_one_stream():
    """Seeded once per call: images in different chunks get independent draws, and one chunk equals one captum
    call over the same images."""
    from captum.attr import GradientShap

    model, bg = small_net(), images(4, seed=5)
    x = images(1).repeat(2, 1, 1, 1)   # the same image twice
    chunked = attribute(model, x, 1, "gradient_shap", baselines=bg, n_samples=4, internal_batch_size=4, seed=3,
                        progress=False)
    assert not np.allclose(chunked.attributions[0], chunked.attributions[1])
    one = attribute(model, x, 1, "gradient_shap", baselines=bg, n_samples=4, internal_batch_size=8, seed=3,
                    progress=False)
    plain = seeded(lambda: GradientShap(model).attribute(x, bg, n_samples=4, target=1))
    np.testing.assert_allclose(one.attributions, plain.numpy(), rtol=1e-5, atol=1e-7)


def test_shap_methods_equal_plain_shap_for_one_output():
    import shap

    model, x, bg = small_net(), images(3), images(4, seed=5)
    ours = attribute(model, x, 2, "shap_gradient", baselines=bg, n_samples=32, seed=7, internal_batch_size=8,
                     progress=False)
    plain = shap.GradientExplainer(SingleOutput(model, 2), bg).shap_values(x, nsamples=32, rseed=7)
    np.testing.assert_allclose(ours.attributions, np.asarray(plain)[..., 0], rtol=1e-5, atol=1e-7)
    ours = attribute(model, x, 2, "shap_deep", baselines=bg, progress=False)
    plain = shap.DeepExplainer(SingleOutput(copy.deepcopy(model), 2), bg).shap_values(x, check_additivity=False)
    np.testing.assert_allclose(ours.attributions, np.asarray(plain)[..., 0], rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(ours.baseline_outputs, np.full(3, model(bg)[:, 2].mean().item()), rtol=1e-5)


class Nested(nn.Module):
    """A model that is not a container: shap's DeepExplainer cleans up only below containers."""

    def __init__(self):
        super().__init__()
        self.body = small_net()

    def forward(self, x):
        return self.body(x)


def test_shap_deep_leaves_its_cached_copy_clean_and_a_failed_call_drops_it(monkeypatch):
    from shap.explainers._deep import deep_pytorch

    from workbench.attribution import ShapDeep

    model, x, bg = Nested().eval(), images(2), images(3, seed=5)
    first = ShapDeep(model, 1)
    names = [n for n, _ in first.model.named_parameters()]
    first.attribute(x, bg, progress=False)
    assert [n for n, _ in first.model.named_parameters()] == names   # shap's x / y parameters removed
    again = ShapDeep(model, 1)
    assert again.model is first.model

    def fail(self, idx, inputs):
        raise RuntimeError("failed half-way")

    monkeypatch.setattr(deep_pytorch.PyTorchDeep, "gradient", fail)
    with pytest.raises(RuntimeError, match="half-way"):
        again.attribute(x, bg, progress=False)
    assert any(m._forward_hooks for m in again.model.modules())   # what shap left behind ...
    monkeypatch.undo()
    fresh = ShapDeep(model, 1)
    assert fresh.model is not again.model   # ... is never used again
    np.testing.assert_allclose(fresh.attribute(x, bg, progress=False).attributions,
                               first.attribute(x, bg, progress=False).attributions, rtol=1e-6)
