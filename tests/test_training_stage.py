"""The train and topography stages end to end on tiny settings (real CIFAR-10 and 92-image data)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.config import ConfigError
from workbench.context import StageContext
from workbench.models import load_checkpoint
from workbench.pipeline import get_metric, run_stage
from workbench.run import RunDir

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
            "logger": yaml.safe_load((ROOT / "configs/logger/csv.yaml").read_text()),
            "topography": yaml.safe_load((ROOT / "configs/topography/default.yaml").read_text())}


def _check_headline(stage, section):
    metrics = {stage: json.loads(json.dumps(section))}
    assert section["headline"]
    for entry in section["headline"]:
        assert entry["key"].startswith(stage + ".")
        assert get_metric(metrics, entry["key"]) == entry["value"]


@pytest.mark.slow
def test_train_then_topography_stage(tmp_path, data_root):
    run = RunDir(tmp_path / "run")
    cfg = tiny_run_cfg()
    metrics = run_stage("train", cfg, run)
    json.dumps(metrics)  # JSON-able
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs"] == 1 and metrics["steps"] == 3
    assert {o["layer"] for o in metrics["objectives"]} == {"conv3", "conv4"}
    assert np.isfinite(metrics["final"]["train/topo_conv3_spatial_correlation"])
    assert run.has_checkpoint() and (run.checkpoints / "last.ckpt").exists()
    assert (run.figures / "train_curves.png").exists()
    assert list((run.path / "logs").rglob("metrics.csv"))
    assert any("small CNN" in r for r in metrics["references"]) and any("Margalit" in r for r in metrics["references"])
    _check_headline("train", metrics)
    assert metrics["headline"][0]["percent"] and metrics["headline"][0]["key"] == "train.test_accuracy"
    model = load_checkpoint(run.checkpoint_path)
    assert set(model.cortical_sheets) == {"conv3", "conv4"}

    run.write_stage("train", metrics)
    topo = run_stage("topography", cfg, run)
    json.dumps(topo)
    for layer in ("conv3", "conv4"):
        section = topo["layers"][layer]
        assert np.isfinite(section["smoothness_index"])
        assert set(section["contrasts"]) == {"face", "body", "animate"}
        assert section["contrasts"]["face"]["n_target"] == 24
        assert section["contrasts"]["animate"]["n_target"] + section["contrasts"]["animate"]["n_reference"] == 92
    _check_headline("topography", topo)
    assert [h["key"] for h in topo["headline"]] == ["topography.layers.conv3.smoothness_index",
                                                   "topography.layers.conv4.smoothness_index",
                                                   "topography.orientation.conv3.pinwheel_density"]
    orientation = topo["orientation"]["conv3"]  # the first analysed layer, by default
    assert 0 <= orientation["mean_osi"] <= 1 and orientation["n_pinwheels"] == sum(
        orientation["pinwheel_charges"].values())
    morans = topo["layers"]["conv3"]["contrasts"]["face"]["morans_i"]
    assert morans is None or 0 < morans["p_value"] <= 1
    assert any("Kriegeskorte" in r for r in topo["references"])
    for name in ("topography_smoothness", "topography_selectivity_maps", "topography_orientation_maps"):
        assert (run.figures / f"{name}.png").exists() and (run.figures / f"{name}.pdf").exists()
    cached = run.load_arrays(run.topography_maps_path)
    assert cached["conv3/face"].shape == (16 * 8 * 8,)


def test_topography_without_training_uses_default_sheets_and_configured_contrasts(tmp_path, data_root):
    """No checkpoint: the seeded untrained model, its conv layers on default sheets; contrasts from the config."""
    cfg = tiny_run_cfg()
    cfg["model"]["topography"] = {"layers": []}
    cfg["topography"] = {"layers": ["conv2"], "contrasts": {"face": "body"}, "max_units": 500, "max_pairs": 5000}
    run = RunDir(tmp_path / "run")
    topo = run_stage("topography", cfg, run)
    assert list(topo["layers"]) == ["conv2"] and list(topo["layers"]["conv2"]["contrasts"]) == ["face"]
    assert topo["layers"]["conv2"]["contrasts"]["face"]["n_reference"] == 24  # bodies only, not every non-face
    assert topo["layers"]["conv2"]["curve"]["n_units_used"] == 500

    cfg["topography"] = {"contrasts": {"faces": None}}
    with pytest.raises(ConfigError, match="topography.contrasts: the stimulus metadata has no column.*'faces'"):
        run_stage("topography", cfg, RunDir(tmp_path / "run2"))


def test_topography_config_is_validated(tmp_path):
    from workbench.config import parse
    from workbench.training.config import TopographyConfig

    with pytest.raises(ConfigError, match="unknown key 'treshold' in topography"):
        StageContext.create({"topography": {"treshold": 3}}, RunDir(tmp_path), "topography")

    with pytest.raises(ConfigError, match="did you mean 'patch_threshold'"):
        parse(TopographyConfig, {"patch_treshold": 3}, "topography")
    with pytest.raises(ConfigError, match="topography.selectivity must be one of 't', 'dprime'"):
        parse(TopographyConfig, {"selectivity": "z"}, "topography")
    with pytest.raises(ConfigError, match="max_distance_mm must be > 0"):
        parse(TopographyConfig, {"max_distance_mm": 0}, "topography")
    assert parse(TopographyConfig, {"layers": "conv3"}, "topography").layers == ["conv3"]


def test_stage_helpers_validate_and_fill_run_paths(tmp_path, data_root):
    from workbench.training.stage import build_logger, trainer_kwargs

    run = RunDir(tmp_path / "run")
    cfg = tiny_run_cfg()
    logger = build_logger(cfg["logger"], run)
    assert Path(logger.save_dir) == run.path / "logs"
    assert build_logger(None, run) is False
    assert trainer_kwargs({**cfg, "device": "cpu", "trainer": {"accelerator": "gpu"}})["accelerator"] == "cpu"
    with pytest.raises(ConfigError, match="set by the train stage"):
        trainer_kwargs({**cfg, "trainer": {"logger": True}})
    cfg["model"]["preprocess"]["image_size"] = 40
    dm = StageContext.create(cfg, run, "train").datamodule()
    dm.setup()
    assert dm.train_set[0][0].shape == (3, 40, 40)
    for name in ("cpu", "gpu", "ddp", "ddp_sim"):
        spec = yaml.safe_load((ROOT / f"configs/trainer/{name}.yaml").read_text())
        import inspect

        import lightning as L
        assert set(spec) <= set(inspect.signature(L.Trainer).parameters), name
