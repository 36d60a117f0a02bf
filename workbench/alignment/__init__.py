"""Representation alignment: RSA (RDMs, comparisons, noise ceilings, bootstrap inference), cross-validated
encoding models (ridge, PLS) with split-half ceilings, and linear CKA."""

from workbench.alignment.ceiling import ceiled_scores, spearman_brown, split_half_ceiling
from workbench.alignment.cka import linear_cka
from workbench.alignment.inference import RSAResult, bootstrap_indices, bootstrap_rsa, noise_ceiling
from workbench.alignment.regression import (DEFAULT_ALPHAS, EncodingResult, PLSEncoder, RidgeEncoder,
                                            cross_validate_encoding, make_folds, ridge_cv_predictions)
from workbench.alignment.rsa import (COMPARE_METHODS, RDM_METRICS, RSATOOLBOX_NAMES, as_condensed, compare_rdms,
                                     compute_rdm)

__all__ = ["compute_rdm", "compare_rdms", "noise_ceiling", "bootstrap_rsa", "bootstrap_indices", "RSAResult",
           "as_condensed", "RDM_METRICS", "COMPARE_METHODS", "RSATOOLBOX_NAMES", "RidgeEncoder", "PLSEncoder",
           "cross_validate_encoding", "ridge_cv_predictions", "make_folds", "EncodingResult", "DEFAULT_ALPHAS",
           "split_half_ceiling", "spearman_brown", "ceiled_scores", "linear_cka"]
