"""Unit ablation, connection deletion, lesion selections and the interventional-alignment statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from workbench.intervention import (Selection, ablate_connections, ablate_units, category_dprime, class_deficits,
                                    disk, disk_around_peak, interventional_alignment, layer_mean_activation,
                                    lesion_specificity, per_class_accuracy, predict_labels, random_disk,
                                    random_units, selectivity_peak, sheet_positions, size_sweep, top_k_selective)
from workbench.models import CorticalSheet
from workbench.models.networks import SmallCNN


def small_model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=10, width=4)
    model.eval()
    return model


def images(n: int = 16, seed: int = 1, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def conv3_output(model, x):
    captured = {}
    h = model.conv3.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach().clone()))
    try:
        model(x)
    finally:
        h.remove()
    return captured["out"]


# -- ablate_units ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("empty", [[], np.zeros((16, 4, 4), dtype=bool), torch.zeros(0, dtype=torch.long)])
def test_ablating_no_units_is_bit_identical(empty):
    model, x = small_model(), images()
    with torch.no_grad():
        clean = model(x)
        with ablate_units(model, "conv3", empty) as handle:
            lesioned = model(x)
    assert torch.equal(clean, lesioned)
    assert handle.n_calls == 1 and handle.units.size == 0


def test_zero_ablation_matches_a_manual_forward_pass():
    """Independent implementation: run the blocks by hand and zero the units in the flattened (C, H, W) tensor."""
    model, x = small_model(), images()
    units = np.array([0, 5, 17, 63, 100, 255])  # conv3 of width 4 on 16 px: (16, 4, 4) = 256 units
    with torch.no_grad():
        h = model.conv3(model.conv2(model.conv1(x)))
        flat = h.reshape(h.shape[0], -1).clone()
        flat[:, units] = 0.0
        manual = model.fc(model.avgpool(model.conv4(flat.reshape(h.shape))))
        with ablate_units(model, "conv3", units):
            hooked = model(x)
            seen = conv3_output(model, x)
    assert torch.equal(manual, hooked)
    assert (seen.reshape(len(x), -1)[:, units] == 0).all()
    keep = np.setdiff1d(np.arange(256), units)
    assert torch.equal(seen.reshape(len(x), -1)[:, keep], h.reshape(len(x), -1)[:, keep])


def test_boolean_mask_and_selection_equal_flat_indices():
    model, x = small_model(), images()
    units = np.array([3, 40, 41, 200])
    mask = np.zeros((16, 4, 4), dtype=bool)
    mask.reshape(-1)[units] = True
    sel = Selection(units, 256, layer="conv3")
    with torch.no_grad():
        outs = []
        for u in (units, mask, torch.from_numpy(mask), sel):
            with ablate_units(model, "conv3", u):
                outs.append(model(x))
    for o in outs[1:]:
        assert torch.equal(outs[0], o)


def test_ablating_all_units_of_a_layer_gives_chance_accuracy():
    # A model trained on a 10-class task far above chance; silencing a whole layer leaves a constant input to the
    # rest of the network, hence one predicted class, hence exactly 1/10 accuracy on a class-balanced set.
    torch.manual_seed(0)
    n_per, n_classes = 20, 10
    templates = torch.randn(n_classes, 3, 8, 8)
    labels = torch.arange(n_classes).repeat_interleave(n_per)
    x = templates[labels] + 0.5 * torch.randn(len(labels), 3, 8, 8)
    model = SmallCNN(num_classes=n_classes, width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    model.eval()
    y = labels.numpy()
    clean_acc = (predict_labels(model, x) == y).mean()
    assert clean_acc > 0.8
    with ablate_units(model, "conv2", np.ones((8, 4, 4), dtype=bool)):
        pred = predict_labels(model, x)
    assert len(np.unique(pred)) == 1
    assert (pred == y).mean() == pytest.approx(1 / n_classes)
    assert (predict_labels(model, x) == y).mean() == clean_acc  # and it comes back


def test_hooks_are_removed_after_an_exception():
    model, x = small_model(), images()
    with torch.no_grad():
        clean = model(x)
    before = {name: len(m._forward_hooks) for name, m in model.named_modules()}
    with pytest.raises(RuntimeError, match="inside the block"):
        with ablate_units(model, "conv3", [1, 2, 3]):
            model(x)
            raise RuntimeError("inside the block")
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == before
    with torch.no_grad():
        assert torch.equal(model(x), clean)


def test_mean_ablation_with_the_reference_mean_keeps_the_mean_activation():
    model, x = small_model(), images(64)
    clean_mean = conv3_output(model, x).mean(0)
    units = np.random.default_rng(0).choice(256, 128, replace=False)
    with torch.no_grad(), ablate_units(model, "conv3", units, mode="mean", reference=x):
        out = conv3_output(model, x)
    torch.testing.assert_close(out.mean(0), clean_mean, rtol=0, atol=1e-5)
    flat = out.reshape(len(x), -1)
    assert torch.equal(flat[:, units], flat[:1, units].expand(len(x), -1))  # ablated units are constant
    # precomputed means (from a DataLoader-style iterable) give the same intervention
    means = layer_mean_activation(model, "conv3", [(x[:32], None), (x[32:], None)])
    with torch.no_grad(), ablate_units(model, "conv3", units, mode="mean", reference=means):
        out2 = conv3_output(model, x)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-6)


def test_mean_reference_does_not_move_batchnorm_statistics():
    model, x = small_model(), images(32)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ablate_units(model, "conv3", [0], mode="mean", reference=x):
        pass
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_gradients_flow_through_unablated_units_only():
    model, x = small_model(), images(4)
    x.requires_grad_(True)
    with ablate_units(model, "conv1", np.ones((4, 16, 16), dtype=bool)):
        model(x).sum().backward()
    assert torch.count_nonzero(x.grad) == 0  # nothing reaches the input through a silenced layer


def test_bad_unit_inputs_give_clear_errors():
    model, x = small_model(), images(2)
    with pytest.raises(ValueError, match="out of range"):
        with ablate_units(model, "conv3", [256]):
            model(x)
    with pytest.raises(ValueError, match="out of range"):
        with ablate_units(model, "conv3", [-1]):
            model(x)
    with pytest.raises(ValueError, match="out of range"):
        with ablate_units(model, "conv3", [10_000], unit_shape=(16, 4, 4)):
            pass  # caught before any forward pass when the unit shape is known
    with pytest.raises(ValueError, match="mask"):
        with ablate_units(model, "conv3", np.zeros((3, 3), dtype=bool)):
            model(x)
    with pytest.raises(ValueError, match="mode"):
        with ablate_units(model, "conv3", [0], mode="noise"):
            pass
    with pytest.raises(ValueError, match="reference"):
        with ablate_units(model, "conv3", [0], mode="mean"):
            pass
    with pytest.raises(KeyError, match="conv3"):
        with ablate_units(model, "conv9", [0]):
            pass
    with pytest.raises(ValueError, match="made for layer 'conv2'"):
        with ablate_units(model, "conv3", Selection([0], 256, layer="conv2")):
            pass
    with pytest.raises(ValueError, match="256"):
        with ablate_units(model, "conv3", Selection([0], 100)):
            model(x)
    # every failed setup left no hook behind
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


# -- ablate_connections ---------------------------------------------------------------------------------------------

def test_ablate_connections_cuts_chosen_channels_and_restores_weights():
    model, x = small_model(), images(4)
    conv = model.conv3[0]
    w_before, param_before = conv.weight.detach().clone(), conv.weight
    captured = {}
    h = conv.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach().clone()))
    with torch.no_grad():
        model(x)
        clean = captured["out"]
        with ablate_connections(model, "conv3", out_channels=[2, 5]) as mask:
            model(x)
            cut = captured["out"]
            assert conv.weight[2].abs().sum() == 0 and conv.weight[5].abs().sum() == 0
            assert torch.equal(conv.weight[0], w_before[0])
        assert mask.shape == conv.weight.shape
    h.remove()
    # the conv has no bias: output channels with every input cut are exactly zero, the others untouched
    assert (cut[:, [2, 5]] == 0).all()
    keep = [c for c in range(16) if c not in (2, 5)]
    assert torch.equal(cut[:, keep], clean[:, keep])
    assert torch.equal(conv.weight, w_before) and conv.weight is param_before


def test_ablate_connections_from_input_channels_equals_zeroing_those_inputs():
    model, x = small_model(), images(4)
    conv = model.conv3[0]
    with torch.no_grad():
        inp = model.conv2(model.conv1(x))
        zeroed = inp.clone()
        zeroed[:, [1, 3]] = 0
        expected = conv(zeroed)
        with ablate_connections(model, "conv3.0", in_channels=[1, 3]):
            got = conv(inp)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_ablate_connections_restores_after_exception_and_checks_masks():
    model = small_model()
    w = model.fc.weight.detach().clone()
    with pytest.raises(RuntimeError):
        with ablate_connections(model, "fc", torch.ones_like(model.fc.weight, dtype=torch.bool)):
            assert model.fc.weight.abs().sum() == 0
            raise RuntimeError("boom")
    assert torch.equal(model.fc.weight, w)
    with pytest.raises(ValueError, match="does not fit"):
        with ablate_connections(model, "fc", torch.ones(3, 3, dtype=torch.bool)):
            pass
    with pytest.raises(ValueError, match="boolean"):
        with ablate_connections(model, "fc", torch.ones_like(model.fc.weight)):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with ablate_connections(model, "fc", out_channels=[10]):
            pass
    with pytest.raises(ValueError, match="no convolution or linear"):
        with ablate_connections(model, "avgpool", out_channels=[0]):
            pass
    assert torch.equal(model.fc.weight, w)


# -- selections -----------------------------------------------------------------------------------------------------

def test_top_k_and_random_sets_are_size_matched():
    rng = np.random.default_rng(0)
    sel_map = rng.normal(size=500)
    sel_map[7] = np.nan
    top = top_k_selective(sel_map, 0.1, layer="L")
    assert len(top) == 50 and 7 not in top.units
    assert np.all(sel_map[top.units].min() >= np.nanmax(np.delete(sel_map, np.r_[top.units, 7])))
    r1, r2 = random_units(500, 0.1, seed=3), random_units(500, 0.1, seed=3)
    assert len(r1) == 50 and np.array_equal(r1.units, r2.units)
    assert len(random_units(500, 50, seed=4, exclude=top).units.tolist()) == 50
    assert not np.intersect1d(random_units(500, 50, seed=4, exclude=top).units, top.units).size


def test_disk_selections_on_a_sheet():
    sheet = CorticalSheet((16, 4, 4), size_mm=8.0, jitter=0.0)
    pos = sheet.positions.astype(np.float64)
    # a smooth bump of selectivity centred at (6, 2) mm, plus noise
    center = np.array([6.0, 2.0])
    bump = np.exp(-((pos - center) ** 2).sum(1) / 2.0) + 0.05 * np.random.default_rng(0).normal(size=len(pos))
    peak, _ = selectivity_peak(bump, pos, smoothing_sigma=0.5)
    assert np.linalg.norm(peak - center) < 0.7
    d = disk_around_peak(bump, pos, size=20, smoothing_sigma=0.5, layer="conv3")
    assert len(d) == 20 and d.kind == "disk_peak"
    dist = np.linalg.norm(pos - np.asarray(d.center), axis=1)
    assert dist[d.units].max() <= np.sort(dist)[19] + 1e-9
    by_radius = disk(pos, d.center, radius=d.radius)
    assert set(d.units) <= set(by_radius.units)
    rd = random_disk(pos, size=20, seed=1, avoid=d.center, min_distance=3.0)
    assert len(rd) == 20 and np.linalg.norm(np.asarray(rd.center) - np.asarray(d.center)) >= 3.0
    sweep = size_sweep(lambda s: disk_around_peak(bump, pos, size=s), [0.02, 0.05, 0.1, 0.2])
    assert [len(s) for s in sweep] == [5, 13, 26, 51]
    assert all(set(a.units) <= set(b.units) for a, b in zip(sweep, sweep[1:]))  # nested disks


def test_bad_selections_give_clear_errors():
    pos = CorticalSheet((4, 4, 4)).positions
    with pytest.raises(ValueError, match="empty"):
        top_k_selective(np.arange(10.0), 0)
    with pytest.raises(ValueError, match="empty"):
        top_k_selective(np.arange(10.0), 0.01)
    with pytest.raises(ValueError, match="empty"):
        Selection(np.array([], dtype=int), 10)
    with pytest.raises(ValueError, match="empty selection"):
        disk(pos, (0.0, 0.0), radius=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        Selection([3, 12], 10)
    with pytest.raises(ValueError, match="same layer"):
        selectivity_peak(np.arange(10.0), pos)
    model = small_model()
    model.cortical_sheets = {"conv4": CorticalSheet((32, 2, 2))}
    with pytest.raises(ValueError, match="no cortical sheet"):
        sheet_positions(model, "conv3")
    assert sheet_positions(model, "conv4").shape == (128, 2)
    with pytest.raises(ValueError, match="grow strictly"):
        size_sweep(lambda s: top_k_selective(np.arange(10.0), s), [3, 3])


def test_category_dprime_matches_welch_t():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 30))
    labels = np.zeros(40, dtype=bool)
    labels[:20] = True
    x[labels, :5] += 1.5
    d = category_dprime(x, labels)[0]
    t = stats.ttest_ind(x[labels], x[~labels], equal_var=False).statistic
    np.testing.assert_allclose(d * np.sqrt(20 / 2), t, rtol=1e-10)
    assert (d[:5] > 0.8).all()
    # integer class labels give one row per class
    assert category_dprime(x, labels.astype(int)).shape == (2, 30)


# -- effects and scores ---------------------------------------------------------------------------------------------

def test_per_class_accuracy_matches_sklearn():
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    np.testing.assert_allclose(per_class_accuracy(pred == y, y, 5), recall_score(y, pred, average=None))
    stacked = np.stack([pred == y, np.ones(300, bool)])
    np.testing.assert_allclose(per_class_accuracy(stacked, y, 5)[1], 1.0)
    np.testing.assert_allclose(class_deficits(np.ones(300, bool), pred == y, y, 5),
                               1 - recall_score(y, pred, average=None))


def _synthetic_sites(n_classes=6, n_sites=6, n_img=60, follow=True, seed=0):
    """Site k's units prefer class k; its lesion makes class k (follow) or a random class (not) fail more."""
    rng = np.random.default_rng(seed)
    units_per = 10
    sel_labels = np.repeat(np.arange(n_classes), n_img // n_classes)
    x = rng.normal(size=(len(sel_labels), n_sites * units_per))
    sites = []
    for k in range(n_sites):
        cols = np.arange(k * units_per, (k + 1) * units_per)
        x[np.ix_(sel_labels == k % n_classes, cols)] += 2.0
        sites.append(cols)
    eval_labels = np.repeat(np.arange(n_classes), 200)
    clean = np.ones(len(eval_labels), bool)
    lesion = np.ones((n_sites, len(eval_labels)), bool)
    for k in range(n_sites):
        hit = k % n_classes if follow else rng.integers(n_classes)
        p_fail = np.where(eval_labels == hit, 0.5, 0.05)
        lesion[k] = rng.random(len(eval_labels)) > p_fail
    return x, sel_labels, sites, clean, lesion, eval_labels


def test_interventional_alignment_detects_selectivity_following_deficits():
    x, sl, sites, clean, lesion, el = _synthetic_sites(follow=True)
    res = interventional_alignment(x, sl, sites, clean, lesion, el, 6, n_bootstrap=200, n_permutations=500)
    assert res["score"] > 0.7 and res["score_ci"][0] > 0.5
    assert res["score_above_mismatched"] > 0.5 and res["permutation_p"] < 0.01
    # the per-site correlation is a plain Pearson r of the two profiles
    k = 2
    r = stats.pearsonr(res["selectivity_profiles"][k], res["deficit_profiles"][k])[0]
    assert res["per_site_r"][k] == pytest.approx(r)


def test_interventional_alignment_is_null_when_deficits_ignore_selectivity():
    x, sl, sites, clean, lesion, el = _synthetic_sites(follow=False, seed=3)
    # deficits now fall on a class unrelated to the site: shuffle which lesion row belongs to which site
    lesion = lesion[np.random.default_rng(5).permutation(len(sites))]
    res = interventional_alignment(x, sl, sites, clean, lesion, el, 6, n_bootstrap=100, n_permutations=300)
    assert res["permutation_p"] > 0.05
    assert res["score_above_mismatched_ci"][0] < 0 < res["score_above_mismatched_ci"][1] + 0.3


def test_lesion_specificity_against_random_controls():
    rng = np.random.default_rng(0)
    n = 400
    target = np.arange(n) < 100
    selective = np.where(target, rng.random(n) < 0.4, rng.random(n) < 0.05).astype(float)
    random = (rng.random((5, n)) < 0.1).astype(float)
    res = lesion_specificity(selective, random, target, n_bootstrap=300)
    assert res["target_damage_selective"] == pytest.approx(selective[target].mean())
    assert res["target_damage_random"] == pytest.approx(random[:, target].mean())
    assert res["specificity_ratio"] == pytest.approx(selective[target].mean() / random[:, target].mean())
    assert res["specificity_ratio_ci"][0] > 1.5 and res["specificity_index_ci"][0] > 0
    assert res["p_index_le_0"] < 0.01
    with pytest.raises(ValueError, match="target"):
        lesion_specificity(selective, random, np.ones(n, bool))


# -- replay from a cached layer output --------------------------------------------------------------------------------

def test_replay_from_a_cached_layer_equals_the_full_ablated_model():
    from workbench.intervention.replay import layer_replay

    model, x = small_model(), images(8)
    replay = layer_replay(model, "conv3", x[:2], leaves=["avgpool"])
    assert replay is not None
    h = conv3_output(model, x)
    units = np.random.default_rng(0).choice(256, 40, replace=False)
    captured = {}
    hook = model.avgpool.register_forward_hook(lambda m, i, o: captured.__setitem__("pool", o.detach().clone()))
    with torch.no_grad():
        with ablate_units(model, "conv3", units) as handle:
            full = model(x)
            pool_full = captured["pool"]
            fast = replay(handle.apply(h))
            pool_fast = captured["pool"]
    hook.remove()
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(pool_fast, pool_full, rtol=0, atol=1e-5)


def test_replay_refuses_a_skip_connection_around_the_layer():
    from workbench.intervention.replay import layer_replay

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(4, 4)
            self.block = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            s = self.stem(x)
            return self.head(s + self.block(s))

    model = Residual()
    assert layer_replay(model, "block", torch.randn(3, 4)) is None
    assert layer_replay(model, "stem", torch.randn(3, 4)) is not None


# -- the lesion runner: replayed and full forward passes agree -------------------------------------------------------

def test_lesion_runner_gives_the_same_numbers_replayed_and_in_full():
    from workbench.intervention.runner import LesionRunner

    model, x = small_model(), images(12)
    units = random_units(256, 30, seed=2)
    fast = LesionRunner(model, "conv3", (16, 4, 4), check_input=x[:2], leaves=["avgpool"])
    slow = LesionRunner(model, "conv3", (16, 4, 4))
    assert fast.replayed and not slow.replayed
    results = []
    for runner in (fast, slow):
        probe = runner.probe(x)
        with runner.lesioned(units) as lesion:
            results.append((lesion.outputs(probe, "avgpool"), lesion.outputs(probe, "conv3"),
                            lesion.predictions(probe)))
    (pool_fast, conv_fast, labels_fast), (pool_slow, conv_slow, labels_slow) = results
    np.testing.assert_allclose(pool_fast, pool_slow, rtol=0, atol=1e-5)
    np.testing.assert_allclose(conv_fast, conv_slow, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels_fast, labels_slow)
    assert (conv_fast[:, units.units] == 0).all()


# -- the registry of lesion selections, splits, plans ----------------------------------------------------------------

def test_every_selective_lesion_names_a_registered_control_and_has_a_citation():
    from workbench.intervention import SELECTIONS, SITES, ControlLesion, SelectiveLesion

    selective = [n for n in SELECTIONS.names() if issubclass(SELECTIONS.get(n), SelectiveLesion)]
    assert {"top_k", "disk_peak"} <= set(selective)
    assert {"random", "random_disk"} <= set(SELECTIONS.names())
    for name in selective:
        assert issubclass(SELECTIONS.get(SELECTIONS.get(name).control), ControlLesion), name
    assert SELECTIONS.get("disk_peak").control == "random_disk" and SELECTIONS.get("top_k").control == "random"
    for registry in (SELECTIONS, SITES):
        assert all(registry.citations(n) for n in registry.names())
    assert any("Blauch" in c for c in SELECTIONS.citations("disk_peak"))
    assert any("Rajalingham" in c for c in SITES.citations("disk"))


def test_stratified_halves_split_every_class_in_half():
    from workbench.intervention import stratified_halves

    labels = np.repeat(np.arange(4), [5, 6, 1, 8])
    first, second = stratified_halves(labels, seed=3)
    assert not np.intersect1d(first, second).size and len(first) + len(second) == labels.size
    for c, n in zip(range(4), [5, 6, 1, 8]):
        assert (labels[first] == c).sum() == (n + 1) // 2 and (labels[second] == c).sum() == n // 2
    again = stratified_halves(labels, seed=3)
    assert np.array_equal(first, again[0]) and not np.array_equal(first, stratified_halves(labels, seed=4)[0])


def test_farthest_point_centers_spread_over_the_sheet():
    from workbench.intervention import farthest_point_centers

    pos = CorticalSheet((16, 4, 4), size_mm=8.0, jitter=0.0).positions.astype(np.float64)
    centers = farthest_point_centers(pos, 4, seed=0)
    assert centers.shape == (4, 2) and len({tuple(c) for c in centers}) == 4
    gaps = np.linalg.norm(centers[:, None] - centers[None], axis=-1)[~np.eye(4, dtype=bool)]
    # greedy farthest points on an 8 mm sheet sit at least ~a quarter of the sheet apart (random ones need not)
    assert gaps.min() > 2.0


def test_plan_pairs_each_selective_lesion_with_its_seeded_size_matched_controls():
    from workbench.intervention import LesionKey, LesionLayer, plan_lesions

    pos = CorticalSheet((16, 4, 4), size_mm=8.0).positions.astype(np.float64)
    rng = np.random.default_rng(0)
    selectivity = {"face": rng.normal(size=256), "body": rng.normal(size=256)}
    with_sheet = LesionLayer("conv3", (16, 4, 4), pos)
    plan = plan_lesions(with_sheet, selectivity, ["disk_peak", "top_k"], [0.05, 20], 20, n_random=3, seed=7)
    assert plan.controls == {"disk_peak": "random_disk", "top_k": "random"} and plan.counts == [13, 20]
    assert plan.main_index == 1 and len(plan.lesions) == 2 * (2 * 2 + 2 * 3)
    for key, selection in plan.lesions.items():
        assert len(selection) == plan.counts[key.size_index] and selection.kind == key.kind
    assert plan.keys("random", "face", 0) == [LesionKey("random", None, 0, r) for r in range(3)]
    assert plan.lesions[LesionKey("random", None, 1, 2)].seed == 7 * 1000 + 17 + 2
    assert plan.lesions[LesionKey("random_disk", None, 1, 2)].seed == 7 * 1000 + 17 + 2 + 500
    without_sheet = plan_lesions(LesionLayer("conv3", (16, 4, 4)), selectivity, ["disk_peak", "top_k"], [0.05],
                                 0.05, n_random=2, seed=0)
    assert without_sheet.controls == {"top_k": "random"}
    with pytest.raises(ValueError, match="grow strictly"):
        plan_lesions(with_sheet, selectivity, ["top_k"], [0.05, 13], 13, n_random=1, seed=0)
