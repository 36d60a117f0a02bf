"""Representation alignment: RSA (RDMs, comparisons, noise ceilings, bootstrap inference), cross-validated
encoding models (ridge, PLS) with split-half ceilings, linear CKA, and the ``METRICS`` registry through which the
align stage uses them.

Names are imported on first use: validating a config imports ``workbench.alignment.config`` (and the metric
registry), which must not pay for torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "workbench.alignment.ceiling": ("ceiled_scores", "spearman_brown", "split_half_ceiling", "split_half_correlations",
                                    "split_half_masks"),
    "workbench.alignment.cka": ("cka", "linear_cka", "linear_cka_biased", "linear_cka_unbiased", "rbf_cka"),
    "workbench.alignment.inference": ("RSAResult", "bootstrap_indices", "bootstrap_rsa", "noise_ceiling"),
    "workbench.alignment.regression": ("DEFAULT_ALPHAS", "EncodingResult", "PLSEncoder", "RidgeEncoder",
                                       "cross_validate_encoding", "make_folds", "median_pearson_r",
                                       "median_pearson_scorer", "ridge_cv_predictions"),
    "workbench.alignment.ridge_blocked": ("fit_ridge_blocked", "ridge_cv_predictions_blocked"),
    "workbench.alignment.rsa": ("COMPARE_METHODS", "RDM_METRICS", "RSATOOLBOX_NAMES", "as_condensed", "compare_rdms",
                                "compute_rdm"),
    "workbench.alignment.metrics": ("METRICS", "AlignmentMetric", "RecordingsMetric", "MetricResult"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'workbench.alignment' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
