"""Invariances the science relies on, checked on many generated cases (hypothesis).

RDMs are symmetric with a zero diagonal; rank comparisons do not see monotone transforms of an RDM; the noise
ceiling's lower bound is not above its upper bound; ridge predictions do not depend on the order of features or of
stimuli; ablating nothing changes nothing and every ablation undoes itself after an exception; integrated gradients
are complete. The cases are drawn deterministically (``derandomize``) so CI sees the same ones on every run, and the
example counts keep the whole file well under a minute.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import squareform
from torch import nn

from workbench.alignment import RidgeEncoder, compare_rdms, compute_rdm, noise_ceiling
from workbench.attribution import attribute
from workbench.attribution.checks import completeness
from workbench.intervention import ablate_connections, ablate_units

# deadline=None: the first example of a test pays for imports and compilation (numba, torch), which is not a bug
CHEAP = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
COSTLY = settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(0, 2 ** 32 - 1)


def _distinct_condensed(rng: np.random.Generator, n: int) -> np.ndarray:
    """A condensed RDM of n stimuli with well-separated entries (no ties a transform could create or break)."""
    p = n * (n - 1) // 2
    return rng.permutation(p) + rng.uniform(0.1, 0.9, p)


# -- RDMs ---------------------------------------------------------------------------------------------------------
@CHEAP
@given(seed=seeds, n_stimuli=st.integers(3, 9), n_units=st.integers(2, 12),
       metric=st.sampled_from(["correlation", "euclidean", "cosine"]), scale=st.floats(1e-3, 1e3))
def test_rdms_are_symmetric_with_zero_diagonal(seed, n_stimuli, n_units, metric, scale):
    # two centred units leave each stimulus one of two patterns, +-(1, -1): often all the same (refused, rightly)
    assume(metric != "correlation" or n_units > 2)
    features = np.random.default_rng(seed).normal(size=(n_stimuli, n_units)) * scale
    rdm = compute_rdm(features, metric)
    assert rdm.shape == (n_stimuli, n_stimuli)
    np.testing.assert_array_equal(rdm, rdm.T)
    np.testing.assert_array_equal(np.diag(rdm), 0.0)
    assert (rdm >= -1e-9 * max(1.0, np.abs(rdm).max())).all()   # dissimilarities, up to rounding


@CHEAP
@given(seed=seeds, n_reps=st.integers(2, 4), n_stimuli=st.integers(3, 7), n_units=st.integers(1, 6))
def test_crossnobis_rdms_are_symmetric_with_zero_diagonal(seed, n_reps, n_stimuli, n_units):
    rdm = compute_rdm(np.random.default_rng(seed).normal(size=(n_reps, n_stimuli, n_units)), "crossnobis")
    np.testing.assert_array_equal(rdm, rdm.T)
    np.testing.assert_array_equal(np.diag(rdm), 0.0)


MONOTONE = {"affine": lambda x: 3.0 * x + 7.0, "exp": lambda x: np.exp(x / x.max()), "cube": lambda x: x ** 3 + x,
            "log": np.log1p}


@CHEAP
@given(seed=seeds, n_stimuli=st.integers(4, 10), method=st.sampled_from(["spearman", "kendall_tau_a"]),
       transform=st.sampled_from(sorted(MONOTONE)), which=st.sampled_from(["model", "data", "both"]))
def test_rank_comparisons_ignore_monotone_transforms(seed, n_stimuli, method, transform, which):
    rng = np.random.default_rng(seed)
    model, data = _distinct_condensed(rng, n_stimuli), _distinct_condensed(rng, n_stimuli)
    f = MONOTONE[transform]
    moved_model = f(model) if which in ("model", "both") else model
    moved_data = f(data) if which in ("data", "both") else data
    assert compare_rdms(moved_model, moved_data, method) == pytest.approx(compare_rdms(model, data, method),
                                                                         abs=1e-12)


@CHEAP
@given(seed=seeds, n_subjects=st.integers(2, 6), n_stimuli=st.integers(4, 9), shared=st.floats(0.0, 3.0),
       method=st.sampled_from(["spearman", "pearson", "kendall_tau_a", "cosine"]))
def test_noise_ceiling_lower_bound_is_not_above_the_upper(seed, n_subjects, n_stimuli, shared, method):
    rng = np.random.default_rng(seed)
    signal = _distinct_condensed(rng, n_stimuli)
    # square RDMs: a (k, P) stack with k == P would read as one square RDM
    subjects = np.stack([squareform(shared * signal + _distinct_condensed(rng, n_stimuli)) for _ in range(n_subjects)])
    lower, upper = noise_ceiling(subjects, method)
    assert lower <= upper + 1e-12
    assert -1 - 1e-12 <= lower and upper <= 1 + 1e-12


# -- ridge ----------------------------------------------------------------------------------------------------------
@COSTLY
@given(seed=seeds, n_stimuli=st.integers(8, 30), n_features=st.integers(2, 40), n_targets=st.integers(1, 3),
       standardize=st.booleans(), alpha_per_target=st.booleans())
def test_ridge_predictions_ignore_the_order_of_features_and_stimuli(seed, n_stimuli, n_features, n_targets,
                                                                     standardize, alpha_per_target):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_stimuli, n_features)) * rng.uniform(0.1, 10, n_features)
    Y = X[:, :2] @ rng.normal(size=(2, n_targets)) + rng.normal(size=(n_stimuli, n_targets))
    X_new = rng.normal(size=(5, n_features))
    options = dict(alphas=np.logspace(-2, 4, 7), standardize=standardize, alpha_per_target=alpha_per_target)
    reference = RidgeEncoder(**options).fit(X, Y).predict(X_new)
    features, stimuli = rng.permutation(n_features), rng.permutation(n_stimuli)
    shuffled = RidgeEncoder(**options).fit(X[stimuli][:, features], Y[stimuli]).predict(X_new[:, features])
    np.testing.assert_allclose(shuffled, reference, rtol=1e-7, atol=1e-9 * np.abs(reference).max())


# -- ablation -------------------------------------------------------------------------------------------------------
def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(5 * 6 * 6, 3)).eval()


def _inputs(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


NOTHING = {"empty list": lambda: [], "empty array": lambda: np.zeros(0, dtype=np.int64),
           "all-false flat mask": lambda: np.zeros(4 * 6 * 6, dtype=bool),
           "all-false (C, H, W) mask": lambda: np.zeros((4, 6, 6), dtype=bool)}


@CHEAP
@given(seed=st.integers(0, 1000), nothing=st.sampled_from(sorted(NOTHING)), mode=st.sampled_from(["zero", "mean"]))
def test_ablating_nothing_is_the_identity(seed, nothing, mode):
    model, x = _net(seed), _inputs(seed)
    with torch.no_grad():
        clean = model(x)
        reference = _inputs(seed + 1) if mode == "mean" else None
        with ablate_units(model, "0", NOTHING[nothing](), mode=mode, reference=reference):
            ablated = model(x)
    assert torch.equal(ablated, clean)


class Interrupted(Exception):
    pass


EXCEPTIONS = [Interrupted, ValueError, KeyError, RuntimeError, KeyboardInterrupt]


@CHEAP
@given(seed=st.integers(0, 1000), layer=st.sampled_from(["0", "2"]), data=st.data(),
       exception=st.sampled_from(EXCEPTIONS), after_forward=st.booleans())
def test_unit_ablation_restores_the_model_after_any_exception(seed, layer, data, exception, after_forward):
    model, x = _net(seed), _inputs(seed)
    n_units = {"0": 4 * 36, "2": 5 * 36}[layer]
    units = data.draw(st.lists(st.integers(0, n_units - 1), min_size=1, max_size=n_units, unique=True))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = model(x)
        with pytest.raises(exception):
            with ablate_units(model, layer, units):
                if after_forward:   # the hook has run (and set up its cache) before the exception
                    model(x)
                raise exception("interrupted inside the ablation")
        assert torch.equal(model(x), clean)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@CHEAP
@given(seed=st.integers(0, 1000), layer=st.sampled_from(["0", "2", "5"]), data=st.data(),
       exception=st.sampled_from(EXCEPTIONS))
def test_connection_ablation_restores_the_weights_after_any_exception(seed, layer, data, exception):
    model, x = _net(seed), _inputs(seed)
    weight = model.get_submodule(layer).weight
    mask = torch.as_tensor(data.draw(st.lists(st.booleans(), min_size=weight.numel(), max_size=weight.numel())))
    before = weight.detach().clone()
    with torch.no_grad():
        clean = model(x)
        with pytest.raises(exception):
            with ablate_connections(model, layer, mask.reshape(weight.shape)):
                assert torch.equal(weight[mask.reshape(weight.shape)], torch.zeros(int(mask.sum())))
                raise exception("interrupted inside the ablation")
        assert torch.equal(model(x), clean)
    assert torch.equal(model.get_submodule(layer).weight, before)


# -- attribution ----------------------------------------------------------------------------------------------------
def _smooth_net(seed: int, width: int) -> nn.Sequential:
    """Smooth activations: the path integral converges fast, so a fixed number of steps must be complete."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Tanh(), nn.Conv2d(width, width, 3, padding=1),
                         nn.Softplus(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 4)).eval()


@COSTLY
@given(seed=st.integers(0, 1000), width=st.integers(2, 6), target=st.integers(0, 3), baseline=st.floats(-2, 2),
       input_scale=st.floats(0.1, 3.0))
def test_integrated_gradients_are_complete(seed, width, target, baseline, input_scale):
    model = _smooth_net(seed, width)
    x = _inputs(seed) * input_scale
    base = torch.full_like(x[:1], baseline)
    result = attribute(model, x, target, "integrated_gradients", baselines=base, n_steps=64, progress=False)
    with torch.no_grad():
        expected = (model(x)[:, target] - model(base)[:, target]).double().numpy()
    check = completeness(result)
    np.testing.assert_allclose(check["output_difference"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(check["sum_attributions"], expected, rtol=1e-3, atol=1e-4)
    assume(np.all(np.abs(expected) > 1e-3))   # the relative error is only meaningful away from a zero difference
    assert check["relative_error_max"] < 1e-2
