"""What a new user meets first: `workbench --help`, and objects that print as a short summary."""

import subprocess
import sys

import numpy as np

from conftest import ROOT
from workbench.features.extract import Activations


def test_help_says_what_the_tool_does_first():
    out = subprocess.run([sys.executable, "-m", "workbench", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout
    assert out.startswith("workbench: a NeuroAI workbench")
    assert "workbench resume <run folder>" in out and "== Configuration groups ==" in out
    assert "experiment: inductive_bias, lesion_study" in out


def test_stimulus_set_and_activations_print_short(k92):
    text = repr(k92)
    assert text.startswith("StimulusSet('kriegeskorte92': 92 images 175x175") and len(text.splitlines()) == 1
    acts = Activations({"conv1": np.zeros((3, 8), np.float32), "fc": np.zeros((3, 10), np.float32)}, ["a", "b", "c"],
                       {"conv1": (2, 2, 2), "fc": (10,)})
    assert repr(acts) == "Activations(3 stimuli; conv1: 2x2x2, fc: 10)"


def test_one_console_and_one_file_handler_per_run(tmp_path, capsys):
    import logging

    from workbench.logs import LOG, progress_disabled, setup_run_logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        setup_run_logging(tmp_path / "a")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")
        setup_run_logging(tmp_path / "b")  # the next job of a sweep
        LOG.info("[workbench] second run")
        assert len(root.handlers) == 2
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    first = (tmp_path / "a" / "workbench.log").read_text()
    assert first.count("GPU available") == 1 and "alembic" not in first and "second run" not in first
    assert "second run" in (tmp_path / "b" / "workbench.log").read_text()
    assert capsys.readouterr().out.count("GPU available") == 1
    assert progress_disabled(False) is True and progress_disabled(True) is None  # None: bars only on a terminal
