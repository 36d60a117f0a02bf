"""Attribution methods: thin wrappers around captum and shap, one class per method, each in the ``METHODS`` registry.

Each class keeps the library's explainer object visible (``.explainer``) and adds what a study needs around it:
a target (class, unit, patch, neural site; see ``targets``), the model itself or a safe copy when it needs one
(``safety.prepare_model``), input and baseline validation (in the model's dtype), batching that bounds memory, the
device, a progress bar, and per-image completeness numbers (sum of attributions vs f(x) - E f(baseline)) for the
methods that promise completeness. f(x) and f(baseline) are read from the library's own forward pass where it ran
on them (saliency, DeepLift, shap's background); elsewhere they take one forward pass of their own, which
``completeness=False`` skips.

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

import contextlib
import functools
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.attribution.safety import (
    PreparedModel, check_module_rules_once, discard_copy, model_dtype, prepare_model,
)
from workbench.attribution.targets import TargetForward, as_target
from workbench.config import ConfigError, parse, to_dict
from workbench.logs import progress_disabled
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
    completeness gap (None for methods that promise no completeness, e.g. saliency). With
    ``attribute(..., completeness=False)`` they are filled only where the library's own forward pass gave them
    (None elsewhere).
    """

    attributions: np.ndarray
    method: str
    target: dict[str, Any]
    options: dict[str, Any]
    outputs: np.ndarray | None
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
            "outputs": None if self.outputs is None else self.outputs.tolist(),
            "completeness_relative_error": None if rel is None else rel.tolist(),
            "model_report": self.model_report,
        }


# -- validation ----------------------------------------------------------------------------------------------------
def _first_conv_in_channels(model: nn.Module) -> tuple[str, int] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name, m.in_channels
    return None


def _all_finite(t: torch.Tensor) -> bool:
    # one reduction: a finite sum means finite entries (an overflowing sum of finite entries gets the full check)
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def prepare_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Inputs as an (N, C, H, W) tensor in the model's parameter dtype (float32, float64, bfloat16...), with
    errors that say what the model expects."""
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
    inputs = inputs.detach().to(model_dtype(model))
    if not _all_finite(inputs):
        raise ValueError("inputs contain NaN or inf")
    return inputs


def prepare_baselines(baselines: Any, inputs: torch.Tensor, *, distribution: bool) -> torch.Tensor:
    """Baselines broadcast to the inputs, in the inputs' dtype.

    ``distribution`` False (IG, DeepLift): a scalar, (C, H, W), (1, C, H, W) or (N, C, H, W) -> (N, C, H, W).
    ``distribution`` True (SHAP family): a scalar, (C, H, W) or (B, C, H, W) background samples -> (B, C, H, W).
    """
    shape = tuple(inputs.shape[1:])
    if baselines is None:
        baselines = 0.0
    if isinstance(baselines, (int, float)):
        base = torch.full((1, *shape), float(baselines), dtype=inputs.dtype)
    else:
        base = torch.as_tensor(np.asarray(baselines) if not isinstance(baselines, torch.Tensor) else baselines)
        base = base.detach().to(device="cpu", dtype=inputs.dtype)
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
        if not _all_finite(base):
            raise ValueError("baselines contain NaN or inf")
    if not distribution:
        base = base.expand(inputs.shape[0], *shape)
    return base.contiguous()


@functools.lru_cache(maxsize=None)
def _keyword_options(cls: type) -> frozenset[str]:
    import inspect

    allowed: set[str] = set()
    for klass in cls.__mro__:
        if klass is not object:
            allowed |= {p for p, v in inspect.signature(klass.__init__).parameters.items()
                        if v.kind == v.KEYWORD_ONLY}
    return frozenset(allowed)


class _NoBar:
    """A progress bar that shows nothing (tqdm costs a little even when disabled)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


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
    # Where the library's own forward pass gives f(x): None (a separate pass), 'inputs' or 'inputs_and_baselines'
    # (see _read_outputs).
    outputs_from_forward: str | None = None
    # Run on a private copy even when the model is safe as it is (for libraries that mutate the model they get).
    private_copy = False
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
        return set(_keyword_options(cls))

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
        self._prepared: PreparedModel = prepare_model(model, self.device, private=self.private_copy)
        self._surveyed = True   # _prepared reflects the caller's model as it is now
        self.forward: TargetForward | None = None
        self.explainer: Any = None

    @property
    def model(self) -> nn.Module:
        """The module attribution runs on: the caller's model itself, or its safe copy when it needs one."""
        return self._prepared.model

    @property
    def model_report(self) -> dict[str, Any]:
        """Whether a copy was used and why; in-place flags switched off and reused places cloned in it."""
        return self._prepared.report

    def _resurvey(self) -> None:
        """Before a second call: survey the caller's model again (a cached copy gets its current weights);
        a model whose structure changed gets its explainer rebuilt."""
        if not self._surveyed:
            prepared = prepare_model(self.source_model, self.device, private=self.private_copy)
            if prepared.model is not self.model or prepared.facts is not self._prepared.facts:
                self.forward = self.explainer = None
            self._prepared = prepared
        self._surveyed = False

    # options recorded in the metadata
    def options(self) -> dict[str, Any]:
        return {"internal_batch_size": self.internal_batch_size}

    def _build(self, example: torch.Tensor) -> None:
        """Bind the target to the model (validates layer and indices) and build the wrapped explainer."""
        if self.forward is not None:
            return
        self.forward = self._target_forward(example)
        if self.module_rules:
            check_module_rules_once(self._prepared, example[:1].to(self.device), self.name)
        self.explainer = self._make_explainer()

    def _target_forward(self, example: torch.Tensor) -> TargetForward:
        """The target bound to the model; the layer's output shape is probed once per model structure and input
        shape (the target's own indices are validated on every call)."""
        key = ("unit shape", self.target.layer, tuple(example.shape[1:]), example.dtype)
        known = self._prepared.facts.get(key)
        if known is None:
            forward = TargetForward(self.model, self.target, example[:1].to(self.device))
            self._prepared.facts[key] = (forward.unit_shape, forward.weight.dtype)
            return forward
        unit_shape, dtype = known
        return TargetForward(self.model, self.target, unit_shape=unit_shape, dtype=dtype, device=self.device)

    def _make_explainer(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _random_streams(self):
        """Random state around one call's chunks (a seeded method seeds here, once per call)."""
        yield

    def _library_dtype(self, dtype: torch.dtype):
        """torch's default dtype during the library call. captum's NoiseTunnel (SmoothGrad, GradientShap) makes
        its noise from Python floats in the default dtype, which would turn float16 / bfloat16 inputs into
        float32 ones the model rejects: for those it is the inputs' dtype. float32 and float64 run unchanged, so
        they equal plain captum calls (float32 noise added to float64 inputs stays float64)."""
        return _default_dtype(dtype) if dtype in (torch.float16, torch.bfloat16) else contextlib.nullcontext()

    def _images_per_chunk(self) -> int:
        """Images per outer batch so that one internal forward holds at most ``internal_batch_size`` rows."""
        return self.internal_batch_size

    def _attribute_batch(self, x: torch.Tensor, baselines: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _read_outputs(self, recorded: list[torch.Tensor] | None,
                      n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """f(x) and f(baseline) of one chunk from the library's own forward pass (``outputs_from_forward``):
        'inputs' when that pass ran on the inputs themselves (saliency), 'inputs_and_baselines' when it ran on
        inputs and baselines stacked (DeepLift). (None, None) when the pass was not of that form."""
        if not recorded or len(recorded) != 1:
            return None, None
        out = recorded[0][:, 0]
        if self.outputs_from_forward == "inputs" and out.shape[0] == n:
            return out, None
        if self.outputs_from_forward == "inputs_and_baselines" and out.shape[0] == 2 * n:
            return out[:n], out[n:]
        return None, None

    @torch.no_grad()
    def target_values(self, x: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """f(x) for every image (the target the maps explain), in batches."""
        x = prepare_inputs(self.model, x)
        self._build(x[:1])
        return self._forward_values(x, batch_size)

    @torch.no_grad()
    def _forward_values(self, x: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.internal_batch_size
        out = [self.forward(x[i:i + batch_size].to(self.device))[:, 0].double().cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out).numpy()

    def attribute(self, inputs: Any, baselines: Any = None, *, progress: bool = True,
                  completeness: bool = True) -> Attribution:
        """Attributions of the target for ``inputs`` (N, C, H, W), chunk by chunk.

        ``completeness``: also compute f(x), f(baseline) and the completeness gap where the library's own forward
        passes do not give them (one forward pass of the inputs and baselines: IG, GradientShap, SmoothGrad, the
        shap inputs); False skips that pass, returning only what the library's passes gave (saliency's f(x),
        DeepLift's f(x) and f(baseline), shap's f(background)), as fast as a plain library call.
        """
        self._resurvey()
        x = prepare_inputs(self.model, inputs)
        base = prepare_baselines(baselines, x, distribution=self.baseline_distribution) if self.uses_baselines else None
        try:
            self._build(x[:1])
        except RuntimeError as e:
            # A shape mismatch deep inside the model: say it in terms of the inputs.
            raise ValueError(f"the model cannot run on inputs of shape {tuple(x.shape)}: {e}") from e
        t0 = time.perf_counter()
        try:
            with self._random_streams():
                attributions, outputs, base_values = self._attribute_chunks(x, base, progress)
        except BaseException:
            if self._prepared.copied:   # the library may have left hooks on the copy: it is not used again
                discard_copy(self.source_model, self.device)
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if attributions.shape != tuple(x.shape):
            raise RuntimeError(f"{self.name} returned shape {attributions.shape} for inputs {tuple(x.shape)}")
        outputs, baseline_outputs = self._target_outputs(x, base, outputs, base_values, run_forward=completeness)
        delta = None
        if outputs is not None and baseline_outputs is not None and self.promises_completeness:
            delta = attributions.reshape(x.shape[0], -1).astype(np.float64).sum(1) - (outputs - baseline_outputs)
        return Attribution(
            attributions=attributions, method=self.name, target=self.target.describe(), options=self.options(),
            outputs=outputs, baseline_outputs=baseline_outputs, delta=delta, citation=self.citation,
            device=str(self.device), seconds=seconds, model_report=self.model_report,
        )

    def _attribute_chunks(self, x: torch.Tensor, base: torch.Tensor | None,
                          progress: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The library call, chunk by chunk: attributions (float64 for a float64 model, else float32), and the
        f(x) and f(baseline) its own forward passes gave (None where they did not give them for every chunk)."""
        chunk = max(1, self._images_per_chunk())
        parts, outs, base_outs = [], [], []
        # no tqdm object at all when progress is off (its bookkeeping shows in small calls); on: terminal only
        with (tqdm(total=x.shape[0], desc=f"{self.name}: {self.target.label}", unit="img", leave=False,
                   disable=progress_disabled(progress)) if progress else _NoBar()) as bar:
            for i in range(0, x.shape[0], chunk):
                # Asking for input gradients here keeps captum from warning that it had to.
                xb = x[i:i + chunk].to(self.device).requires_grad_(True)
                bb = None
                if base is not None:
                    bb = (base if self.baseline_distribution else base[i:i + chunk]).to(self.device)
                self.forward.recorded = [] if self.outputs_from_forward else None
                try:
                    with self._library_dtype(x.dtype):
                        a = self._attribute_batch(xb, bb)
                finally:
                    recorded, self.forward.recorded = self.forward.recorded, None
                parts.append(a.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32).cpu())
                fx, fb = self._read_outputs(recorded, xb.shape[0])
                outs.append(fx)
                base_outs.append(fb)
                bar.update(xb.shape[0])

        def joined(values: list[torch.Tensor | None]) -> np.ndarray | None:
            if any(v is None for v in values):
                return None
            return torch.cat([v.detach().double().cpu() for v in values]).numpy()

        # a distribution of baselines is the same for every chunk: its values once
        return torch.cat(parts).numpy(), joined(outs), joined(base_outs[:1] if self.baseline_distribution
                                                              else base_outs)

    def _target_outputs(self, x: torch.Tensor, base: torch.Tensor | None, outputs: np.ndarray | None,
                        base_values: np.ndarray | None, *,
                        run_forward: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """f(x) per image and f(baseline) per image (the mean over a distribution): one forward pass (when
        ``run_forward``) for what the library's own passes did not give; a baseline shared by all images runs
        once."""
        rows: list[torch.Tensor] = []
        if outputs is None and run_forward:
            rows.append(x)
        shared = False
        if base is not None and base_values is None and run_forward:
            shared = not self.baseline_distribution and bool((base == base[:1]).all())
            rows.append(base[:1] if shared else base)
        if rows:
            values = self._forward_values(torch.cat(rows) if len(rows) > 1 else rows[0])
            if outputs is None:
                outputs, values = values[:x.shape[0]], values[x.shape[0]:]
            if base is not None and base_values is None:
                base_values = np.full(base.shape[0], values[0]) if shared else values
        if base is None or base_values is None:
            return outputs, None
        return outputs, (np.full(x.shape[0], base_values.mean()) if self.baseline_distribution else base_values)


@METHODS.register("saliency",
                  citation="Simonyan, Vedaldi & Zisserman (2014). Deep inside convolutional networks. ICLR workshop.")
class Saliency(AttributionMethod):
    """|d target / d x| (captum ``Saliency``; ``abs=False`` keeps the sign)."""

    uses_baselines = False
    outputs_from_forward = "inputs"   # captum's one forward pass runs on the inputs: f(x) comes free

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
    outputs_from_forward = None   # the forward passes run on noisy inputs

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

    @contextmanager
    def _random_streams(self):
        """Seeded once per call, so the chunks draw one stream (independent draws for every image, and the
        draws of one plain captum call over the same images when they fit in one chunk). captum draws baselines
        with numpy's global RNG and the path points with torch's: seed both, and put both back afterwards so the
        caller's random streams are untouched."""
        if self.seed is None:
            yield
            return
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                np.random.seed(self.seed)
                torch.manual_seed(self.seed)
                yield
        finally:
            np.random.set_state(np_state)

    def _attribute_batch(self, x, baselines):
        return self.explainer.attribute(x, baselines=baselines, n_samples=self.n_samples, stdevs=self.stdevs,
                                        target=0)


@METHODS.register("deeplift", citation="Shrikumar, Greenside & Kundaje (2017). Learning important features through "
                                       "propagating activation differences. ICML.")
class DeepLift(AttributionMethod):
    """DeepLIFT rescale rule (captum ``DeepLift``); needs one nn.Module per nonlinearity call."""

    module_rules = True
    promises_completeness = True
    outputs_from_forward = "inputs_and_baselines"   # captum runs inputs and baselines stacked in one pass

    def _make_explainer(self):
        from captum.attr import DeepLift as CaptumDeepLift

        return CaptumDeepLift(self.forward)

    def _images_per_chunk(self):
        return max(1, self.internal_batch_size // 2)  # inputs and baselines run as one batch

    def _attribute_batch(self, x, baselines):
        with warnings.catch_warnings():
            # captum warns that it sets hooks on modules; it removes them afterwards, so this is expected.
            warnings.filterwarnings("ignore", message=".*[Ss]etting forward, backward hooks.*")
            return self.explainer.attribute(x, baselines=baselines, target=0)


SHAP_GRADIENT_BATCH = 50  # shap.GradientExplainer's default batch_size


@METHODS.register("shap_gradient", citation=(
    LUNDBERG_LEE_2017, "Erion et al. (2021). Improving performance of deep learning models with axiomatic "
                       "attribution priors and expected gradients. Nat. Mach. Intell."))
class ShapGradient(AttributionMethod):
    """shap ``GradientExplainer`` (expected gradients) over a background distribution."""

    aliases = ("shap_gradient_explainer",)
    config_section = "shap"
    baseline_distribution = True
    promises_completeness = True  # in expectation over nsamples
    private_copy = True   # shap calls zero_grad on the model it is given

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
        self._background_outputs: torch.Tensor | None = None

    def options(self):
        return {**super().options(), "n_samples": self.n_samples, "local_smoothing": self.local_smoothing,
                "seed": self.seed}

    def _make_explainer(self):
        return None  # built per background in _attribute_batch (shap binds the background at construction)

    def _explainer_for(self, background: torch.Tensor):
        import shap

        if self.explainer is None or self._background is None or not torch.equal(self._background, background):
            self._background = background
            # shap's own batch (50 rows) unless internal_batch_size asks for fewer: on CPU, 128-row gradient
            # calls ran 10-35% slower than shap's 50 at the same answer (benchmarks/bench_attribution.py)
            batch = min(self.internal_batch_size, SHAP_GRADIENT_BATCH)
            self.explainer, self._background_outputs = _built_recording(
                self.forward, lambda: shap.GradientExplainer(self.forward, background, batch_size=batch,
                                                             local_smoothing=self.local_smoothing))
        return self.explainer

    def _images_per_chunk(self):
        # shap loops over the images itself, n_samples rows per image in gradient calls of at most batch_size
        # rows: one call over all images bounds memory and draws the samples a plain shap call draws with the
        # same rseed (a call per chunk would restart the random stream at every chunk).
        return _ALL_IMAGES

    def _read_outputs(self, recorded, n):
        return None, self._background_outputs   # shap ran the background when the explainer was built

    def _library_dtype(self, dtype):
        return _shap_dtype(dtype, self.name)

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
    private_copy = True   # shap calls zero_grad and sets attributes on the modules of the model it is given

    def __init__(self, model, target, **kw):
        super().__init__(model, target, **kw)
        self._background: torch.Tensor | None = None
        self._background_outputs: torch.Tensor | None = None

    def _make_explainer(self):
        return None

    def _explainer_for(self, background: torch.Tensor):
        import shap

        if background.shape[0] * 2 > 4 * self.internal_batch_size:
            warnings.warn(f"shap DeepExplainer runs 2 x {background.shape[0]} background rows per image; "
                          "pass fewer background images to bound memory")
        if self.explainer is None or self._background is None or not torch.equal(self._background, background):
            self._background = background
            self.explainer, self._background_outputs = _built_recording(
                self.forward, lambda: shap.DeepExplainer(self.forward, background))
        return self.explainer

    def _images_per_chunk(self):
        # shap tiles each image over the whole background itself, image by image: one call runs all images
        # (as a plain shap call does) with the per-image memory of one.
        return _ALL_IMAGES

    def _read_outputs(self, recorded, n):
        return None, self._background_outputs   # shap ran the background when the explainer was built

    def _library_dtype(self, dtype):
        return _shap_dtype(dtype, self.name)

    def _attribute_batch(self, x, baselines):
        explainer = self._explainer_for(baselines)
        own = {name for name, _ in self.model.named_parameters(remove_duplicate=False)}
        try:
            with warnings.catch_warnings():
                # TargetForward and the containers are not leaves, so only genuinely unknown leaves would warn.
                warnings.filterwarnings("ignore", message="unrecognized nn.Module: (TargetForward|Identity)")
                # Additivity is measured (Attribution.delta) and reported instead of asserted.
                values = explainer.shap_values(x, check_additivity=False)
        finally:
            _drop_added_parameters(self.model, own)
        return _shap_single_output(values, x)


_ALL_IMAGES = 2 ** 62   # _images_per_chunk of a method whose library loops over the images itself


def _shap_single_output(values: Any, x: torch.Tensor) -> torch.Tensor:
    """shap returns (N, ..., 1) or a list with one array for a single-output model; return (N, C, H, W)."""
    if isinstance(values, list):
        values = values[0]
    values = np.asarray(values)
    if values.shape == tuple(x.shape) + (1,):
        values = values[..., 0]
    return torch.from_numpy(values.astype(np.float64 if x.dtype == torch.float64 else np.float32))


def _drop_added_parameters(model: nn.Module, own: set[str]) -> None:
    """Remove parameters a library added to the model (shap's DeepExplainer stores each nonlinearity's input and
    output as Parameters ``x`` and ``y``, and removes them only from modules directly under a container): they
    would keep the background's activations alive and change the model's parameter list."""
    for name, _ in list(model.named_parameters(remove_duplicate=False)):
        if name not in own:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            module._parameters.pop(attr, None)


def _built_recording(forward: TargetForward, build: Any) -> tuple[Any, torch.Tensor | None]:
    """``build()`` (a shap explainer, which runs the model on its background once) and the target values of that
    forward pass: f(background) without a pass of our own."""
    forward.recorded = []
    try:
        explainer = build()
    finally:
        recorded, forward.recorded = forward.recorded, None
    return explainer, (recorded[0][:, 0] if len(recorded) == 1 else None)


def _shap_dtype(dtype: torch.dtype, method: str):
    """torch's default dtype set to the inputs' during a shap call (GradientExplainer allocates its sample
    tensors in it), after refusing bfloat16: shap turns gradients into numpy arrays, and numpy has no bfloat16."""
    if dtype == torch.bfloat16:
        raise ValueError(f"{method} (shap) cannot explain a bfloat16 model: shap converts gradients to numpy, which "
                         "has no bfloat16. Explain a float32 copy (copy.deepcopy(model).float()) or use a captum "
                         "method (saliency, integrated_gradients, gradient_shap, deeplift)")
    return _default_dtype(dtype)


@contextmanager
def _default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` for the duration (shap allocates its sample tensors with it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def method_names() -> list[str]:
    """The registered attribution methods (built-in and from plugins)."""
    return METHODS.names()


def method_class(method: str | type[AttributionMethod]) -> type[AttributionMethod]:
    """The class of a registered method name (or alias); a class passes through."""
    if isinstance(method, type) and issubclass(method, AttributionMethod):
        return method
    return METHODS.get(method)


def attribute(model: nn.Module, inputs: Any, target: Any, method: str = "integrated_gradients", *,
              baselines: Any = None, progress: bool = True, completeness: bool = True,
              **options: Any) -> Attribution:
    """Attributions of ``target`` (class index, Target or dict) for ``inputs`` (N, C, H, W) with ``method``.

    ``options`` go to the method class (e.g. ``n_steps``, ``internal_batch_size``, ``noise_tunnel`` for IG;
    ``n_samples`` for the SHAP family; ``device``). Baselines: None -> zeros (in the model's input space, i.e.
    the mean image after normalisation); for the SHAP family a (B, C, H, W) background distribution.
    ``completeness`` False skips the forward pass of our own that f(x), f(baseline) and the completeness gap take
    for some methods (see ``AttributionMethod.attribute``). Inputs and baselines take the model's dtype.
    """
    cls = method_class(method)
    allowed = cls.accepted_options()
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"{cls.name} does not take option(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    return cls(model, target, **options).attribute(inputs, baselines, progress=progress, completeness=completeness)
