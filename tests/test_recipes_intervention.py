"""Recipe: a lesion selection registered from outside the package (tests/plugins/recipe_selection.py), named in the
config, runs in the tiny pipeline's intervene stage next to the built-in selections."""

import sys

import numpy as np
import pytest

from conftest import ROOT, TINY_OVERRIDES, compose_config


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    yield
    from workbench.intervention.selection import SELECTIONS

    SELECTIONS.remove("least_selective")
    sys.modules.pop("recipe_selection", None)


def test_a_lesion_selection_from_a_plugin_runs_in_the_intervene_stage(tmp_path, data_root, plugin_path):
    from workbench.pipeline import get_metric, run_pipeline
    from workbench.run import RunDir

    cfg = compose_config(list(TINY_OVERRIDES) + [
        "plugins=[recipe_selection]", "+intervene.selections=[disk_peak,top_k,least_selective]",
        "+intervene.effects=[cifar,responses92]", "intervene.n_bootstrap=20", "intervene.n_permutations=20"])
    run = RunDir(tmp_path / "run")
    metrics = run_pipeline(cfg, run, stages=["intervene"], log=lambda _m: None)
    section = metrics["intervene"]
    assert section["selections"] == {"disk_peak": "random_disk", "top_k": "random", "least_selective": "random"}
    for cat in ("face", "animate"):
        lesion = section["main_lesions"][cat]["least_selective"]
        assert lesion["selection"]["kind"] == "least_selective"
        assert lesion["selection"]["n_units"] == section["main_lesions"][cat]["top_k"]["selection"]["n_units"]
        spec = section["specificity"][cat]["least_selective"]
        assert spec["control"] == "random" and spec["responses92"]["n_controls"] == 2
        assert len(section["sweep"][cat]["response_change_target"]["least_selective"]) == 2
    # the least selective face units are the most selective ones' opposite: they change face responses less
    face = section["sweep"]["face"]["response_change_target"]
    assert face["least_selective"][0] < face["top_k"][0]
    assert any("Morcos" in ref for ref in section["references"])
    units = run.load_arrays(run.lesions_path)
    selectivity = units["selectivity/face"]
    least, top = units["units/least_selective/face/0/0"], units["units/top_k/face/0/0"]
    assert not np.intersect1d(least, top).size and selectivity[least].max() < selectivity[top].min()
    for card in section["headline"]:
        assert get_metric(metrics, card["key"]) == card["value"]
