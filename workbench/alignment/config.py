"""Config schema of the align stage (``align:``) and of the built-in alignment metrics' settings.

    align:
      layers: null                 # null = every layer the extract stage wrote
      metrics: [rsa, ridge]        # entries of workbench.alignment.METRICS, scored in this order
      settings:                    # one block per metric, checked against that metric's own schema
        rsa: {stimulus_set: kriegeskorte92, rdm_set: kriegeskorte2008, targets: [hIT, mIT], ...}
        ridge: {datasets: [cowley_v4_201025, cowley_v4_210325], ...}

A metric's settings block is parsed with the ``config`` dataclass of its registry entry, so a metric registered by a
plugin brings its own keys and defaults. A block may be given for a metric that is not listed in ``metrics`` (the
settings are checked, the metric does not run): switching one on is then ``align.metrics=[rsa,ridge,cka]``.

Data sets are named here, never in code: ``rsa.stimulus_set`` / ``rsa.rdm_set`` name entries of STIMULUS_SETS and
RDM_SETS; each name in an encoding or CKA metric's ``datasets`` names both a stimulus set (the images, whose
activations the extract stage wrote) and a response set (RESPONSES) registered under the same name. The names are
checked against the registries when the align stage starts (importing the data registries here would make every
config check pay for lightning and torchvision).

This module imports nothing heavy: the pipeline imports every stage's schema to validate a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from workbench.config import ConfigError, bounded, default_list, default_of, parse
from workbench.registry import nearest

# Keys of the align section of metrics.json that are not a metric's section: no metric may be named like them.
RESERVED_SECTION_KEYS = ("layers", "summary", "headline", "references", "seconds", "captions", "committed")
# Keys of a recordings metric's section beside its data sets (metrics.json: align.<metric>.<dataset>).
RECORDINGS_SECTION_KEYS = ("method", "n_folds", "standardize", "n_components", "ceiled_score_definitions",
                           "ceiling_definition", "ceiling_options", "kernel", "estimator", "rbf_bandwidth")

# The same names as workbench.alignment.rsa.RDM_METRICS / COMPARE_METHODS (a test keeps them equal); written out
# because that module imports torch. crossnobis is left out: it needs repeated measurements, a layer has one.
RDMMetric = Literal["correlation", "euclidean", "cosine"]
CompareMethod = Literal["spearman", "pearson", "kendall_tau_a", "cosine", "whitened_cosine", "whitened_pearson"]


@dataclass
class RSAConfig:
    """RSA: layer RDMs on a stimulus set against the brain RDMs of the same images, with bootstrap intervals."""

    stimulus_set: str = "kriegeskorte92"      # images of the layer RDMs (a STIMULUS_SETS entry the extract stage wrote)
    rdm_set: str = "kriegeskorte2008"         # brain RDMs of those images (an RDM_SETS entry)
    targets: list[str] = default_list("hIT", "mIT")   # regions, passed to the RDM set's loader as region=...
    metric: RDMMetric = "correlation"         # dissimilarity of the layer RDMs
    method: CompareMethod = "spearman"        # RDM comparison
    n_bootstrap: int = bounded(1000, min=2)
    scheme: Literal["stimuli", "subjects", "both"] = "both"   # a target with one subject is bootstrapped over stimuli
    ci_level: float = 0.95

    def __post_init__(self):
        if not self.targets:
            raise ConfigError("targets is empty: name the regions of the RDM set to score (e.g. [hIT, mIT]), or drop "
                              "rsa from align.metrics")
        _no_reserved("targets", self.targets, ("metric", "stimulus_set", "rdm_set"))
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1 (e.g. 0.95), got {self.ci_level}")
        if self.method.startswith("whitened") and self.scheme != "subjects":
            raise ConfigError(f"method {self.method!r} cannot be bootstrapped over stimuli; set scheme: subjects or "
                              f"pick a rank/linear method (spearman, pearson, kendall_tau_a, cosine)")


@dataclass
class RecordingsConfig:
    """Settings shared by metrics that compare layer activations with recorded responses to the same images."""

    datasets: list[str] = default_list("cowley_v4_201025", "cowley_v4_210325")  # stimulus set + response set names
    ceiling_splits: int = bounded(100, min=1)  # split-half splits of the trial data (a data set without trials: none)

    def __post_init__(self):
        if not self.datasets:
            raise ConfigError("datasets is empty: name at least one recording (a stimulus set and a response set "
                              "registered under the same name), or drop this metric from align.metrics")
        _no_reserved("datasets", self.datasets, RECORDINGS_SECTION_KEYS)
        repeated = sorted({d for d in self.datasets if self.datasets.count(d) > 1})
        if repeated:
            raise ConfigError(f"datasets lists {repeated} more than once")


@dataclass
class EncodingConfig(RecordingsConfig):
    """Encoding metrics; the ceiling_* keys choose the split-half ceiling (workbench.alignment.ceiling)."""

    n_folds: int = bounded(5, min=2)
    readouts: bool = True     # save the full-data readouts to cache/readouts/<dataset>/ (attribute's neural sites)
    # equal: a cell with an odd number of repeats drops one at random per split (Spearman-Brown's equal halves);
    # unequal: floor(k/2) vs ceil(k/2) repeats, every repeat used
    ceiling_halves: Literal["equal", "unequal"] = "equal"
    # kept_repeats: Spearman-Brown factor 2 (reliability of the repeats both halves hold); all_repeats: the factor to
    # the mean of all valid repeats, the means that are scored (equal halves only)
    ceiling_corrected_to: Literal["kept_repeats", "all_repeats"] = "kept_repeats"
    # per_split: correct each split's r, then average (Brain-Score's order); mean_r: correct the mean r once
    ceiling_spearman_brown_order: Literal["per_split", "mean_r"] = "per_split"

    def __post_init__(self):
        super().__post_init__()
        if self.ceiling_corrected_to == "all_repeats" and self.ceiling_halves != "equal":
            raise ConfigError("ceiling_corrected_to: all_repeats needs ceiling_halves: equal (its Spearman-Brown "
                              "factor assumes halves of equal size); set ceiling_halves: equal or "
                              "ceiling_corrected_to: kept_repeats")


@dataclass
class RidgeConfig(EncodingConfig):
    """Cross-validated ridge encoding (penalty chosen by generalised cross-validation inside each training fold)."""

    alphas: list[float] | None = None   # null = workbench.alignment.regression.DEFAULT_ALPHAS (logspace(-2, 6, 17))
    standardize: bool = True            # z-score units on the training data (folded into the saved readouts)

    def __post_init__(self):
        super().__post_init__()
        if self.alphas is not None and (not self.alphas or min(self.alphas) <= 0):
            raise ConfigError(f"alphas must be a non-empty list of positive penalties, or null; got {self.alphas}")


@dataclass
class PLSConfig(EncodingConfig):
    """Cross-validated partial least squares encoding (no scaling, as in Brain-Score)."""

    n_components: int = bounded(25, min=1)


@dataclass
class CKAConfig(RecordingsConfig):
    """CKA between a layer's activations and the recorded responses to the same images (workbench.alignment.cka).

    The split-half ceiling exists for the linear kernel with the unbiased estimator only (see
    workbench.alignment.metrics.cka); its halves need not be equal (the unbiased HSIC of two independent halves is
    unbiased whatever their sizes), so every repeat is used.
    """

    kernel: Literal["linear", "rbf"] = "linear"             # names of workbench.alignment.cka.KERNELS
    estimator: Literal["unbiased", "biased"] = "unbiased"   # HSIC: unbiased (Song et al. 2012) | biased (Kornblith)
    rbf_bandwidth: float = 1.0   # kernel: rbf only; sigma as a fraction of the median distance between stimuli

    def __post_init__(self):
        super().__post_init__()
        if not self.rbf_bandwidth > 0:
            raise ConfigError(f"rbf_bandwidth is a positive fraction of the median distance (e.g. 1.0), got "
                              f"{self.rbf_bandwidth}")


@dataclass
class AlignConfig:
    renamed_keys: ClassVar[dict[str, str]] = {
        "rsa": "settings.rsa", "regression": "settings.ridge (or settings.pls; list the metric in metrics)"}

    layers: list[str] | None = None              # null = every layer the extract stage wrote
    metrics: list[str] = default_list("rsa", "ridge")   # METRICS entries to score, in order (also: pls, cka)
    settings: dict[str, Any] = default_of(dict)  # metric name -> its settings (its schema's defaults fill the rest)
    # BENCHMARKS entries (hit_rsa, v4_ridge_210325, ...), configs/benchmark/<name>.yaml files, .yaml paths or inline
    # user benchmarks, scored after the metrics; each writes the section align.<benchmark name>
    benchmarks: list[Any] = default_list()
    # {metric name: settings} applied to every benchmark of that metric (e.g. {rsa: {n_bootstrap: 100}}); recorded
    # in the benchmark's section, so a changed protocol is visible
    benchmark_options: dict[str, dict[str, Any]] = default_of(dict)
    # Brain-Score's practice: choose each target's layer on a seeded half of its stimuli, report its score on the
    # other half (the per-layer profile's best layer is then labelled post hoc)
    commit_layers: bool = True
    commit_fraction: float = 0.5                 # fraction of the stimuli that chooses the layer

    def __post_init__(self):
        from workbench.alignment.metrics import METRICS

        if not self.metrics and not self.benchmarks:
            raise ConfigError("metrics is empty and so is benchmarks: list alignment metrics (e.g. [rsa, ridge]) or "
                              "benchmarks (e.g. [hit_rsa, v4_ridge_210325]) to score, or drop align from stages")
        for key, names in (("metrics", self.metrics), ("settings", list(self.settings))):
            for name in names:
                if name not in METRICS:
                    raise ConfigError(f"{key}: unknown alignment metric {name!r}{nearest(name, METRICS.names())}; "
                                      f"registered metrics are {', '.join(METRICS.names())} (a plugin registers "
                                      f"its own with @METRICS.register)")
                if name in RESERVED_SECTION_KEYS:
                    raise ConfigError(f"metric {name!r} would overwrite the align section's own key {name!r}; "
                                      f"register it under another name")
        if len(set(self.metrics)) < len(self.metrics):
            raise ConfigError(f"metrics lists a metric twice: {self.metrics}")
        if not 0 < self.commit_fraction < 1:
            raise ConfigError(f"commit_fraction is the share of stimuli that chooses the layer, strictly between 0 "
                              f"and 1 (e.g. 0.5); got {self.commit_fraction}")
        order = self.metrics + [n for n in self.settings if n not in self.metrics]
        self.settings = {name: parse(METRICS.get(name).config, self.settings.get(name), f"align.settings.{name}")
                         for name in order}
        readers = {name: self.settings[name] for name in self.metrics}
        readers.update(self._benchmark_settings())
        _one_readout_per_dataset(list(readers), readers)

    def _benchmark_settings(self) -> dict[str, Any]:
        """{benchmark name: its parsed metric settings}; unknown names and clashes are ConfigErrors."""
        from workbench.benchmarks import get_benchmark

        out: dict[str, Any] = {}
        for entry in self.benchmarks:
            name, benchmark = get_benchmark(entry)
            benchmark = with_options(benchmark, self.benchmark_options)
            if name in out or name in self.metrics or name in RESERVED_SECTION_KEYS:
                raise ConfigError(f"benchmarks: {name!r} is listed twice, or clashes with a metric or a key of the "
                                  f"align section ({', '.join(RESERVED_SECTION_KEYS)})")
            out[name] = benchmark.parsed_settings(name)
        return out

    def stimulus_sets_needed(self) -> list[str]:
        """The stimulus sets whose activations the metrics and benchmarks read (what the extract stage writes)."""
        from workbench.alignment.metrics import METRICS

        metrics = [METRICS.get(name)(name, self.settings[name]) for name in self.metrics]
        metrics += [benchmark_metric(entry, self.benchmark_options) for entry in self.benchmarks]
        return list(dict.fromkeys(s for metric in metrics for s in metric.stimulus_sets()))


def benchmark_metric(entry: Any, options: dict[str, dict[str, Any]] | None = None):
    """The metric object of an ``align.benchmarks`` entry (named after the benchmark), with ``options``
    (``align.benchmark_options``) applied."""
    from workbench.benchmarks import get_benchmark

    name, benchmark = get_benchmark(entry)
    return with_options(benchmark, options or {}).metric_instance(name)


def with_options(benchmark, options: dict[str, dict[str, Any]]):
    """``benchmark`` with ``options[benchmark.metric]`` over its settings (the data keys stay the benchmark's)."""
    import dataclasses

    extra = dict(options.get(benchmark.metric) or {})
    clash = {"stimulus_set", "rdm_set", "targets", "datasets"} & set(extra)
    if clash:
        raise ConfigError(f"benchmark_options.{benchmark.metric}.{sorted(clash)[0]}: a benchmark's data are its own; "
                          f"score other data with another benchmark")
    return dataclasses.replace(benchmark, settings={**benchmark.settings, **extra}) if extra else benchmark


def _one_readout_per_dataset(metrics: list[str], settings: dict[str, Any]) -> None:
    """Readouts live at cache/readouts/<dataset>/<layer>.npz: two metrics writing them would overwrite each other."""
    writer: dict[str, str] = {}
    for name in metrics:
        if not getattr(settings[name], "readouts", False):
            continue
        for dataset in settings[name].datasets:
            if dataset in writer:
                raise ConfigError(f"settings.{writer[dataset]} and settings.{name} both save the readouts of "
                                  f"{dataset!r}; set readouts: false in one of them")
            writer[dataset] = name


def _no_reserved(key: str, names: list[str], reserved: tuple[str, ...]) -> None:
    clash = [n for n in names if n in reserved]
    if clash:
        raise ConfigError(f"{key}: {clash} would overwrite a key of the same name in the metric's results "
                          f"({', '.join(reserved)}); register the data under another name")
