"""The built-in benchmarks: hIT and mIT RSA on the 92 images (Kriegeskorte et al. 2008), and V4 ridge, PLS and
CKA for each Cowley et al. 2023 session (ceiled where the session has trial-level data).

    hit_rsa, mit_rsa                       RSA of layer RDMs with the human / monkey IT RDMs (bootstrap CIs)
    v4_ridge_<session>, v4_pls_<session>   cross-validated encoding of V4 neuroids (median Pearson r, r^2/c)
    v4_cka_<session>, v4_cka_rbf_<session> CKA (linear unbiased; RBF) between a layer and the V4 population
"""

from __future__ import annotations

from workbench.benchmarks import BENCHMARKS, Benchmark

KRIEGESKORTE_2008 = ("Kriegeskorte, N., Mur, M., Ruff, D. A., Kiani, R., Bodurka, J., Esteky, H., Tanaka, K., & "
                     "Bandettini, P. A. (2008). Matching categorical object representations in inferior temporal "
                     "cortex of man and monkey. Neuron, 60(6), 1126-1141.")
COWLEY_2023 = ("Cowley, B. R., Stan, P. L., Pillow, J. W., & Smith, M. A. (2023). Compact deep neural network "
               "models of visual cortex. bioRxiv 2023.11.22.568315.")
KORNBLITH_2019 = ("Kornblith, S., Norouzi, M., Lee, H., & Hinton, G. (2019). Similarity of neural network "
                  "representations revisited. ICML, 3519-3529.")
SCHRIMPF_2018 = ("Schrimpf, M., Kubilius, J., Hong, H., et al. (2018). Brain-Score: which artificial neural "
                 "network for object recognition is most brain-like? bioRxiv 407007.")
# The sessions of workbench.data.V4_SESSIONS (a test keeps them equal): written out because importing the data
# package brings torchvision and lightning, and the config check resolves benchmark names.
COWLEY_V4_SESSIONS = ("190923", "201025", "210225", "210325")

for _region, _target in (("human IT", "hIT"), ("macaque IT", "mIT")):
    BENCHMARKS.add(f"{_target.lower()}_rsa", Benchmark(
        "rsa", {"stimulus_set": "kriegeskorte92", "rdm_set": "kriegeskorte2008", "targets": [_target]},
        region=_target, description=f"RSA with the {_region} RDMs of the 92 images (Spearman, bootstrap CIs, "
                                    f"noise ceiling)"), citation=(KRIEGESKORTE_2008,))

for _session in COWLEY_V4_SESSIONS:
    _dataset = f"cowley_v4_{_session}"
    for _metric, _what in (("ridge", "ridge encoding"), ("pls", "PLS encoding (25 components)")):
        BENCHMARKS.add(f"v4_{_metric}_{_session}", Benchmark(
            _metric, {"datasets": [_dataset], "readouts": _metric == "ridge"}, region="V4",
            description=f"macaque V4 session {_session}: cross-validated {_what}, split-half ceiling where the "
                        f"session has trials"), citation=(COWLEY_2023, SCHRIMPF_2018))
    BENCHMARKS.add(f"v4_cka_{_session}", Benchmark(
        "cka", {"datasets": [_dataset]}, region="V4",
        description=f"macaque V4 session {_session}: linear CKA (unbiased HSIC)"), citation=(COWLEY_2023,
                                                                                             KORNBLITH_2019))
    BENCHMARKS.add(f"v4_cka_rbf_{_session}", Benchmark(
        "cka", {"datasets": [_dataset], "kernel": "rbf", "estimator": "biased"}, region="V4",
        description=f"macaque V4 session {_session}: RBF-kernel CKA (bandwidth = median distance)"),
        citation=(COWLEY_2023, KORNBLITH_2019))
