"""Every command and code block in README.md and experiments/README.md, read from the Markdown so the docs cannot
drift: each workbench command is composed by Hydra and validated against every stage schema (fast), the Python
block runs, and each study of the experiments table runs from the command line as its row says, with tiny
overrides appended (slow)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# Commands that are documented but not run here, and why (everything else is run or composed).
ILLUSTRATIVE = {
    "make run": "runs the full default study (minutes); its tiny form is test_cli.test_default_study_end_to_end",
    "make test": "runs this test suite itself",
    ".venv/bin/workbench experiment=score_model benchmark=my_v1":
        "needs the reader's recordings; test_benchmarks builds a benchmark from an assembly file and runs it",
    ".venv/bin/workbench experiment=score_model 'align.benchmarks=[hit_rsa,/data/my_v1.yaml]'":
        "needs the reader's recordings; test_benchmarks builds a benchmark from an assembly file and runs it",
}
TINY = ["preset=tiny", "data.subset=200", "data.test_subset=100"]
PLUGINS = {
    "my_models.py": '''
from torch import nn
from workbench.models import MODELS

@MODELS.register("my_net", citation="Me, A. (2026). My net. Journal 1, 1-10.")
def my_net(num_classes: int = 10, width: int = 8, weights: str | None = None) -> nn.Module:
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, width, 3, padding=1))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(width, num_classes))
    return model
''',
    "my_pkg/__init__.py": "",
    "my_pkg/models.py": '''
from torch import nn


def build_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
''',
    "my_data.py": '''
from recipe_neural import simulated_v1_responses, simulated_v1_stimuli
from workbench.data import RESPONSES, STIMULUS_SETS

STIMULUS_SETS.register("my_v4", citation="Me et al. (2026). My recording.")(simulated_v1_stimuli)
RESPONSES.register("my_v4", citation="Me et al. (2026). My recording.")(simulated_v1_responses)
''',
}


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def documented_commands() -> list[str]:
    """Shell lines of the bash blocks of both READMEs plus the `how to run` column of the studies table."""
    lines = [line for doc in (ROOT / "README.md", ROOT / "experiments" / "README.md")
             for block in code_blocks(doc, "bash") for line in block.splitlines()]
    table = (ROOT / "experiments" / "README.md").read_text()
    lines += [cmd for row in re.findall(r"^\|.*\|\s*(.*?)\s*\|\s*$", table, flags=re.M)
              for cmd in re.findall(r"`(workbench[^`]*)`", row)]
    commands = [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines]
    return [c for c in commands if c]


def workbench_args(command: str, run: Path, sweep: Path) -> list[str]:
    """The arguments of a documented workbench command, placeholders filled with real folders, as the command line
    passes them to Hydra (``resume <run>`` is ``run_dir=<run>`` plus the run's stored overrides)."""
    from workbench.overrides import expand_resume

    command = re.sub(r"results/\w+/<timestamp>|<trained run>", str(run), command)
    command = command.replace("<that sweep's folder>", str(sweep)).replace("<yours>", "debug")
    words = shlex.split(command)
    assert Path(words[0]).name == "workbench", f"not a workbench command: {command}"
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "overrides.yaml").exists():  # the placeholder is a run started with no overrides (resume accepts it)
        (run / "overrides.yaml").write_text("[]\n")
    return expand_resume([w for w in words[1:] if w != "..."])[0]


def compose(args: list[str]) -> dict:
    """The config Hydra composes for ``args``; a sweep (-m) is composed at the first value of each swept key."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [_first_value(a) for a in args if a not in ("-m", "--multirun")]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg.pop("hydra")
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)


def _first_value(override: str) -> str:
    key, _, value = override.partition("=")
    if value and "," in value and not re.search(r"[\[{(]", value):
        return f"{key}={value.split(',')[0]}"
    return override


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    for name, text in PLUGINS.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_docs_hold_commands_and_every_illustrative_one_is_documented():
    commands = documented_commands()
    assert len(commands) >= 15
    assert set(ILLUSTRATIVE) <= set(commands)
    assert all(c.startswith(("make ", ".venv/bin/workbench", "workbench")) for c in commands), commands


@pytest.mark.parametrize("command", [c for c in documented_commands() if c not in ILLUSTRATIVE])
def test_documented_command_composes_and_validates(command, plugin_folder, tmp_path):
    from workbench.pipeline import resolve_config

    args = workbench_args(command, tmp_path / "run", tmp_path / "sweep")
    if args[:1] == ["layers"]:  # `workbench layers <overrides>`: the model section is what it reads
        from workbench.models import validate_model_config

        validate_model_config(compose(args[1:])["model"])
        return
    resolve_config(compose(args))


def test_readme_python_block_runs(data_root):
    (block,) = code_blocks(ROOT / "README.md", "python")
    names: dict = {}
    exec(compile(block, "README.md", "exec"), names)
    assert names["acts"].layers == ["conv3", "conv4"] and names["acts"]["conv4"].shape[0] == 92
    assert names["hit"].dims == ("subject", "session", "stimulus", "stimulus_b")


# -- the studies, run as the experiments table says -------------------------------------------------------------------
# Tiny overrides per study, appended to its documented command: one job per sweep, one V4 session, few layers.
STUDY_OVERRIDES = {
    "spatial_weight_sweep": ["model.topography.weight=0.5", "seed=0", "stages=[train,extract,topography,report]"],
    "v4_encoding": ["model=small_cnn", "extract.stimulus_sets=[cowley_v4_210325]",
                    "align.settings.ridge.datasets=[cowley_v4_210325]", "align.layers=[conv4,fc]"],
    "inductive_bias": ["model=mlp", "seed=0", "extract.stimulus_sets=[kriegeskorte92]", "align.metrics=[rsa]",
                       "align.settings.rsa.targets=[mIT]"],
    "lesion_study": ["intervene.lesion_sizes=[0.2]", "intervene.main_size=0.2", "intervene.n_random=1"],
    "neural_control": ["synthesize.neural_sites.n_neuroids=1", "synthesize.patches.categories=[face]",
                       "synthesize.steps=8"],
    "topographic_hallmarks": ["model.topography.weight=1", "seed=0", "model.topography.preoptimise.iterations=20",
                              "topography.morans_shuffles=2", "topography.max_units=500", "topography.max_pairs=5000",
                              "stages=[train,topography,report]"],  # intervene: covered by the default study's row
    "score_model": ["model.preprocess.image_size=64", "extract.layers=[features.5,features.12]",
                    "align.benchmarks=[hit_rsa,v4_ridge_210325]"],
}


def study_rows() -> dict[str, str]:
    table = (ROOT / "experiments" / "README.md").read_text()
    return {study: cmd for study, cmd in re.findall(r"^\| `(\w+)`.*?\| `(workbench[^`]*)`", table, flags=re.M)}


def _workbench(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WORKBENCH_RESULTS=str(tmp_path / "results"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "workbench"] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"workbench {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_every_study_has_a_row_and_a_test():
    studies = {p.stem for p in (ROOT / "experiments").glob("*.yaml")}
    assert set(study_rows()) == studies
    assert set(STUDY_OVERRIDES) | {"topographic_alignment"} == studies  # the default: test_cli end to end


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> Path:
    """A tiny run of the default study's train stage, made from the command line (it stores its overrides)."""
    tmp = tmp_path_factory.mktemp("trained")
    _workbench(TINY + ["stages=[train]", f"run_dir={tmp / 'run'}"], tmp)
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDY_OVERRIDES))
def test_study_runs_as_its_row_says(study, trained_run, tmp_path):
    args = workbench_args(study_rows()[study], trained_run, tmp_path / "sweep")
    multirun = "-m" in args
    args += TINY + STUDY_OVERRIDES[study] + ([f"sweep_dir={tmp_path / 'sweep'}"] if multirun else
                                             [f"run_dir={tmp_path / 'run'}"])
    _workbench(args, tmp_path)
    (run,) = [p.parent for p in tmp_path.rglob("metrics.json")]
    metrics = json.loads((run / "metrics.json").read_text())
    stages = yaml.safe_load((run / "config.yaml").read_text())["stages"]
    assert set(metrics) == set(stages) and (run / "report.html").exists()
    if study == "lesion_study":
        assert metrics["train"]["from_run"] == str(trained_run.resolve()) and "intervene" in metrics
    if study == "neural_control":
        assert metrics["train"]["from_run"] == str(trained_run.resolve())
        assert metrics["synthesize"]["targets"] and (run / "figures" / "synthesize_neural_sites.png").exists()
