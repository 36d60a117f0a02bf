"""The Hydra app end to end, as a user runs it (subprocesses of the installed entry point)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH = [sys.executable, "-m", "workbench"]
TINY = ["preset=tiny", "data.subset=400", "data.test_subset=100"]


def _env(tmp_path):
    env = dict(os.environ, WORKBENCH_RESULTS=str(tmp_path / "results"), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return env


def _run(args, tmp_path, check=True, timeout=900):
    proc = subprocess.run(WORKBENCH + args, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.mark.slow
def test_default_study_end_to_end_then_resume(tmp_path, data_root):
    run_dir = tmp_path / "results" / "run"
    proc = _run(TINY + [f"run_dir={run_dir}"], tmp_path)
    assert f"results: {run_dir}" in proc.stdout
    for name in ("config.yaml", "provenance.json", "metrics.json", "report.html", "checkpoints/model.pt"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == ["train", "extract", "topography", "align", "attribute", "intervene", "report"]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["packages"]["torch"] and prov["seed"] == 0 and prov["data_files"]
    assert any(p.suffix == ".pdf" for p in (run_dir / "figures").iterdir())
    # a rerun into the same directory skips every finished stage
    stamp = (run_dir / "checkpoints" / "model.pt").stat().st_mtime_ns
    again = _run(TINY + [f"run_dir={run_dir}"], tmp_path)
    assert again.stdout.count("done earlier, skipped") == 7
    assert (run_dir / "checkpoints" / "model.pt").stat().st_mtime_ns == stamp


def test_unknown_config_key_is_a_clear_error(tmp_path):
    proc = _run(TINY + ["model.topograpy.weight=1"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "topograpy" in proc.stderr and "not in struct" in proc.stderr


def test_unknown_study_lists_the_studies(tmp_path):
    proc = _run(["experiment=topographic_alignmnet"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "topographic_alignment" in proc.stderr and "spatial_weight_sweep" in proc.stderr


def test_unknown_sweep_parameter(tmp_path):
    proc = _run(["-m", "experiment=spatial_weight_sweep", "model.topography.wieght=0,1"] + TINY, tmp_path,
                check=False)
    assert proc.returncode != 0 and "wieght" in proc.stderr


def test_unknown_stage_and_model(tmp_path):
    proc = _run(TINY + ["stages=[train,allign]"], tmp_path, check=False)
    assert proc.returncode != 0 and "allign" in proc.stderr and "did you mean 'align'" in proc.stderr
    proc = _run(TINY + ["model.name=alexnett", "stages=[extract]"], tmp_path, check=False)
    assert proc.returncode != 0 and "alexnett" in proc.stderr and "small_cnn" in proc.stderr


@pytest.mark.slow
def test_sweep_report_and_resume_after_kill(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=spatial_weight_sweep", "model.topography.weight=0,0.5", "seed=0",
            "stages=[train,extract,topography,report]", f"sweep_dir={sweep_dir}"] + TINY
    # one run folder per job, named by its overrides
    first_job = sweep_dir / "data.subset=400,data.test_subset=100,model.topography.weight=0,seed=0"
    proc = subprocess.Popen(WORKBENCH + args, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (first_job / "report.html").exists():
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "first sweep job did not finish in time"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # interrupted after the first run
        proc.wait()
    stamp = (first_job / "checkpoints" / "model.pt").stat().st_mtime_ns
    again = _run(args, tmp_path)
    assert (first_job / "checkpoints" / "model.pt").stat().st_mtime_ns == stamp  # not redone
    second_job = sweep_dir / "data.subset=400,data.test_subset=100,model.topography.weight=0.5,seed=0"
    assert (second_job / "metrics.json").exists()
    # the sweep report compares both runs
    subprocess.run([sys.executable, "-m", "workbench.report.cli", str(sweep_dir)], check=True, cwd=ROOT,
                   env=_env(tmp_path), capture_output=True)
    csv = (sweep_dir / "metrics.csv").read_text().splitlines()
    assert len(csv) == 3 and (sweep_dir / "report.html").exists()
    assert "done earlier, skipped" in again.stdout


@pytest.mark.slow
def test_optuna_search_maximises_an_alignment_score(tmp_path, data_root):
    sweep_dir = tmp_path / "optuna"
    _run(["-m", "hparams_search=optuna_alignment", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
          "stages=[train,extract,align]", f"sweep_dir={sweep_dir}"] + TINY, tmp_path)
    import yaml

    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and -1 <= result["best_value"] <= 1
    assert set(result["best_params"]) == {"model.topography.weight", "model.optimizer.lr"}
    runs = [p for p in sweep_dir.iterdir() if (p / "metrics.json").exists()]
    scores = [json.loads((p / "metrics.json").read_text())["align"]["summary"]["best_hIT_score"] for p in runs]
    assert len(runs) == 2 and max(scores) == pytest.approx(result["best_value"])
