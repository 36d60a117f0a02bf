"""Nothing runs from a data file, nothing cached is trusted blindly, no run is overwritten (issue 13)."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from workbench.config import ConfigError
from workbench.data import CIFAR10DataModule, ChecksumError
from workbench.data import cifar
from workbench.run import ArtefactError, RunDir, RunLockedError


# -- CIFAR-10: no code runs from a batch file, every batch is hash-checked -------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar_copy(tmp_path, data_root):
    """A CIFAR-10 folder of links to the mirror's batches (replace one to tamper with it)."""
    folder = tmp_path / "cifar10" / cifar.BATCH_FOLDER
    folder.mkdir(parents=True)
    for path in (data_root / "cifar10" / cifar.BATCH_FOLDER).iterdir():
        (folder / path.name).symlink_to(path)
    return folder


def test_a_pickle_payload_in_a_batch_never_runs(tmp_path, data_root):
    folder = _cifar_copy(tmp_path, data_root)
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").unlink()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": _Payload(marker)}, protocol=2))
    with pytest.raises(ChecksumError, match="data_batch_1.*changed or replaced"):
        CIFAR10DataModule(root=tmp_path / "cifar10", subset=100).setup()
    assert not marker.exists()
    cifar.write_manifest(folder)  # even a file whose hash is vouched for cannot run code
    with pytest.raises(cifar.UnsafePickleError, match="posix.system|os.system"):
        cifar.load_batch(folder / "data_batch_1")
    assert not marker.exists()


def test_a_rebuilt_mirror_loads_through_its_manifest(tmp_path):
    folder = tmp_path / cifar.BATCH_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in cifar.TRAIN_BATCHES + cifar.TEST_BATCHES:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ChecksumError, match="SHA256SUMS"):
        cifar.load_split(tmp_path, train=True)
    cifar.write_manifest(folder)
    images, labels, hashes = cifar.load_split(tmp_path, train=True)
    assert images.shape == (100, 32, 32, 3) and labels.tolist()[:10] == list(range(10)) and len(hashes) == 5


def test_the_training_data_hashes_are_recorded(data_root):
    dm = CIFAR10DataModule(subset=100, test_subset=50)
    dm.setup()
    assert sorted(os.path.basename(p) for p in dm.data_files) == sorted(cifar.TRAIN_BATCHES + cifar.TEST_BATCHES)
    assert set(dm.data_files.values()) <= set(cifar.MIRROR_SHA256.values())


# -- artefacts: hashed when written, checked when read, the writer reruns ---------------------------------------------
def test_a_permuted_activation_cache_is_detected_and_recomputed(tiny_run, tiny_config, tmp_path):
    from workbench.features.extract import Activations
    from workbench.pipeline import run_pipeline

    source, metrics = tiny_run
    run = RunDir(shutil.copytree(source.path, tmp_path / "run"))
    path = run.activations_path("kriegeskorte92")
    acts = Activations.load(path)
    order = np.random.default_rng(0).permutation(len(acts.stimulus_ids))
    permuted = {layer: acts[layer][order] for layer in acts.layers}
    Activations(permuted, acts.stimulus_ids, acts.unit_shapes, acts.projection).save(path)
    with pytest.raises(ArtefactError, match="kriegeskorte92.npz changed after it was written.*extract stage"):
        run.load_activations("kriegeskorte92")
    run.drop_stage("align")
    lines = []
    again = run_pipeline(tiny_config, run, stages=["extract", "align"], log=lines.append)
    assert any("kriegeskorte92.npz changed" in line for line in lines)
    for key in ("best_hIT_score", "best_mIT_score", "best_ridge_cowley_v4_210325_median_r"):
        assert again["align"]["summary"][key] == pytest.approx(metrics["align"]["summary"][key], abs=1e-9), key


def test_a_truncated_cache_names_its_file(tmp_path):
    run = RunDir(tmp_path)
    run.writing_stage = "topography"
    path = run.save_arrays(run.topography_maps_path, a=np.arange(10.0))
    path.write_bytes(path.read_bytes()[:40])
    os.utime(path, ns=(1, 1))  # a new mtime: the hash is computed again
    with pytest.raises(ArtefactError, match=r"selectivity.npz changed.*topography stage"):
        run.load_arrays(path)
    run.discard_artefact(path)
    path.write_bytes(b"PK\x03\x04 cut short")  # no record: the file is read, and cannot be
    with pytest.raises(ArtefactError, match=r"selectivity.npz cannot be read.*topography"):
        run.load_arrays(path)


def test_metrics_json_is_strict_and_keeps_its_nans(tmp_path):
    run = RunDir(tmp_path)
    run.write_stage("align", {"r": float("nan"), "per_layer": [1.0, float("inf")], "ok": 2})

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    strict = json.loads(run.metrics_path.read_text(), parse_constant=refuse)
    assert strict["align"]["r"] is None and strict["align"]["nonfinite"] == {"r": "nan", "per_layer/1": "inf"}
    back = run.metrics()["align"]
    assert np.isnan(back["r"]) and back["per_layer"] == [1.0, float("inf")] and "nonfinite" not in back


def test_an_unreadable_metrics_json_or_last_ckpt_is_set_aside(tmp_path):
    run = RunDir(tmp_path)
    run.write_stage("train", {"x": 1})
    run.metrics_path.write_text('{"train": {"x"')
    assert run.metrics() == {} and (tmp_path / "metrics.json.corrupt").is_file()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run.training_resume_path is None and (tmp_path / "checkpoints" / "last.ckpt.corrupt").is_file()


# -- runs: locked, never half-resumed, interrupted cleanly --------------------------------------------------------------
def test_a_second_process_on_a_run_is_refused_with_the_holders_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from workbench.run import RunDir
        with RunDir({str(tmp_path)!r}).lock():
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            with RunDir(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunDir(tmp_path).lock():  # the OS released the dead holder's lock
        with RunDir(tmp_path).lock():  # and a process may nest its own
            pass


def _tiny_pipeline_config(tiny_config, stages):
    return {**tiny_config, "stages": stages}


def test_no_stages_is_an_error(tiny_config, tmp_path):
    from workbench.pipeline import run_pipeline

    with pytest.raises(ConfigError, match="`stages` is empty"):
        run_pipeline(_tiny_pipeline_config(tiny_config, []), RunDir(tmp_path))
    assert not (tmp_path / "config.yaml").exists()


def test_an_interrupt_records_the_failure_and_leftover_temp_files_go(tiny_config, tmp_path, monkeypatch):
    from workbench import pipeline

    run = RunDir(tmp_path)
    leftover = run.cache / ".lesions.npz.abc.tmp"
    leftover.write_bytes(b"half")

    def interrupted(name, cfg, run, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_stage", interrupted)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(_tiny_pipeline_config(tiny_config, ["train", "report"]), run, log=lines.append)
    assert not leftover.exists()
    assert run.failure()["stage"] == "train" and run.failure()["missing"] == ["train", "report"]
    assert any("was interrupted" in line for line in lines)
    assert any(f"workbench resume {run.path}" in line for line in lines)


def test_the_report_reruns_when_a_stage_before_it_ran(tiny_config, tmp_path, monkeypatch):
    from workbench import pipeline

    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda name, cfg, run, log: ran.append(name) or {"ok": 1})
    run = RunDir(tmp_path)
    cfg = _tiny_pipeline_config(tiny_config, ["train", "report"])
    pipeline.run_pipeline(cfg, run, log=lambda _m: None)
    pipeline.run_pipeline(cfg, run, log=lambda _m: None)  # nothing new: both skipped
    pipeline.run_pipeline(_tiny_pipeline_config(tiny_config, ["train", "extract", "report"]), run,
                          log=lambda _m: None)
    assert ran == ["train", "report", "extract", "report"]


def test_a_sweep_folder_refuses_another_sweep(tmp_path):
    import yaml

    from workbench.overrides import sweep_conflicts

    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["preset=tiny", "seed=0,1", f"sweep_dir={tmp_path}"]}}}))
    assert sweep_conflicts(tmp_path, ["-m", "preset=tiny", "seed=0,1", f"sweep_dir={tmp_path}", "stages=[align]"]) == []
    assert sweep_conflicts(tmp_path, ["-m", "preset=tiny", f"sweep_dir={tmp_path}"]) == ["seed: seed=0,1 -> <unset>"]


def test_a_sweep_job_without_overrides_gets_its_own_folder():
    import workbench.scaleout  # noqa: F401  (registers the resolver configs/hydra/default.yaml uses)
    from omegaconf import OmegaConf

    def folder(task):
        cfg = OmegaConf.create({"task": task, "num": 3, "dirname": {"exclude_keys": ["stages", "sweep_dir"]},
                                "dir": "${workbench.sweep_subdir:${task},${dirname},${num}}"})
        return cfg.dir

    assert folder(["stages=[train]", "sweep_dir=/x/y"]) == "job3"  # never the sweep folder itself
    assert folder(["seed=1", "stages=[train]"]) == "seed=1"


def test_the_training_history_survives_a_resume():
    from workbench.training.stage import _History

    first, second = _History(), _History()
    first.callback.epochs.append({"epoch": 0, "train/loss": 1.0})
    second.callback.load_state_dict(first.callback.state_dict())
    assert second.epochs == [{"epoch": 0, "train/loss": 1.0}]


def test_a_resumed_fit_keeps_the_csv_rows_logged_before(tmp_path):
    from workbench.training.stage import _kept_csv_log

    run = RunDir(tmp_path)
    log = run.subdir("logs/csv") / "metrics.csv"
    log.write_text("epoch,step,train/loss\n0,10,1.0\n")
    import zipfile

    with zipfile.ZipFile(run.checkpoints / "last.ckpt", "w") as z:
        z.writestr("data", "x")
    with _kept_csv_log(run):
        log.write_text("epoch,step,train/loss,val/acc\n1,20,0.5,0.3\n")  # what Lightning writes after resuming
    rows = log.read_text().splitlines()
    assert rows[0] == "epoch,step,train/loss,val/acc" and rows[1].startswith("0,10,1.0") and rows[2] == "1,20,0.5,0.3"


def test_a_run_made_before_a_setting_existed_still_resumes(tiny_config, tmp_path, monkeypatch):
    from workbench import pipeline

    monkeypatch.setattr(pipeline, "run_stage", lambda name, cfg, run, log: {"ok": 1})
    run = RunDir(tmp_path)
    pipeline.run_pipeline(_tiny_pipeline_config(tiny_config, ["train"]), run, log=lambda _m: None)
    stored = run.config()
    del stored["extract"]["store_above"]  # as written by a version without that setting
    run.write_config(stored)
    pipeline.run_pipeline(_tiny_pipeline_config(tiny_config, ["train"]), run, log=lambda _m: None)
    changed = {**tiny_config, "extract": {**tiny_config["extract"], "store_above": 5}}
    with pytest.raises(ConfigError, match="extract.store_above: 20000 -> 5"):
        pipeline.run_pipeline(_tiny_pipeline_config(changed, ["train"]), run, log=lambda _m: None)
