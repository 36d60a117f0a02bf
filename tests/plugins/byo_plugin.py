"""A user's package in one module: a model builder (for ``model.source: import``), a model, a metric and two
benchmarks registered from outside the workbench (tests/test_benchmarks.py and tests/test_model_sources.py).

    plugins: [byo_plugin]
    model: {name: byo_net}                                    # the registered model
    model: {source: import, name: "byo_plugin:build_net"}     # the same network through the import source
    align: {metrics: [], benchmarks: [byo_v1_ridge, byo_v1_procrustes]}

The benchmarks score the simulated V1 cells of the recipe data set (``recipe_neural``): one with the built-in ridge
metric, one with the recipe Procrustes metric (``recipe_metric``).
"""

import recipe_metric  # noqa: F401  (registers the procrustes metric)
import recipe_neural
from torch import nn

from workbench.benchmarks import BENCHMARKS, Benchmark
from workbench.models import MODELS

CITATION = "A user's lab (2026). Our network and our V1 benchmark. Journal of Tests 1, 1-2."


def build_net(num_classes: int = 10, width: int = 4) -> nn.Module:
    """Two conv blocks and a read-out; 32 px input. No ``workbench_layers``: the default layers are found."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, num_classes))


@MODELS.register("byo_net", citation=CITATION, description="a user's two-block CNN")
def byo_net(num_classes: int = 10, width: int = 4, weights: str | None = None) -> nn.Module:
    return build_net(num_classes, width)


BENCHMARKS.add("byo_v1_ridge", Benchmark("ridge", {"datasets": [recipe_neural.NAME], "n_folds": 3,
                                                   "ceiling_splits": 10, "readouts": False}, region="V1"),
               citation=CITATION)
BENCHMARKS.add("byo_v1_procrustes", Benchmark("procrustes", {"datasets": [recipe_neural.NAME]}, region="V1"),
               citation=CITATION)
