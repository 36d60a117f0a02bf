"""Alignment metrics: the ``METRICS`` registry (rsa, ridge, pls, cka) and the interface a metric implements.

Adding a metric is one new file: a class registered with ``@METRICS.register(name, citation=...)`` in a module the
config names under ``plugins: [...]`` (see CONTRIBUTING.md, "Adding an alignment metric").
"""

from workbench.alignment.metrics.base import (METRICS, AlignmentMetric, MetricResult, RecordingsMetric, best_layer,
                                              in_stimulus_order, recording, require)
# the built-in metrics register themselves on import
from workbench.alignment.metrics import cka, encoding, rsa  # noqa: E402,F401  (isort: skip)

__all__ = ["METRICS", "AlignmentMetric", "RecordingsMetric", "MetricResult", "recording", "in_stimulus_order",
           "best_layer", "require"]
