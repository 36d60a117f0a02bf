"""Recipe: a study from outside the package (one YAML file in the user's own folder) that runs a plugin stage."""

import json
import os
import subprocess
import sys

from conftest import ROOT

STUDY = """\
# @package _global_
# How many dimensions does each layer of the default CNN use on the 92 images?
study: my_dimensionality
plugins: [recipe_stage]
stages: [train, extract, dimensionality, report]
extract:
  stimulus_sets: [kriegeskorte92]
dimensionality:
  layers: [conv2, conv3, conv4]
"""


def test_a_study_and_a_stage_from_outside_the_package(tmp_path, data_root):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "my_dimensionality.yaml").write_text(STUDY)
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "plugins"), MPLBACKEND="Agg",
               WORKBENCH_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", f"hydra.searchpath=[file://{tmp_path / 'mine'}]",
         "experiment=my_dimensionality", "preset=tiny", "data.subset=200", "data.test_subset=100",
         f"run_dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == ["train", "extract", "dimensionality", "report"]
    ratios = metrics["dimensionality"]["participation_ratio"]
    assert set(ratios) == {"conv2", "conv3", "conv4"} and all(1 <= r <= 92 for r in ratios.values())
    assert any("Elmoznino" in ref for ref in metrics["dimensionality"]["references"])
    html = (run_dir / "report.html").read_text()
    assert "Effective dimensionality" in html and "Elmoznino" in html
