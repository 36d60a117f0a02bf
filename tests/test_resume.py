"""Resuming a run by its folder alone: stored overrides, `workbench resume`, force=true, real differences only."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from workbench.overrides import expand_resume, merge_overrides, override_key, write_overrides
from workbench.pipeline import config_differences

TINY = ["preset=tiny", "data.subset=200", "data.test_subset=100"]


def test_override_keys_and_merge():
    assert [override_key(o) for o in ("a.b=1", "~model", "+model={name:x}", "++c=2")] == ["a.b", "model", "model",
                                                                                          "c"]
    stored = ["preset=tiny", "seed=1", "run_dir=/old", "force=true", "~model", "+model={name:my_net}"]
    assert merge_overrides(stored, ["seed=2", "run_dir=/new"]) == [
        "preset=tiny", "~model", "+model={name:my_net}", "seed=2", "run_dir=/new"]
    assert merge_overrides(stored, ["model=small_cnn"])[-1] == "model=small_cnn"
    assert "+model={name:my_net}" not in merge_overrides(stored, ["model=small_cnn"])


def test_expand_resume_puts_the_stored_overrides_back(tmp_path):
    write_overrides(tmp_path, ["experiment=v4_encoding", "preset=tiny", f"run_dir={tmp_path}"])
    args, stored = expand_resume(["resume", str(tmp_path), "stages=[align]"])
    assert args == ["experiment=v4_encoding", "preset=tiny", f"run_dir={tmp_path}", "stages=[align]"]
    assert stored == ["experiment=v4_encoding", "preset=tiny"]
    assert expand_resume(["-m", f"run_dir={tmp_path}"])[0] == ["-m", f"run_dir={tmp_path}"]  # sweeps: untouched
    with pytest.raises(SystemExit, match="no folder"):
        expand_resume(["resume", str(tmp_path / "missing")])


def test_differences_name_the_keys_and_values():
    old = {"seed": 0, "model": {"name": "small_cnn", "width": 8}}
    new = {"seed": 0, "model": {"name": "small_cnn", "width": 16}, "extra": 1}
    assert config_differences(old, new) == ["extra: '<unset>' -> 1", "model.width: 8 -> 16"]


def _workbench(args, tmp_path, check=True):
    env = dict(os.environ, WORKBENCH_RESULTS=str(tmp_path / "results"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "workbench"] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_run_resumes_by_its_folder_alone(tmp_path, data_root):
    run = tmp_path / "run"
    _workbench(TINY + ["stages=[train]", f"run_dir={run}"], tmp_path)
    again = _workbench(["resume", str(run)], tmp_path)
    assert "stored overrides: preset=tiny" in again.stdout and "train: done earlier, skipped" in again.stdout
    written = {name: (run / name).read_bytes() for name in (".hydra/config.yaml", ".hydra/overrides.yaml",
                                                             "overrides.yaml", "config.yaml")}
    refused = _workbench([f"run_dir={run}", "seed=3"], tmp_path, check=False)
    assert refused.returncode == 2
    assert {name: (run / name).read_bytes() for name in written} == written  # a refused resume writes nothing
    message = refused.stderr
    assert "seed: 0 -> 3" in message and "force=true" in message
    assert "run_dir" not in message.split("Differences")[1].split(".")[0] and "sweep_dir" not in message
    forced = _workbench([f"run_dir={run}", "seed=3", "force=true", "stages=[report]"], tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3, forced.stdout
    stored = yaml.safe_load((run / "overrides.yaml").read_text())
    assert "seed=3" in stored and "preset=tiny" in stored
    assert "force=true" not in expand_resume([f"run_dir={run}"])[0]  # force applies to one call only
