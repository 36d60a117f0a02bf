"""Scale-out without a cluster: sweep folder names, which process is rank 0, what an extra DDP rank does in the
pipeline, the SLURM launcher configs and the squeue-based job states (tests/test_slurm.py runs them on SLURM)."""

from __future__ import annotations

import pytest

from conftest import ROOT
from workbench.distributed import global_rank, is_rank_zero
from workbench.scaleout import sweep_job_dirname

EXCLUDED = ["results_root", "sweep_dir", "run_dir", "force", "preset"]


def test_sweep_folder_names_leave_out_bookkeeping_and_shorten_paths():
    assert sweep_job_dirname(["seed=1", "results_root=/some/path", "preset=tiny"], EXCLUDED) == "seed=1"
    assert sweep_job_dirname(["from_run=results/topographic_alignment/2026-11-25_10-00-00", "seed=0"], EXCLUDED) \
        == "from_run=2026-11-25_10-00-00,seed=0"
    assert sweep_job_dirname(["plugins=[tests/plugins/recipe_model.py,my_models]"], EXCLUDED) \
        == "plugins=[recipe_model.py,my_models]"
    assert sweep_job_dirname(["model.topography.weight=0.5", "~logger"], EXCLUDED) \
        == "model.topography.weight=0.5,~logger"  # as Hydra's override_dirname, sorted
    assert sweep_job_dirname(["results_root=/x", "force=true"], EXCLUDED) == ""
    assert "/" not in sweep_job_dirname(["benchmark=/data/my_v1.yaml", "data.root=C:\\data\\v1"], EXCLUDED)


def test_the_configured_sweep_subdir_is_that_rule(tmp_path):
    from hydra import compose, initialize_config_dir

    overrides = ["seed=1", f"results_root={tmp_path}", "from_run=a/b/run_3", "preset=tiny"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweep.subdir == "from_run=run_3,seed=1"
    assert cfg.hydra.output_subdir == ".hydra"


@pytest.mark.parametrize("environ, zero, rank", [
    ({}, True, 0),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True, 0),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, False, 1),
    ({"SLURM_PROCID": "3"}, False, 3),
    ({"RANK": "2", "LOCAL_RANK": "0"}, False, 2),
    ({"LOCAL_RANK": "1"}, False, 1),                                    # Lightning's own launcher, rank 1
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False, 1),               # ... started inside a one-task SLURM job
    ({"NODE_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, False, 2),
    ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True, 0),
])
def test_rank_zero_is_the_process_every_launcher_numbers_zero(environ, zero, rank):
    assert is_rank_zero(environ) is zero
    assert global_rank(environ) == rank


def test_a_rank_that_is_not_a_number_is_a_clear_error():
    with pytest.raises(ValueError, match="SLURM_PROCID='x'.*not a process rank"):
        is_rank_zero({"SLURM_PROCID": "x"})


def test_an_extra_rank_writes_nothing_and_trains_only_when_rank_zero_would(tiny_config, tmp_path, monkeypatch):
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    calls = []
    monkeypatch.setattr("workbench.pipeline.run_stage", lambda name, cfg, run, log: calls.append(name) or {})
    monkeypatch.setenv("LOCAL_RANK", "1")
    run = RunDir(tmp_path / "run")
    assert run_pipeline(tiny_config, run, stages=["extract", "align"], log=lambda _m: None) == {}
    assert calls == [] and list(run.path.iterdir()) == []  # no stage, no file: the run folder is rank 0's
    assert run_pipeline(tiny_config, run, stages=["train", "extract"], log=lambda _m: None) == {}
    assert calls == ["train"] and list(run.path.iterdir()) == []
    monkeypatch.setattr(RunDir, "has_stage", lambda self, name: name == "train")  # rank 0 trained this run earlier
    run_pipeline(tiny_config, run, stages=["train", "extract"], log=lambda _m: None)
    assert calls == ["train"]


def _launcher(overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_launcher_configs_ask_for_what_the_trainer_uses():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cpu = _launcher(["hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug"])
    assert (cpu["gpus_per_node"], cpu["tasks_per_node"], cpu["nodes"]) == (0, 1, 1)
    ddp_sim = _launcher(["hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "trainer=ddp_sim"])
    assert (ddp_sim["gpus_per_node"], ddp_sim["tasks_per_node"]) == (0, 2)
    gpu = _launcher(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=gpu"])
    assert (gpu["gpus_per_node"], gpu["tasks_per_node"], gpu["nodes"]) == (1, 1, 1)
    ddp = _launcher(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                     "trainer=ddp", "trainer.num_nodes=2"])
    assert (ddp["gpus_per_node"], ddp["tasks_per_node"], ddp["nodes"]) == (4, 4, 2)


def test_job_states_come_from_squeue_and_a_job_it_no_longer_lists_has_ended():
    pytest.importorskip("submitit")
    from workbench.slurm import _squeue_watcher_class

    watcher = _squeue_watcher_class()(delay_s=600)
    for job in ("7", "8_0", "8_1", "8_2", "9"):
        watcher.register_job(job)
    states = watcher.read_info("7|RUNNING|vm\n8_0|COMPLETED|vm\n8_[1-2]|PENDING|\n")
    assert states["7"]["State"] == "RUNNING" and states["8_0"]["State"] == "COMPLETED"
    assert states["8_1"]["State"] == states["8_2"]["State"] == "PENDING"
    assert states["9"]["State"] == "COMPLETED"  # purged by the controller: ended; a missing result is then reported


def test_accounting_is_read_from_scontrol(monkeypatch):
    import subprocess

    from workbench import slurm

    def fake(output):
        return lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=output, stderr="")

    monkeypatch.setattr(subprocess, "run", fake("AccountingStorageType   = accounting_storage/none\n"))
    assert slurm.slurm_accounting_enabled() is False
    monkeypatch.setattr(subprocess, "run", fake("AccountingStorageType   = accounting_storage/slurmdbd\n"))
    assert slurm.slurm_accounting_enabled() is True
