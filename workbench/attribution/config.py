"""The attribute stage's config section (``attribute:`` in the study, ``configs/attribute/default.yaml``).

The single home of the section's defaults and checks. Imports nothing heavy at module level: the pipeline imports
every stage's schema to validate a config before anything runs. ``methods`` are checked against the attribution
method registry when the section is parsed (that import brings torch, never captum or shap), so a misspelt method
fails at the start of a run, not after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from workbench.config import ConfigError, bounded, default_list, default_of
from workbench.registry import nearest


@dataclass
class UnitSpec:
    """One unit (``unit``: flat index in C, H, W order, or [c, h, w]) or one channel's mean (``channel``)."""

    layer: str
    unit: int | list[int] | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if (self.unit is None) == (self.channel is None):
            raise ConfigError(f"targets.units entry for layer {self.layer!r} needs exactly one of unit (a unit: flat "
                              f"index or [c, h, w]) or channel (a channel's spatial mean); got unit={self.unit!r}, "
                              f"channel={self.channel!r}")


@dataclass
class PatchesConfig:
    layers: list[str] | None = None                      # null = model.topography.layers (needs cortical sheets)
    radius_fraction: float = 0.15                        # patch radius / the sheet's side; centred on the sheet

    def __post_init__(self) -> None:
        if self.radius_fraction <= 0:
            raise ConfigError(f"targets.patches.radius_fraction must be > 0, got {self.radius_fraction}")


@dataclass
class NeuralSitesConfig:
    """Neuroids of a data set whose linear readouts the align stage fitted (``run.load_readout(dataset, layer)``);
    their maps are computed on that data set's images, so ``dataset`` is also a stimulus set."""

    renamed_keys: ClassVar[dict[str, str]] = {"session": "dataset (cowley_v4_<session>)"}

    dataset: str = "cowley_v4_201025"
    # or a benchmark whose encoding metric saves readouts (v4_ridge_<session>): its data set replaces `dataset`
    benchmark: str | None = None
    layers: list[str] | None = None                      # null = the earliest layers with a readout, up to max_layers
    max_layers: int = bounded(1, min=1)
    neuroids: int | list[int] = default_list(0, 1)       # indices into the readout's neuroids, or k: the first k

    def __post_init__(self) -> None:
        if self.benchmark is not None:
            from workbench.benchmarks import benchmark_dataset

            self.dataset = benchmark_dataset(self.benchmark, "targets.neural_sites.benchmark", readouts=True)


@dataclass
class TargetsConfig:
    renamed_keys: ClassVar[dict[str, str]] = {"class": "class_target"}

    # the class logit: each image's predicted class, a fixed class index, or null (no class target)
    class_target: Literal["predicted"] | int | None = "predicted"
    units: list[UnitSpec] = default_list(UnitSpec("conv3", channel=0))
    patches: PatchesConfig | None = default_of(PatchesConfig)              # null: no patch targets
    neural_sites: NeuralSitesConfig | None = default_of(NeuralSitesConfig)  # null: no neural-site targets


@dataclass
class NoiseTunnelConfig:
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"
    nt_samples: int = bounded(8, min=1)
    stdevs: float = bounded(0.1, min=0.0)


@dataclass
class IGConfig:
    n_steps: int = bounded(64, min=1)
    # captum's quadrature rule (its `method`)
    integration: Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                         "riemann_trapezoid"] = "gausslegendre"
    noise_tunnel: NoiseTunnelConfig | None = None        # e.g. {nt_samples: 8, stdevs: 0.1}: SmoothGrad over IG


@dataclass
class SmoothGradConfig:
    nt_samples: int = bounded(16, min=1)
    stdevs: float = bounded(0.15, min=0.0)


@dataclass
class ShapConfig:
    n_samples: int = bounded(64, min=1)                  # GradientShap / GradientExplainer samples per image
    n_background: int = bounded(16, min=0)               # background images (other images of the same set)
    seed: int | None = 0


@dataclass
class ChecksConfig:
    completeness: bool = True
    randomisation: bool = True                           # cascading model-parameter randomisation, top-down
    granularity: Literal["children", "leaves"] = "children"
    faithfulness: bool = True                            # deletion / insertion curves vs random pixel orders
    faithfulness_steps: int = bounded(20, min=2)
    n_random_orders: int = bounded(3, min=1)
    fill: float | Literal["mean", "blur"] = 0.0          # removed pixels' value in normalised input space
    agreement: bool = True
    n_images: int = bounded(4, min=1)                    # images of the first set used by the checks


@dataclass
class AttributeConfig:
    methods: list[str] = default_list("saliency", "integrated_gradients", "gradient_shap", "deeplift",
                                      "shap_gradient", "shap_deep")
    stimulus_sets: list[str] = default_list("kriegeskorte92", "cowley_v4_201025")
    n_images: int = bounded(8, min=1)                    # the first n images of each set
    internal_batch_size: int = bounded(64, min=1)        # most rows in one forward/backward pass: bounds memory
    overlay_images: int = bounded(4, min=0)              # images per target in the overlay figures
    targets: TargetsConfig = default_of(TargetsConfig)
    ig: IGConfig = default_of(IGConfig)
    smoothgrad: SmoothGradConfig = default_of(SmoothGradConfig)
    shap: ShapConfig = default_of(ShapConfig)
    checks: ChecksConfig = default_of(ChecksConfig)
    # options of methods that have no section above (a plugin's method), keyed by method name; each method parses
    # its own entry (AttributionMethod.options_from_config)
    method_options: dict[str, dict[str, Any]] = default_of(dict)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("methods is empty; name at least one attribution method")
        if not self.stimulus_sets:
            raise ConfigError("stimulus_sets is empty; name at least one stimulus set")
        sites = self.targets.neural_sites
        if sites is not None and sites.dataset not in self.stimulus_sets:
            raise ConfigError(
                f"targets.neural_sites.dataset = {sites.dataset!r} is not one of stimulus_sets {self.stimulus_sets}; "
                f"its readouts predict responses to that set's images: add it to stimulus_sets, or set "
                f"targets.neural_sites: null")
        self._check_methods()

    def _check_methods(self) -> None:
        """Every method is registered (nearest name for a typo) and accepts its options from this config."""
        from workbench.attribution.methods import METHODS  # torch, not captum/shap; plugins are imported by now

        for where, names in (("methods", self.methods), ("method_options", list(self.method_options))):
            for name in names:
                if name not in METHODS:
                    raise ConfigError(
                        f"{where} names {name!r}, which is not a registered attribution method"
                        f"{nearest(name, METHODS.names() + sorted(METHODS.aliases))}; registered: "
                        f"{', '.join(METHODS.names())}. Register your own with @METHODS.register(...) in a module "
                        f"named by `plugins: [<module>]`")
        for name in self.method_options:
            if name in METHODS.aliases:
                raise ConfigError(f"method_options: write {METHODS.aliases[name]!r}, the method's registered name, "
                                  f"instead of its alias {name!r}")
        for name in self.methods:
            METHODS.get(name).options_from_config(self)
