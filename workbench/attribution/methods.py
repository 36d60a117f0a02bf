"""Attribution methods: thin wrappers around captum and shap, one class per method, each in the ``METHODS`` registry.

Each class keeps the library's explainer object visible (``.explainer``) and adds what a study needs around it:
a target (class, unit, patch, neural site; see ``targets``), a safe copy of the model, input and baseline
validation, batching that bounds memory, the device, a progress bar, and per-image completeness numbers
(sum of attributions vs f(x) - E f(baseline)) for the methods that promise completeness.

    >>> result = attribute(model, images, 3, "integrated_gradients", n_steps=64)
    >>> result.attributions.shape == images.shape

A new method is one class in one file (the captum pattern: one class, one ``attribute`` call; we wrap, we do not
hide), registered with its citation; it maps its own options from the stage config (``options_from_config``):

    @METHODS.register("input_x_gradient", citation="Shrikumar et al. (2016). ... arXiv:1605.01713.")
    class InputXGradient(AttributionMethod):
        uses_baselines = False

        def _make_explainer(self):
            from captum.attr import InputXGradient
            return InputXGradient(self.forward)

        def _attribute_batch(self, x, baselines):
            return self.explainer.attribute(x, target=0)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.logs import progress_disabled

from workbench.attribution.safety import check_module_rules, safe_copy
from workbench.attribution.targets import TargetForward, as_target
from workbench.config import ConfigError, parse, to_dict
from workbench.registry import Entry, Registry

__all__ = [
    "Attribution", "AttributionMethod", "Saliency", "SmoothGrad", "IntegratedGradients", "GradientShap", "DeepLift",
    "ShapGradient", "ShapDeep", "METHODS", "MethodRegistry", "attribute", "method_class", "method_names",
    "prepare_inputs", "prepare_baselines",
]


@dataclass
class Attribution:
    """Attributions shaped like the inputs (N, C, H, W), plus what produced them.

    ``outputs``: target value f(x) per image; ``baseline_outputs``: f(baseline) (the mean over a baseline
    distribution for the SHAP family); ``delta``: sum(attributions) - (outputs - baseline_outputs) per image, the
    completeness gap (None for methods that promise no completeness, e.g. saliency).
    """

    attributions: np.ndarray
    method: str
    target: dict[str, Any]
    options: dict[str, Any]
    outputs: np.ndarray
    baseline_outputs: np.ndarray | None = None
    delta: np.ndarray | None = None
    citation: str = ""
    device: str = "cpu"
    seconds: float = 0.0
    model_report: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_completeness_error(self) -> np.ndarray | None:
        """|delta| / |f(x) - f(baseline)| per image (NaN where the difference is zero)."""
        if self.delta is None or self.baseline_outputs is None:
            return None
        diff = np.abs(self.outputs - self.baseline_outputs)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(diff > 0, np.abs(self.delta) / diff, np.nan)

    def maps(self, reduce: str = "sum") -> np.ndarray:
        """(N, H, W) maps: channels summed ('sum'), summed then absolute ('abs'), or absolute then summed."""
        a = self.attributions
        if reduce == "sum":
            return a.sum(1)
        if reduce == "abs":
            return np.abs(a.sum(1))
        if reduce == "abs_sum":
            return np.abs(a).sum(1)
        raise ValueError(f"reduce must be 'sum', 'abs' or 'abs_sum', got {reduce!r}")

    def metadata(self) -> dict[str, Any]:
        """JSON-able description (no arrays bigger than one number per image)."""
        rel = self.relative_completeness_error
        return {
            "method": self.method, "target": self.target, "options": self.options, "citation": self.citation,
            "device": self.device, "seconds": self.seconds, "n_images": int(self.attributions.shape[0]),
            "outputs": self.outputs.tolist(),
            "completeness_relative_error": None if rel is None else rel.tolist(),
            "model_report": self.model_report,
        }


# -- validation ----------------------------------------------------------------------------------------------------
def _first_conv_in_channels(model: nn.Module) -> tuple[str, int] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name, m.in_channels
    return None


def prepare_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Inputs as a float32 (N, C, H, W) tensor, with errors that say what the model expects."""
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor or numpy array of shape (N, C, H, W), got {type(inputs)}")
    if inputs.dtype == torch.uint8:
        raise ValueError(
            "inputs are uint8 pixels; attribution needs the model's input tensor: apply the model's preprocessing "
            "first (workbench.features.Preprocess.from_config(cfg['model']['preprocess']))"
        )
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be a batch of images (N, C, H, W); got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs hold no images")
    conv = _first_conv_in_channels(model)
    if conv is not None and inputs.shape[1] != conv[1]:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if inputs.shape[-1] == conv[1] else ""
        raise ValueError(
            f"inputs have shape {tuple(inputs.shape)}: {inputs.shape[1]} channels, but the model's first "
            f"convolution {conv[0]!r} expects {conv[1]}; inputs must be (N, {conv[1]}, H, W){hint}"
        )
    inputs = inputs.detach().float()
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf")
    return inputs


def prepare_baselines(baselines: Any, inputs: torch.Tensor, *, distribution: bool) -> torch.Tensor:
    """Baselines broadcast to the inputs.

    ``distribution`` False (IG, DeepLift): a scalar, (C, H, W), (1, C, H, W) or (N, C, H, W) -> (N, C, H, W).
    ``distribution`` True (SHAP family): a scalar, (C, H, W) or (B, C, H, W) background samples -> (B, C, H, W).
    """
    shape = tuple(inputs.shape[1:])
    if baselines is None:
        baselines = 0.0
    if isinstance(baselines, (int, float)):
        base = torch.full((1, *shape), float(baselines))
    else:
        base = torch.as_tensor(np.asarray(baselines) if not isinstance(baselines, torch.Tensor) else baselines)
        base = base.detach().float().cpu()
        if base.ndim == 3:
            base = base.unsqueeze(0)
        if base.ndim != 4 or tuple(base.shape[1:]) != shape:
            allowed = (f"(B, {', '.join(map(str, shape))})" if distribution
                       else f"(1 or {inputs.shape[0]}, {', '.join(map(str, shape))})")
            raise ValueError(
                f"baselines have shape {tuple(base.shape)}; they must match one input image {shape}: "
                f"a scalar, {shape} or {allowed}"
            )
        if not distribution and base.shape[0] not in (1, inputs.shape[0]):
            raise ValueError(
                f"baselines have {base.shape[0]} images but inputs have {inputs.shape[0]}; pass one baseline "
                "(shared) or one per input image"
            )
        if not torch.isfinite(base).all():
            raise ValueError("baselines contain NaN or inf")
    if not distribution:
        base = base.expand(inputs.shape[0], *shape)
    return base.contiguous()


# -- the registry ---------------------------------------------------------------------------------------------
class MethodRegistry(Registry):
    """The attribution-method registry: entries are ``AttributionMethod`` subclasses.

    Registering a class stamps its ``name`` and ``citation`` from the registration (written once, in the decorator)
    and records the names in its own ``aliases`` tuple (``ig`` for ``integrated_gradients``): ``get``, ``entry``,
    ``citations`` and ``in`` accept an alias; ``names()`` lists the registered names only.
    """

    def __init__(self, kind: str = "attribution method"):
        super().__init__(kind)
        self.aliases: dict[str, str] = {}

    def add(self, name: str, obj: Any, *, citation: str | Iterable[str] = "", description: str = "") -> None:
        if not (isinstance(obj, type) and issubclass(obj, AttributionMethod)):
            raise TypeError(f"attribution method {name!r} must be a subclass of "
                            f"workbench.attribution.AttributionMethod (one class wrapping one explainer), got {obj!r}")
        if not description and obj.__doc__:
            description = obj.__doc__.strip().splitlines()[0]
        super().add(name, obj, citation=citation, description=description)
        obj.name = name
        obj.citation = self.citation(name)
        # vars(): a subclass (SmoothGrad of Saliency) does not inherit its parent's aliases
        for alias in vars(obj).get("aliases", ()):
            self.aliases[alias] = name

    def remove(self, name: str) -> None:
        super().remove(name)
        self.aliases = {a: n for a, n in self.aliases.items() if n != name and a != name}

    def entry(self, name: str) -> Entry:
        return super().entry(self.aliases.get(name, name))

    def __contains__(self, name: Any) -> bool:
        return name in self.aliases or super().__contains__(name)


METHODS = MethodRegistry("attribution method")


# -- methods ----------------------------------------------------------------------------------------------------
class AttributionMethod:
    """Base: ``__init__`` builds the wrapped explainer around a target forward; ``attribute`` runs it in batches.

    Subclasses are registered with ``@METHODS.register(name, citation=...)`` (which sets ``name`` and ``citation``),
    say whether baselines form a distribution (SHAP) or one reference per image and whether module rules are used
    (DeepLift-style), implement ``_make_explainer`` and ``_attribute_batch``, and map their options from the stage
    config in ``options_from_config``.
    """

    name = ""                       # set by METHODS.register
    citation = ""                   # set by METHODS.register
    aliases: tuple[str, ...] = ()   # other names the config may use
    uses_baselines = True
    baseline_distribution = False
    module_rules = False
    promises_completeness = False
    # Options of a method that has no section of its own in the attribute config (a plugin's method): a dataclass
    # (see workbench.config) parsed from attribute.method_options.<name>.
    option_schema: type | None = None
    config_section: str | None = None   # the attribute config section a built-in method reads (for messages)

    @classmethod
    def options_from_config(cls, cfg: Any) -> dict[str, Any]:
        """Constructor options from the attribute stage's config (an ``AttributeConfig``): the shared
        ``internal_batch_size`` plus this method's own options. Built-in methods extend this with their section
        (``cfg.ig``, ``cfg.shap``...); a method with an ``option_schema`` reads ``attribute.method_options.<name>``."""
        options: dict[str, Any] = {"internal_batch_size": int(cfg.internal_batch_size)}
        given = (cfg.method_options or {}).get(cls.name)
        if cls.option_schema is not None:
            parsed = parse(cls.option_schema, given, f"attribute.method_options.{cls.name}")
            options.update(to_dict(parsed))
        elif given:
            where = (f"its options come from attribute.{cls.config_section}" if cls.config_section
                     else "it has no options to set")
            raise ConfigError(f"attribute.method_options.{cls.name}: {cls.name} takes no method_options ({where})")
        return options

    @classmethod
    def accepted_options(cls) -> set[str]:
        """Keyword options of the constructor (of this class and its bases)."""
        import inspect

        allowed: set[str] = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            allowed |= {p for p, v in inspect.signature(klass.__init__).parameters.items()
                        if v.kind == v.KEYWORD_ONLY}
        return allowed

    def __init__(self, model: nn.Module, target: Any, *, device: str | torch.device | None = None,
                 internal_batch_size: int = 128):
        from workbench.utils import get_device

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if int(internal_batch_size) < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.device = get_device(None if device is None else str(device))
        self.target = as_target(target)
        self.internal_batch_size = int(internal_batch_size)
        self.source_model = model
        self.model, self.model_report = safe_copy(model, self.device)
        self.forward: TargetForward | None = None
        self.explainer: Any = None

    # options recorded in the metadata
    def options(self) -> dict[str, Any]:
        return {"internal_batch_size": self.internal_batch_size}

    def _build(self, example: torch.Tensor) -> None:
        """Bind the target to the model (validates layer and indices) and build the wrapped explainer."""
        if self.forward is not None:
            return
        self.forward = TargetForward(self.model, self.target, example.to(self.device))
        if self.module_rules:
            check_module_rules(self.model, example[:1].to(self.device), self.name)
        self.explainer = self._make_explainer()

    def _make_explainer(self) -> Any:
        raise NotImplementedError

    def _images_per_chunk(self) -> int:
        """Images per outer batch so that one internal forward holds at most ``internal_batch_size`` rows."""
        return self.internal_batch_size

    def _attribute_batch(self, x: torch.Tensor, baselines: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def target_values(self, x: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """f(x) for every image (the target the maps explain), in batches."""
        x = prepare_inputs(self.model, x)
        self._build(x[:1])
        batch_size = batch_size or self.internal_batch_size
        out = [self.forward(x[i:i + batch_size].to(self.device))[:, 0].double().cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out).numpy()

    def attribute(self, inputs: Any, baselines: Any = None, *, progress: bool = True) -> Attribution:
        x = prepare_inputs(self.model, inputs)
        base = prepare_baselines(baselines, x, distribution=self.baseline_distribution) if self.uses_baselines else None
        try:
            self._build(x[:1])
        except RuntimeError as e:
            # A shape mismatch deep inside the model: say it in terms of the inputs.
            raise ValueError(f"the model cannot run on inputs of shape {tuple(x.shape)}: {e}") from e
        t0 = time.perf_counter()
        chunk = max(1, self._images_per_chunk())
        parts = []
        with tqdm(total=x.shape[0], desc=f"{self.name}: {self.target.label}", unit="img",
                  disable=progress_disabled(progress),
                  leave=False) as bar:
            for i in range(0, x.shape[0], chunk):
                # Asking for input gradients here keeps captum from warning that it had to.
                xb = x[i:i + chunk].to(self.device).requires_grad_(True)
                bb = None
                if base is not None:
                    bb = (base if self.baseline_distribution else base[i:i + chunk]).to(self.device)
                a = self._attribute_batch(xb, bb)
                parts.append(a.detach().float().cpu())
                bar.update(xb.shape[0])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        attributions = torch.cat(parts).numpy()
        if attributions.shape != tuple(x.shape):
            raise RuntimeError(f"{self.name} returned shape {attributions.shape} for inputs {tuple(x.shape)}")
        outputs = self.target_values(x)
        baseline_outputs = delta = None
        if base is not None:
            base_values = self.target_values(base)
            baseline_outputs = (np.full(x.shape[0], base_values.mean()) if self.baseline_distribution
                                else base_values)
            if self.promises_completeness:
                delta = attributions.reshape(x.shape[0], -1).astype(np.float64).sum(1) - (outputs - baseline_outputs)
        return Attribution(
            attributions=attributions, method=self.name, target=self.target.describe(), options=self.options(),
            outputs=outputs, baseline_outputs=baseline_outputs, delta=delta, citation=self.citation,
            device=str(self.device), seconds=seconds, model_report=self.model_report,
        )


@METHODS.register("saliency",
                  citation="Simonyan, Vedaldi & Zisserman (2014). Deep inside convolutional networks. ICLR workshop.")
class Saliency(AttributionMethod):
    """|d target / d x| (captum ``Saliency``; ``abs=False`` keeps the sign)."""

    uses_baselines = False

    def __init__(self, model, target, *, abs: bool = True, **kw):
        super().__init__(model, target, **kw)
        self.abs = bool(abs)

    def options(self):
        return {**super().options(), "abs": self.abs}

    def _make_explainer(self):
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(self.forward)

    def _attribute_batch(self, x, baselines):
        return self.explainer.attribute(x, target=0, abs=self.abs)


@METHODS.register("smoothgrad",
                  citation="Smilkov et al. (2017). SmoothGrad: removing noise by adding noise. arXiv:1706.03825.")
class SmoothGrad(Saliency):
    """Saliency averaged over Gaussian-noised copies of the input (captum ``NoiseTunnel``)."""

    config_section = "smoothgrad"

    @classmethod
    def options_from_config(cls, cfg):
        return {**super().options_from_config(cfg), "nt_samples": cfg.smoothgrad.nt_samples,
                "stdevs": cfg.smoothgrad.stdevs}

    def __init__(self, model, target, *, nt_samples: int = 16, stdevs: float = 0.15, nt_type: str = "smoothgrad",
                 abs: bool = True, **kw):
        super().__init__(model, target, abs=abs, **kw)
        if int(nt_samples) < 1:
            raise ValueError(f"nt_samples must be >= 1, got {nt_samples}")
        self.nt_samples, self.stdevs, self.nt_type = int(nt_samples), float(stdevs), nt_type

    def options(self):
        return {**super().options(), "nt_samples": self.nt_samples, "stdevs": self.stdevs, "nt_type": self.nt_type}

    def _make_explainer(self):
        from captum.attr import NoiseTunnel

        return NoiseTunnel(super()._make_explainer())

    def _images_per_chunk(self):
        return max(1, self.internal_batch_size // self.nt_samples)

    def _attribute_batch(self, x, baselines):
        return self.explainer.attribute(x, nt_type=self.nt_type, nt_samples=self.nt_samples, stdevs=self.stdevs,
                                        nt_samples_batch_size=self.nt_samples, target=0, abs=self.abs)


@METHODS.register("integrated_gradients",
                  citation="Sundararajan, Taly & Yan (2017). Axiomatic attribution for deep networks. ICML.")
class IntegratedGradients(AttributionMethod):
    """Path integral of gradients from a baseline (captum ``IntegratedGradients``), optionally in a NoiseTunnel.

    ``integration``: captum's quadrature rule (its ``method``): 'gausslegendre' or 'riemann_left/right/middle/
    trapezoid'.
    ``noise_tunnel``: None, or a dict ``{"nt_type": "smoothgrad", "nt_samples": 8, "stdevs": 0.1}`` (SmoothGrad
    over IG; completeness then holds only on average over the noise).
    """

    aliases = ("ig",)
    config_section = "ig"
    promises_completeness = True

    @classmethod
    def options_from_config(cls, cfg):
        ig = cfg.ig
        return {**super().options_from_config(cfg), "n_steps": ig.n_steps, "integration": ig.integration,
                "noise_tunnel": to_dict(ig.noise_tunnel) if ig.noise_tunnel is not None else None}

    def __init__(self, model, target, *, n_steps: int = 50, integration: str = "gausslegendre",
                 noise_tunnel: dict | None = None, **kw):
        super().__init__(model, target, **kw)
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        # captum calls the quadrature rule `method`; renamed so it cannot clash with attribute(..., method)
        self.n_steps, self.integration = int(n_steps), integration
        self.noise_tunnel = dict(noise_tunnel) if noise_tunnel else None
        if self.noise_tunnel:
            unknown = set(self.noise_tunnel) - {"nt_type", "nt_samples", "stdevs"}
            if unknown:
                raise ValueError(f"noise_tunnel keys {sorted(unknown)} unknown; use nt_type, nt_samples, stdevs")
            self.noise_tunnel.setdefault("nt_type", "smoothgrad")
            self.noise_tunnel.setdefault("nt_samples", 8)
            self.noise_tunnel.setdefault("stdevs", 0.1)
            self.promises_completeness = False

    def options(self):
        return {**super().options(), "n_steps": self.n_steps, "integration": self.integration,
                "noise_tunnel": self.noise_tunnel}

    def _make_explainer(self):
        from captum.attr import IntegratedGradients as CaptumIG, NoiseTunnel

        ig = CaptumIG(self.forward)
        return NoiseTunnel(ig) if self.noise_tunnel else ig

    def _images_per_chunk(self):
        # captum splits the n_steps x images rows into internal batches itself; NoiseTunnel multiplies the images.
        return max(1, self.internal_batch_size // (self.noise_tunnel["nt_samples"] if self.noise_tunnel else 1))

    def _attribute_batch(self, x, baselines):
        kw = dict(baselines=baselines, target=0, n_steps=self.n_steps, method=self.integration,
                  internal_batch_size=self.internal_batch_size)
        if self.noise_tunnel:
            nt = self.noise_tunnel
            return self.explainer.attribute(x, nt_type=nt["nt_type"], nt_samples=int(nt["nt_samples"]),
                                            stdevs=float(nt["stdevs"]), nt_samples_batch_size=1, **kw)
        return self.explainer.attribute(x, **kw)


LUNDBERG_LEE_2017 = "Lundberg & Lee (2017). A unified approach to interpreting model predictions. NeurIPS."


@METHODS.register("gradient_shap", citation=LUNDBERG_LEE_2017)
class GradientShap(AttributionMethod):
    """Expected gradients x (input - baseline) over a baseline distribution (captum ``GradientShap``)."""

    aliases = ("gradshap",)
    config_section = "shap"
    baseline_distribution = True
    promises_completeness = True  # in expectation; the per-image gap shrinks with n_samples

    @classmethod
    def options_from_config(cls, cfg):
        return {**super().options_from_config(cfg), "n_samples": cfg.shap.n_samples, "seed": cfg.shap.seed}

    def __init__(self, model, target, *, n_samples: int = 50, stdevs: float = 0.0, seed: int | None = 0, **kw):
        super().__init__(model, target, **kw)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples, self.stdevs, self.seed = int(n_samples), float(stdevs), seed

    def options(self):
        return {**super().options(), "n_samples": self.n_samples, "stdevs": self.stdevs, "seed": self.seed}

    def _make_explainer(self):
        from captum.attr import GradientShap as CaptumGradientShap

        return CaptumGradientShap(self.forward)

    def _images_per_chunk(self):
        # captum expands every image n_samples times in one forward pass.
        return max(1, self.internal_batch_size // self.n_samples)

    def _attribute_batch(self, x, baselines):
        def run():
            return self.explainer.attribute(x, baselines=baselines, n_samples=self.n_samples, stdevs=self.stdevs,
                                            target=0)

        if self.seed is None:
            return run()
        # captum draws baselines with numpy's global RNG and the path points with torch's: seed both, and put
        # both back afterwards so the caller's random streams are untouched.
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                np.random.seed(self.seed)
                torch.manual_seed(self.seed)
                return run()
        finally:
            np.random.set_state(np_state)


@METHODS.register("deeplift", citation="Shrikumar, Greenside & Kundaje (2017). Learning important features through "
                                       "propagating activation differences. ICML.")
class DeepLift(AttributionMethod):
    """DeepLIFT rescale rule (captum ``DeepLift``); needs one nn.Module per nonlinearity call."""

    module_rules = True
    promises_completeness = True

    def _make_explainer(self):
        from captum.attr import DeepLift as CaptumDeepLift

        return CaptumDeepLift(self.forward)

    def _images_per_chunk(self):
        return max(1, self.internal_batch_size // 2)  # inputs and baselines run as one batch

    def _attribute_batch(self, x, baselines):
        with warnings.catch_warnings():
            # captum warns that it sets hooks on modules; our safe copy is private, so this is expected.
            warnings.filterwarnings("ignore", message=".*[Ss]etting forward, backward hooks.*")
            return self.explainer.attribute(x, baselines=baselines, target=0)


@METHODS.register("shap_gradient", citation=(
    LUNDBERG_LEE_2017, "Erion et al. (2021). Improving performance of deep learning models with axiomatic "
                       "attribution priors and expected gradients. Nat. Mach. Intell."))
class ShapGradient(AttributionMethod):
    """shap ``GradientExplainer`` (expected gradients) over a background distribution."""

    aliases = ("shap_gradient_explainer",)
    config_section = "shap"
    baseline_distribution = True
    promises_completeness = True  # in expectation over nsamples

    @classmethod
    def options_from_config(cls, cfg):
        return {**super().options_from_config(cfg), "n_samples": cfg.shap.n_samples, "seed": cfg.shap.seed}

    def __init__(self, model, target, *, n_samples: int = 200, local_smoothing: float = 0.0, seed: int | None = 0,
                 **kw):
        super().__init__(model, target, **kw)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples, self.local_smoothing, self.seed = int(n_samples), float(local_smoothing), seed
        self._background: torch.Tensor | None = None

    def options(self):
        return {**super().options(), "n_samples": self.n_samples, "local_smoothing": self.local_smoothing,
                "seed": self.seed}

    def _make_explainer(self):
        return None  # built per background in _attribute_batch (shap binds the background at construction)

    def _explainer_for(self, background: torch.Tensor):
        import shap

        if self.explainer is None or self._background is None or not torch.equal(self._background, background):
            self._background = background
            self.explainer = shap.GradientExplainer(self.forward, background, batch_size=self.internal_batch_size,
                                                    local_smoothing=self.local_smoothing)
        return self.explainer

    def _images_per_chunk(self):
        return 1 if self.n_samples >= self.internal_batch_size else max(1, self.internal_batch_size // self.n_samples)

    def _attribute_batch(self, x, baselines):
        explainer = self._explainer_for(baselines)
        values = explainer.shap_values(x, nsamples=self.n_samples, rseed=self.seed)
        return _shap_single_output(values, x)


@METHODS.register("shap_deep", citation=LUNDBERG_LEE_2017)
class ShapDeep(AttributionMethod):
    """shap ``DeepExplainer`` (DeepLIFT averaged over a background); needs one nn.Module per nonlinearity call."""

    aliases = ("shap_deep_explainer",)
    baseline_distribution = True
    module_rules = True
    promises_completeness = True

    def __init__(self, model, target, **kw):
        super().__init__(model, target, **kw)
        self._background: torch.Tensor | None = None

    def _make_explainer(self):
        return None

    def _explainer_for(self, background: torch.Tensor):
        import shap

        if background.shape[0] * 2 > 4 * self.internal_batch_size:
            warnings.warn(f"shap DeepExplainer runs 2 x {background.shape[0]} background rows per image; "
                          "pass fewer background images to bound memory")
        if self.explainer is None or self._background is None or not torch.equal(self._background, background):
            self._background = background
            self.explainer = shap.DeepExplainer(self.forward, background)
        return self.explainer

    def _images_per_chunk(self):
        return 1  # shap tiles each image over the whole background itself

    def _attribute_batch(self, x, baselines):
        explainer = self._explainer_for(baselines)
        with warnings.catch_warnings():
            # TargetForward and the containers are not leaves, so only genuinely unknown leaves would warn.
            warnings.filterwarnings("ignore", message="unrecognized nn.Module: (TargetForward|Identity)")
            # Additivity is measured (Attribution.delta) and reported instead of asserted.
            values = explainer.shap_values(x, check_additivity=False)
        return _shap_single_output(values, x)


def _shap_single_output(values: Any, x: torch.Tensor) -> torch.Tensor:
    """shap returns (N, ..., 1) or a list with one array for a single-output model; return (N, C, H, W)."""
    if isinstance(values, list):
        values = values[0]
    values = np.asarray(values)
    if values.shape == tuple(x.shape) + (1,):
        values = values[..., 0]
    return torch.from_numpy(values.astype(np.float32))


def method_names() -> list[str]:
    """The registered attribution methods (built-in and from plugins)."""
    return METHODS.names()


def method_class(method: str | type[AttributionMethod]) -> type[AttributionMethod]:
    """The class of a registered method name (or alias); a class passes through."""
    if isinstance(method, type) and issubclass(method, AttributionMethod):
        return method
    return METHODS.get(method)


def attribute(model: nn.Module, inputs: Any, target: Any, method: str = "integrated_gradients", *,
              baselines: Any = None, progress: bool = True, **options: Any) -> Attribution:
    """Attributions of ``target`` (class index, Target or dict) for ``inputs`` (N, C, H, W) with ``method``.

    ``options`` go to the method class (e.g. ``n_steps``, ``internal_batch_size``, ``noise_tunnel`` for IG;
    ``n_samples`` for the SHAP family; ``device``). Baselines: None -> zeros (in the model's input space, i.e.
    the mean image after normalisation); for the SHAP family a (B, C, H, W) background distribution.
    """
    cls = method_class(method)
    allowed = cls.accepted_options()
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"{cls.name} does not take option(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    return cls(model, target, **options).attribute(inputs, baselines, progress=progress)
