"""The ``intervene`` section: lesion studies of one layer (schema, defaults and validation in one place).

configs/intervene/default.yaml documents these keys with the same defaults; YAML only overrides them. The lesion
selections (``selections``, ``site_kind``) are names in ``workbench.intervention.selection.SELECTIONS`` /
``SITES``, so a plugin's selection is configured like a built-in one. Imports nothing heavy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from workbench.config import ConfigError, bounded, default_list, default_of

EFFECTS = ("cifar", "responses92", "rsa", "v4")
Effect = Literal["cifar", "responses92", "rsa", "v4"]


@dataclass
class InterveneConfig:
    renamed_keys: ClassVar[dict[str, str]] = {"v4_session": "v4_dataset (cowley_v4_<session>)"}

    layer: str | None = None              # null = the model's last topography layer (else its last (C, H, W) layer)
    response_layer: str | None = None     # where response changes and RSA are measured; null = the layer after it
    mode: Literal["zero", "mean"] = "zero"  # mean: the mean over the CIFAR-10 selectivity half
    # the stimulus set whose metadata columns define the contrasts (category column -> reference column, null =
    # every other image); one half selects units, the other measures response changes
    stimulus_set: str = "kriegeskorte92"
    contrasts: dict[str, str | None] = default_of(lambda: {"face": None, "body": None, "animate": "inanim"})
    split_by: str | None = "category"     # metadata column the two halves are stratified by (null: unstratified)
    response_categories: list[str] = default_list("face", "body", "animate", "inanim", "human", "natObj",
                                                  "artiObj")
    # CIFAR-10 classes a category-selective lesion is expected to hurt most
    cifar_targets: dict[str, list[str]] = default_of(lambda: {
        "animate": ["bird", "cat", "deer", "dog", "frog", "horse"],
        "inanim": ["airplane", "automobile", "ship", "truck"]})
    # selective lesions (SELECTIONS); each is compared with the size-matched control its entry names. The first that
    # runs on the layer is the one of the headline and the lesion map.
    selections: list[str] = default_list("disk_peak", "top_k")
    lesion_sizes: list[int | float] = default_list(0.01, 0.02, 0.05, 0.1, 0.2)  # fractions (floats) or counts
    main_size: int | float = 0.05         # size of the specificity, RSA and V4 numbers; one of lesion_sizes
    smoothing_sigma: float | None = bounded(None, min=0.0)  # mm of sheet, before picking a selectivity peak
    default_sheet: bool = True            # a layer without a cortical sheet gets the default one
    n_random: int = bounded(5, min=1)     # random controls per lesion size
    n_sites: int = bounded(16, min=1)     # lesion sites for interventional alignment
    site_size: int | float = 0.02
    site_kind: str = "auto"               # auto (disk on the sheet if there is one, else top_k) | a SITES name
    n_cifar_test: int = bounded(2000, min=1)  # class-balanced test images: half selectivity, half deficits
    n_bootstrap: int = bounded(1000, min=1)
    n_permutations: int = bounded(1000, min=1)
    ci_level: float = bounded(0.95, min=0.0, max=1.0)
    effects: list[Effect] = default_list(*EFFECTS)
    rsa_rdm_set: str = "kriegeskorte2008"  # an RDM set (workbench.data.RDM_SETS) of the stimulus set's images
    rsa_regions: list[str] = default_list("hIT", "mIT")
    rsa_metric: str = "correlation"
    rsa_method: str = "spearman"
    v4_dataset: str = "cowley_v4_210325"  # registered both as a stimulus set and as a response set
    v4_benchmark: str | None = None       # or a benchmark of one V4 data set (v4_ridge_<session>): its data set
    rsa_benchmark: str | None = None      # or an RSA benchmark (hit_rsa): its RDM set and region replace rsa_*
    v4_layer: str | None = None           # null = response_layer
    v4_n_images: int | None = bounded(None, min=1)  # null = every image; a number = a seeded subset
    batch_size: int = bounded(256, min=1)
    seed: int | None = None               # null = the run's seed

    def __post_init__(self) -> None:
        self._check_sizes()
        self._from_benchmarks()
        if not self.contrasts:
            raise ConfigError("contrasts needs at least one category (e.g. {face: null})")
        if not 0.0 < self.ci_level < 1.0:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {self.ci_level}")
        self._check_selections()

    def _from_benchmarks(self) -> None:
        """v4_benchmark / rsa_benchmark name the data of a benchmark instead of the data sets themselves."""
        from workbench.benchmarks import benchmark_dataset

        if self.v4_benchmark is not None:
            self.v4_dataset = benchmark_dataset(self.v4_benchmark, "v4_benchmark")
        if self.rsa_benchmark is not None:
            from workbench.benchmarks import get_benchmark

            _, benchmark = get_benchmark(self.rsa_benchmark)
            if benchmark.metric != "rsa" or benchmark.settings.get("stimulus_set") != self.stimulus_set:
                raise ConfigError(f"rsa_benchmark: {self.rsa_benchmark!r} is not an RSA benchmark of stimulus set "
                                  f"{self.stimulus_set!r} (the lesion effects are measured on that set's images)")
            self.rsa_rdm_set = benchmark.settings["rdm_set"]
            self.rsa_regions = list(benchmark.settings["targets"])

    def _check_sizes(self) -> None:
        sizes = list(self.lesion_sizes)
        if not sizes:
            raise ConfigError("lesion_sizes needs at least one size (a fraction of the layer, or a unit count)")
        for where, size in [(f"lesion_sizes[{i}]", s) for i, s in enumerate(sizes)] + [("site_size",
                                                                                          self.site_size)]:
            _check_size(where, size)
        if self.main_size not in sizes:
            raise ConfigError(f"main_size {self.main_size} must be one of lesion_sizes {sizes}")
        # fractions and counts compare only once the layer's size is known (the stage checks the unit counts)
        for kind in (int, float):
            same = [s for s in sizes if isinstance(s, kind)]
            if any(b <= a for a, b in zip(same, same[1:])):
                raise ConfigError(f"lesion_sizes must grow strictly (a sweep of growing lesions), got {sizes}")

    def _check_selections(self) -> None:
        from workbench.intervention.selection import SELECTIONS, SITES
        from workbench.registry import nearest

        if not self.selections:
            raise ConfigError(f"selections needs at least one selective lesion; registered: "
                              f"{', '.join(selective_names())}")
        for name in self.selections:
            if name not in SELECTIONS:
                raise ConfigError(f"selections: unknown lesion selection {name!r}{nearest(name, SELECTIONS.names())}"
                                  f"; selective ones are {', '.join(selective_names())} (register your own with "
                                  "@SELECTIONS.register in a module named by `plugins: [...]`)")
            if not _is_selective(SELECTIONS.get(name)):
                raise ConfigError(f"selections: {name!r} is not a selective lesion (a SelectiveLesion subclass); "
                                  f"list selective ones ({', '.join(selective_names())}): each brings the control "
                                  "it names")
        if self.site_kind != "auto" and self.site_kind not in SITES:
            raise ConfigError(f"site_kind must be auto or one of {', '.join(SITES.names())}, got "
                              f"{self.site_kind!r}{nearest(self.site_kind, ['auto', *SITES.names()])}")


def selective_names() -> list[str]:
    from workbench.intervention.selection import SELECTIONS

    return [n for n in SELECTIONS.names() if _is_selective(SELECTIONS.get(n))]


def _is_selective(entry: object) -> bool:
    from workbench.intervention.selection import SelectiveLesion

    return isinstance(entry, type) and issubclass(entry, SelectiveLesion)


def _check_size(where: str, size: int | float) -> None:
    if isinstance(size, float) and not 0.0 < size <= 1.0:
        raise ConfigError(f"{where}: a fractional lesion size must lie in (0, 1], got {size}")
    if isinstance(size, int) and size < 1:
        raise ConfigError(f"{where}: a lesion needs at least one unit, got {size}")
