"""The train and topography stages end to end on tiny settings (real CIFAR-10 and 92-image data)."""

import json

import numpy as np
import pytest
import torch
import yaml

from workbench.models import load_checkpoint
from workbench.run import RunDir
from workbench.training.stage import topography_stage, train_stage

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_run_cfg(weight=0.5):
    model = yaml.safe_load((ROOT / "configs/model/small_cnn.yaml").read_text())
    model["width"] = 4
    model["topography"]["weight"] = weight
    model["topography"]["spatial_correlation"].update(neighbourhood_size=64, n_neighbourhoods=4, pool_size=64)
    trainer = yaml.safe_load((ROOT / "configs/trainer/cpu.yaml").read_text())
    trainer.update(max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=2,
                   enable_progress_bar=False, log_every_n_steps=1)
    return {"study": "test", "seed": 0, "device": "cpu",
            "data": {"_target_": "workbench.data.CIFAR10DataModule", "subset": 400, "test_subset": 100,
                     "batch_size": 32, "num_workers": 0, "augment": True, "seed": 0},
            "model": model, "trainer": trainer,
            "logger": yaml.safe_load((ROOT / "configs/logger/csv.yaml").read_text())}


@pytest.mark.slow
def test_train_then_topography_stage(tmp_path, data_root):
    run = RunDir(tmp_path / "run")
    cfg = tiny_run_cfg()
    metrics = train_stage(run, cfg)
    json.dumps(metrics)  # JSON-able
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs"] == 1 and metrics["steps"] == 3
    assert {o["layer"] for o in metrics["objectives"]} == {"conv3", "conv4"}
    assert np.isfinite(metrics["final"]["train/topo_conv3_spatial_correlation"])
    assert (run.path / "checkpoints/model.pt").exists() and (run.path / "checkpoints/last.ckpt").exists()
    assert (run.figures / "train_curves.png").exists()
    assert list((run.path / "logs").rglob("metrics.csv"))
    model = load_checkpoint(run.path / "checkpoints/model.pt")
    assert set(model.cortical_sheets) == {"conv3", "conv4"}

    run.write_stage("train", metrics)
    run.write_config(cfg)
    topo = topography_stage(run, cfg)
    json.dumps(topo)
    for layer in ("conv3", "conv4"):
        section = topo["layers"][layer]
        assert np.isfinite(section["smoothness_index"])
        assert set(section["contrasts"]) == {"face", "body", "animate"}
        assert section["contrasts"]["face"]["n_target"] == 24
        assert section["contrasts"]["animate"]["n_target"] + section["contrasts"]["animate"]["n_reference"] == 92
    for name in ("topography_smoothness", "topography_selectivity_maps"):
        assert (run.figures / f"{name}.png").exists() and (run.figures / f"{name}.pdf").exists()
    with np.load(run.cache / "topography" / "selectivity.npz") as cached:
        assert cached["conv3/face"].shape == (16 * 8 * 8,)


def test_stage_helpers_validate_and_fill_run_paths(tmp_path, data_root):
    from workbench.training.stage import _topography_options, build_datamodule, build_logger, trainer_kwargs

    run = RunDir(tmp_path / "run")
    cfg = tiny_run_cfg()
    logger = build_logger(cfg["logger"], run)
    assert Path(logger.save_dir) == run.path / "logs"
    assert build_logger(None, run) is False
    assert trainer_kwargs({**cfg, "device": "cpu", "trainer": {"accelerator": "gpu"}})["accelerator"] == "cpu"
    with pytest.raises(ValueError, match="set by the train stage"):
        trainer_kwargs({**cfg, "trainer": {"logger": True}})
    cfg["model"]["preprocess"]["image_size"] = 40
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.train_set[0][0].shape == (3, 40, 40)
    with pytest.raises(KeyError, match="unknown topography analysis option"):
        _topography_options({**cfg, "topography": {"treshold": 3}})
    for name in ("cpu", "gpu", "ddp", "ddp_sim"):
        spec = yaml.safe_load((ROOT / f"configs/trainer/{name}.yaml").read_text())
        import lightning as L
        import inspect
        assert set(spec) <= set(inspect.signature(L.Trainer).parameters), name
