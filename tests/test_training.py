"""Topographic losses and the Lightning module."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from workbench.models import CorticalSheet, build_model
from workbench.training import (SpatialCorrelationLoss, TopographicModule, WeightSmoothnessLoss, parse_topography,
                                sample_neighbourhoods, spatial_correlation_loss)

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(weight=0.5, loss="spatial_correlation", layers=("conv3", "conv4")):
    return {"name": "small_cnn", "num_classes": 10, "width": 4,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "scheduler": "none"},
            "topography": {"layers": list(layers), "weight": weight, "loss": loss,
                           "spatial_correlation": {"neighbourhood_size": 64, "n_neighbourhoods": 4, "pool_size": 64}}}


# -- the TDANN-form activation loss -----------------------------------------------------------------------------
def test_spatial_loss_matches_independent_numpy_scipy():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 5, size=(30, 2))
    resp = rng.normal(size=(16, 30))
    hood = np.array([[0, 3, 5, 7, 11, 12, 20, 29]])
    loss = spatial_correlation_loss(torch.tensor(resp), torch.tensor(pos), torch.tensor(hood), eps=0.0)
    sub = resp[:, hood[0]]
    corr = np.corrcoef(sub.T)
    d = np.linalg.norm(pos[hood[0]][:, None] - pos[hood[0]][None], axis=-1)
    iu = np.triu_indices(len(hood[0]), 1)
    expected = (1 - stats.pearsonr(corr[iu], 1 / (d[iu] + 1)).statistic) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_spatial_loss_finite_and_gradient_safe_on_constant_responses():
    sheet = CorticalSheet((8, 4, 4))
    loss_fn = SpatialCorrelationLoss(sheet, neighbourhood_size=32, n_neighbourhoods=4, pool_size=16)
    for fill in (0.0, 3.0):
        act = torch.full((8, 8, 4, 4), fill, requires_grad=True)
        loss = loss_fn(act)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(act.grad).all()
        assert float(loss.detach()) == pytest.approx(0.5)  # no correlation structure = r 0
    # a few constant units inside otherwise varying responses: still finite
    act = torch.randn(8, 8, 4, 4)
    act[:, :2] = 1.0
    act.requires_grad_(True)
    loss_fn(act).backward()
    assert torch.isfinite(act.grad).all()


def test_spatial_loss_lower_for_smooth_map_than_shuffled():
    sheet = CorticalSheet((16, 4, 4), size_mm=6.0)
    pos = sheet.positions
    rng = np.random.default_rng(0)
    k = rng.normal(size=(64, 2)) / 1.5
    smooth = np.cos(k @ pos.T + rng.uniform(0, 6.3, size=(64, 1))) + 0.2 * rng.normal(size=(64, len(pos)))
    shuffled = smooth[:, rng.permutation(len(pos))]
    loss_fn = SpatialCorrelationLoss(sheet, neighbourhood_size=64, n_neighbourhoods=16, pool_size=64, seed=1)
    a = float(loss_fn(torch.tensor(smooth, dtype=torch.float32)))
    loss_fn = SpatialCorrelationLoss(sheet, neighbourhood_size=64, n_neighbourhoods=16, pool_size=64, seed=1)
    b = float(loss_fn(torch.tensor(shuffled, dtype=torch.float32)))
    assert a < 0.25 and b > 0.4 and a < b - 0.2


def test_spatial_loss_stays_float32_under_autocast():
    sheet = CorticalSheet((8, 4, 4))
    act = torch.randn(16, 8, 4, 4)
    plain = SpatialCorrelationLoss(sheet, neighbourhood_size=64, n_neighbourhoods=4, pool_size=8)(act)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = SpatialCorrelationLoss(sheet, neighbourhood_size=64, n_neighbourhoods=4, pool_size=8)(
            act.to(torch.bfloat16))
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(plain), abs=5e-3)  # only the bf16 rounding of the inputs differs


def test_neighbourhoods_are_nearest_units():
    pos = CorticalSheet((4, 6, 6), jitter=0.0).positions
    hoods = sample_neighbourhoods(pos, 10, 5, seed=0)
    assert hoods.shape == (5, 10)
    for h in hoods:
        centre = pos[h[0]]
        d = np.linalg.norm(pos - centre, axis=1)
        assert d[h].max() <= np.sort(d)[9] + 1e-6
    with pytest.raises(ValueError, match="at least 3 units"):
        sample_neighbourhoods(pos, 2, 5)


# -- the TopoLoss-form weight loss ------------------------------------------------------------------------------
def test_weight_smoothness_zero_for_uniform_sheet_and_safe_on_zeros():
    cfg = tiny_cfg(loss="weight_smoothness", layers=["conv4"])
    model = build_model(cfg)
    loss_fn = parse_topography(cfg, model)[0].loss
    conv = model.conv4[0]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(1, *conv.weight.shape[1:]).expand_as(conv.weight))  # every channel alike
    assert float(loss_fn()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        conv.weight.zero_()
    value = loss_fn()
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(conv.weight.grad).all()
    with torch.no_grad():
        conv.weight.normal_()
    assert float(loss_fn()) > 0.3
    assert sum(1 for _ in loss_fn.parameters()) == 0  # the model owns the weights


# -- configuration errors ---------------------------------------------------------------------------------------
def test_bad_topography_config_errors():
    from workbench.config import ConfigError

    model = build_model(tiny_cfg())
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0"):
        parse_topography(tiny_cfg(weight=-0.1), model)
    with pytest.raises(ConfigError, match="unknown topographic loss 'wiring'.*registered losses: "):
        parse_topography(tiny_cfg(loss="wiring"), model)
    with pytest.raises(ConfigError, match="unknown topographic loss 'spatial_corelation' \\(did you mean "
                                          "'spatial_correlation'\\?\\)"):
        parse_topography(tiny_cfg(loss="spatial_corelation"), model)
    with pytest.raises(ConfigError, match="names layer\\(s\\) \\['fc'\\] that are not in model.topography.layers"):
        parse_topography(tiny_cfg(weight={"conv3": 1.0, "conv4": 1.0, "fc": 1.0}), model)
    with pytest.raises(ConfigError, match="loss has no entry for layer\\(s\\) \\['conv4'\\]"):
        parse_topography(tiny_cfg(loss={"conv3": "spatial_correlation"}), model)
    with pytest.raises(KeyError, match="unknown layer"):
        build_model(tiny_cfg(layers=["conv5"]))
    bad = tiny_cfg()
    bad["topography"]["spatial_correlation"]["neighborhood_size"] = 3
    with pytest.raises(ConfigError, match="unknown key 'neighborhood_size' in model.topography.spatial_correlation "
                                          "\\(did you mean 'neighbourhood_size'\\?\\)"):
        parse_topography(bad, model)
    bad = tiny_cfg()
    bad["topography"]["spatial_correlation"]["n_neighbourhoods"] = 0  # the loss's own value check
    with pytest.raises(ConfigError, match="bad options model.topography.spatial_correlation.*n_neighbourhoods"):
        parse_topography(bad, model)
    bad = tiny_cfg()
    bad["topography"]["spatial_corelation"] = bad["topography"].pop("spatial_correlation")
    with pytest.raises(ConfigError, match="unknown key 'spatial_corelation' in model.topography \\(did you mean "
                                          "'spatial_correlation'\\?\\)"):
        parse_topography(bad, model)


def test_loss_options_come_from_the_loss_signature():
    """A registered loss maps its own options (its constructor's keyword arguments): a plugin loss registered here
    gets typed, checked options and is trained like the built-ins, with no change to the package."""
    from workbench.config import ConfigError
    from workbench.training import LOSSES

    @LOSSES.register("test_l2_activity", citation="A test loss.")
    class ActivityLoss(torch.nn.Module):
        needs_activations = True

        def __init__(self, sheet, scale: float = 1.0, model=None):
            super().__init__()
            self.scale = scale

        def forward(self, activation):
            return self.scale * activation.pow(2).mean()

    try:
        cfg = tiny_cfg(loss="test_l2_activity")
        cfg["topography"]["test_l2_activity"] = {"scale": 2}
        objectives = parse_topography(cfg, build_model(cfg))
        assert [o.loss_name for o in objectives] == ["test_l2_activity"] * 2
        assert objectives[0].loss.scale == 2.0 and isinstance(objectives[0].loss.scale, float)
        cfg["topography"]["test_l2_activity"] = {"scale": "big"}
        with pytest.raises(ConfigError, match="model.topography.test_l2_activity.scale should be a number"):
            parse_topography(cfg, build_model(cfg))
        cfg["topography"]["test_l2_activity"] = {"scael": 1.0}
        with pytest.raises(ConfigError, match="did you mean 'scale'"):
            parse_topography(cfg, build_model(cfg))
    finally:
        LOSSES.remove("test_l2_activity")


def test_optimizer_config_defaults_and_errors():
    from workbench.config import ConfigError

    cfg = tiny_cfg()
    cfg["optimizer"] = {"lr": 0.1}
    module = TopographicModule(build_model(cfg), cfg)
    assert module.optimizer_cfg == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4,
                                    "nesterov": False, "scheduler": "cosine"}
    for bad, message in (({"lr": 0}, r"lr must be > 0, got 0"),
                         ({"name": "adam"}, "did you mean 'adamw'"),
                         ({"schedular": "none"}, "did you mean 'scheduler'")):
        cfg["optimizer"] = bad
        with pytest.raises(ConfigError, match=message):
            TopographicModule(build_model(cfg), cfg)


# -- training --------------------------------------------------------------------------------------------------
def _loader(n=48, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def _train(model_cfg, steps=3, seed=0):
    import lightning as L

    L.seed_everything(seed, verbose=False)
    model = build_model(model_cfg)
    module = TopographicModule(model, model_cfg)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=_loader())
    return module, {k: v.clone() for k, v in model.state_dict().items()}


def test_weight_zero_reproduces_plain_training_bit_for_bit():
    plain_cfg = tiny_cfg()
    plain_cfg["topography"] = {"layers": []}
    _, plain = _train(plain_cfg)
    zero_module, zero = _train(tiny_cfg(weight=0.0))
    assert len(zero_module.objectives) == 2  # the losses were computed (for logging) ...
    for key in plain:
        assert torch.equal(plain[key], zero[key]), key  # ... and changed nothing
    _, topo = _train(tiny_cfg(weight=1.0))
    assert not torch.equal(plain["conv3.0.weight"], topo["conv3.0.weight"])


def test_spatial_loss_decreases_when_trained_alone():
    """Gradient steps on the spatial loss alone (no task loss) lower it: its gradient reaches the weights."""
    cfg = tiny_cfg(weight=1.0, layers=["conv3"])
    torch.manual_seed(0)
    model = build_model(cfg)
    obj = parse_topography(cfg, model)[0]
    x = torch.randn(32, 3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def value():
        obj.loss.generator.manual_seed(0)
        return obj.loss(model.conv3(model.conv2(model.conv1(x))))

    start = float(value())
    for _ in range(10):
        opt.zero_grad()
        value().backward()
        opt.step()
    assert float(value()) < start - 0.05


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch, lightning as L
    from workbench.models import build_model
    from workbench.training import TopographicModule

    class Probe(TopographicModule):
        def on_train_batch_start(self, batch, batch_idx):
            self.seen = getattr(self, "seen", []) + batch[0][:, 0, 0, 0].tolist()

    if __name__ == "__main__":
        out = sys.argv[1]
        cfg = json.loads(sys.argv[2])
        L.seed_everything(0, verbose=False)
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
        model = build_model(cfg)
        init = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
        module = Probe(model, cfg)
        trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, train_dataloaders=data)
        # parameters only: batch-norm running statistics are per-process buffers (DDP re-broadcasts rank 0's at
        # every forward; SyncBatchNorm, in the GPU ddp config, needs CUDA)
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in module.model.parameters())).hexdigest()
        with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"seen": module.seen, "digest": digest, "init": init, "world": trainer.world_size,
                       "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                       "steps": trainer.global_step}, f)
        # tear gloo down before exit: its threads abort the interpreter if still running at shutdown
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tmp_path):
    script = tmp_path / "ddp_probe.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(tiny_cfg(weight=1.0))],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo" and r0["steps"] == r1["steps"] == 2
    assert len(r0["seen"]) == len(r1["seen"]) == 16  # 2 steps x batch 8, per process
    assert not set(r0["seen"]) & set(r1["seen"])     # a DistributedSampler gave each process its own images
    assert r0["digest"] == r1["digest"]              # all-reduced gradients: identical weights
    assert r0["digest"] != r0["init"] and r0["init"] == r1["init"]
