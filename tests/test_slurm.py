"""Scale-out on a real SLURM: a single-node, CPU-only cluster (tests/slurm/cluster.sh: munged, slurmctld, slurmd,
no accounting) started for this session, and the workbench's sweeps, multi-process DDP and Optuna search going
through the submitit launcher (hydra/launcher=slurm_cpu) as a user's would. Skipped, with the reason, only where
the cluster cannot be started (not root and no sudo)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweeps extra (pip install -e '.[sweeps]')")
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
# seconds-long training: a few batches of a few hundred images, one process per job
SMALL = ["preset=tiny", "data.subset=192", "data.test_subset=64", "data.batch_size=32", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
LAUNCHER = ["hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]
TIMINGS: dict[str, float] = {}
pytestmark = pytest.mark.slow  # end to end: SLURM jobs that train (make test runs them, make test-fast not)


def _free_port_pair() -> int:
    """A port p with p and p + 1 both free (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports for slurmctld and slurmd")


def _can_be_root() -> bool:
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo") is not None and subprocess.run(["sudo", "-n", "true"], capture_output=True)
    return bool(sudo) and sudo.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, data_root):
    """The cluster's environment (SLURM_CONF, MUNGE_SOCKET); torn down after the session."""
    if not _can_be_root():
        print("\ntest_slurm: skipped: starting slurmd needs root or passwordless sudo, and this user has neither")
        pytest.skip("starting a SLURM cluster needs root or passwordless sudo (sudo -n)")
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, WORKBENCH_SLURM_DIR=str(state), WORKBENCH_SLURM_PORT=str(_free_port_pair()))
    start = time.perf_counter()
    up = subprocess.run(["bash", str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=900)
    if up.returncode == 3:  # the packages cannot be installed here
        print(f"\ntest_slurm: skipped: {up.stderr.strip()}")
        pytest.skip(up.stderr.strip())
    if up.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, text=True, timeout=120)
        pytest.fail(f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}")
    TIMINGS["cluster up"] = time.perf_counter() - start
    for line in up.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
    yield env
    subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, text=True, timeout=120)
    print("\ntest_slurm wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


def _workbench(args: list[str], env: dict, cwd: Path, name: str) -> subprocess.CompletedProcess:
    env = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WORKBENCH_PROGRESS="0")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "workbench", "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    TIMINGS[name] = time.perf_counter() - start
    assert proc.returncode == 0, f"workbench -m {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def _job_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_two_job_sweep_runs_as_slurm_jobs_quietly_in_folders_named_by_what_they_compute(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _workbench([*LAUNCHER, *SMALL, "seed=0,1", "stages=[train]", f"results_root={tmp_path / 'results'}",
                       f"sweep_dir={sweep}"], slurm_cluster, tmp_path, "2-job sweep")
    output = proc.stdout + proc.stderr
    assert "sacct" not in output and "Bypassing" not in output  # quiet on a cluster without accounting
    jobs = sorted((sweep / ".submitit").glob("*_[01]"))
    assert len(jobs) == 2, "two array jobs of one submission"
    folders = _job_folders(sweep)
    assert [p.name for p in folders] == [",".join(sorted([f"seed={s}", *SMALL[1:]])) for s in (0, 1)]
    for seed, folder in enumerate(folders):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["train"]["steps"] == 2 and metrics["train"]["processes"] == 1
        assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == seed
        assert (folder / "checkpoints" / "model.pt").is_file()


def _hash_logged_by(log: Path) -> str:
    found = re.findall(r"rank 1 of 2 done; parameters sha256 ([0-9a-f]{64})", log.read_text())
    assert len(found) == 1, f"rank 1 did not report its trained parameters once in {log}"
    return found[0]


def test_ddp_over_two_slurm_tasks_trains_once_and_writes_one_run(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    _workbench([*LAUNCHER, *SMALL, "trainer=ddp_sim", "seed=0", "stages=[train,extract]",
                "extract.stimulus_sets=[kriegeskorte92]", "extract.devices=2", f"sweep_dir={sweep}"], slurm_cluster,
               tmp_path, "DDP job")
    (job,) = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    submission = next(job.glob("*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in submission and "--gpus-per-node=0" in submission  # from trainer.devices
    assert sorted(p.name for p in job.glob("*_result.pkl")) == [f"{job.name}_0_result.pkl", f"{job.name}_1_result.pkl"]
    (run,) = _job_folders(sweep)  # both ranks in one run folder
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics) == ["train", "extract"] and metrics["train"]["processes"] == 2
    assert metrics["train"]["parameters_sha256"] == _hash_logged_by(job / f"{job.name}_1_log.out")
    rank1 = (job / f"{job.name}_1_log.out").read_text()
    assert "[workbench] extract" not in rank1 and "[workbench] extract" in (run / "workbench.log").read_text()
    assert "rank 1 of 2" not in (run / "workbench.log").read_text()  # rank 1 logs to its own task log only
    # extract.devices=2: rank 1 joined the extraction too (a second process group), and wrote no run file
    rank1_lightning = rank1 + (job / f"{job.name}_1_log.err").read_text()
    assert rank1_lightning.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert metrics["extract"]["stimulus_sets"]["kriegeskorte92"]["processes"] == 2
    assert not list((run / "cache" / "activations").glob("*.shards"))
    assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "checkpoints" / "model.pt").is_file()


def test_optuna_search_runs_its_trials_as_slurm_jobs(slurm_cluster, tmp_path):
    pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    _workbench(["hparams_search=optuna_alignment", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", *LAUNCHER,
                *SMALL, "stages=[train]", "objective=train.test_accuracy", f"sweep_dir={sweep}"], slurm_cluster,
               tmp_path, "2-trial Optuna search")
    trials = _job_folders(sweep)
    assert len(trials) == 2
    accuracies = [json.loads((t / "metrics.json").read_text())["train"]["test_accuracy"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(accuracies))
    assert set(best["best_params"]) == {"model.topography.weight", "model.optimizer.lr"}
