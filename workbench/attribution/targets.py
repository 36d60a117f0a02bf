"""What an attribution map explains: one scalar per image, computed from the model.

A target turns ``model(x)`` into a ``(N, 1)`` tensor: a class logit, a unit or channel of a named layer, the mean
activity of a patch of a cortical sheet, or a neural site (the fitted linear readout of one recorded neuroid). Every
reduction after the layer is linear (index, mean, weighted sum), so module-rule methods (DeepLift, shap
DeepExplainer) see it as plain gradient flow and their completeness properties carry over unchanged.

``TargetForward(model, target)`` is the ``nn.Module`` handed to captum and shap: it runs the model, grabs the named
layer's output with a forward hook and reduces it. The whole forward pass runs even when the layer is early:
stopping it half-way would skip hooks that captum and shap register on the remaining modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from workbench.models.hooks import repeated_call_error

__all__ = [
    "Target", "ClassTarget", "UnitTarget", "PatchTarget", "NeuralSiteTarget", "TargetForward", "as_target",
    "resolve_layer", "sheet_positions",
]


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called ``layer``; a KeyError lists the valid names when it does not exist."""
    modules = dict(model.named_modules(remove_duplicate=False))  # an alias is a valid name of its module
    if layer not in modules or layer == "":
        valid = [n for n in modules if n]
        raise KeyError(
            f"model {type(model).__name__} has no layer {layer!r}; valid layer names are: {', '.join(valid)}"
        )
    return modules[layer]


def sheet_positions(model: nn.Module, layer: str) -> np.ndarray:
    """Unit positions (n_units, 2) of ``model.cortical_sheets[layer]`` (flattened C, H, W order)."""
    sheets = getattr(model, "cortical_sheets", None)
    if sheets is None:
        raise ValueError(
            f"model {type(model).__name__} carries no cortical_sheets; pass positions= to PatchTarget, or use a "
            "model trained with a topography section (workbench.models.CorticalSheet)"
        )
    try:
        sheet = sheets[layer]
    except (KeyError, IndexError, TypeError):
        names = list(sheets.keys()) if hasattr(sheets, "keys") else []
        raise KeyError(f"no cortical sheet for layer {layer!r}; the model has sheets for: {names}") from None
    pos = getattr(sheet, "positions", None)
    if pos is None and isinstance(sheet, dict):
        pos = sheet.get("positions")
    if pos is None:
        raise ValueError(f"cortical sheet of layer {layer!r} has no positions")
    if isinstance(pos, torch.Tensor):
        pos = pos.detach().cpu().numpy()
    return np.asarray(pos, dtype=np.float64)


class Target:
    """Base class of targets; ``layer`` None means the model output."""

    kind: str = ""
    layer: str | None = None

    @property
    def label(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "layer": self.layer, "label": self.label}

    def weights(self, unit_shape: tuple[int, ...], model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) with target = flatten(layer output) @ w + b; validated against the layer's unit shape.

        Any floating dtype: ``TargetForward`` casts them to the dtype the model computes in."""
        raise NotImplementedError


def _flat_index(unit: int | Sequence[int], unit_shape: tuple[int, ...], layer: str | None) -> int:
    n = int(np.prod(unit_shape))
    if isinstance(unit, (int, np.integer)):
        if not 0 <= int(unit) < n:
            raise ValueError(f"unit {unit} is out of range for layer {layer!r} with {n} units (shape {unit_shape})")
        return int(unit)
    idx = tuple(int(u) for u in unit)
    if len(idx) != len(unit_shape) or any(not 0 <= i < s for i, s in zip(idx, unit_shape)):
        raise ValueError(f"unit {idx} does not index layer {layer!r} of unit shape {unit_shape}")
    return int(np.ravel_multi_index(idx, unit_shape))


@dataclass
class ClassTarget(Target):
    """The logit (pre-softmax output) of class ``index``."""

    index: int = 0

    def __post_init__(self):
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)):
            raise TypeError(f"class index must be an int, got {self.index!r}")

    kind = "class"

    @property
    def label(self) -> str:
        return f"class {self.index}"

    def describe(self):
        return {**super().describe(), "index": int(self.index)}

    def weights(self, unit_shape, model):
        n = int(np.prod(unit_shape))
        if len(unit_shape) != 1:
            raise ValueError(f"the model output must be (N, n_classes) for a class target, got unit shape {unit_shape}")
        if not 0 <= self.index < n:
            raise ValueError(f"class {self.index} is out of range: the model has {n} outputs (0..{n - 1})")
        w = torch.zeros(n, dtype=torch.float64)
        w[self.index] = 1.0
        return w, torch.zeros((), dtype=torch.float64)


@dataclass
class UnitTarget(Target):
    """One unit of ``layer`` (flat index in C,H,W order, or a (c, h, w) tuple), or the spatial mean of a channel."""

    layer: str = ""
    unit: int | tuple[int, ...] | None = None
    channel: int | None = None

    def __post_init__(self):
        if not self.layer:
            raise ValueError("UnitTarget needs the name of a layer (layer='conv3')")
        if (self.unit is None) == (self.channel is None):
            raise ValueError("UnitTarget takes exactly one of unit= (a unit) or channel= (a channel's mean)")

    kind = "unit"

    @property
    def label(self) -> str:
        what = f"channel {self.channel}" if self.channel is not None else f"unit {self.unit}"
        return f"{self.layer} {what}"

    def describe(self):
        unit = list(self.unit) if isinstance(self.unit, tuple) else self.unit
        return {**super().describe(), "unit": unit, "channel": self.channel}

    def weights(self, unit_shape, model):
        n = int(np.prod(unit_shape))
        w = torch.zeros(n, dtype=torch.float64)
        if self.unit is not None:
            w[_flat_index(self.unit, unit_shape, self.layer)] = 1.0
        else:
            c = int(self.channel)
            n_channels = unit_shape[0]
            if not 0 <= c < n_channels:
                raise ValueError(f"channel {c} is out of range for layer {self.layer!r} with {n_channels} channels")
            per_channel = n // n_channels
            w[c * per_channel:(c + 1) * per_channel] = 1.0 / per_channel
        return w, torch.zeros((), dtype=torch.float64)


def patch_layers(patches: Any, model_config: Mapping[str, Any]) -> list[str]:
    """The layers patches are placed on: ``patches.layers``, else the model's topography layers."""
    return list(patches.layers or (model_config.get("topography") or {}).get("layers") or [])


def patch_sheet_positions(model: nn.Module, layers: Sequence[str], skipped: dict[str, str]
                          ) -> dict[str, np.ndarray]:
    """``sheet_positions`` of each of ``layers`` (float64); a layer without a sheet is noted in ``skipped`` under
    ``patch:<layer>`` and left out."""
    out = {}
    for layer in layers:
        try:
            out[layer] = np.asarray(sheet_positions(model, layer), dtype=np.float64)
        except (KeyError, ValueError):
            skipped[f"patch:{layer}"] = f"the model has no cortical sheet for {layer!r}"
    return out


@dataclass
class PatchTarget(Target):
    """Mean activity of the units of ``layer`` within ``radius`` of ``centre`` on the cortical sheet.

    ``positions`` (n_units, 2) defaults to ``model.cortical_sheets[layer].positions`` (workbench.models.sheet).
    """

    layer: str = ""
    centre: tuple[float, float] = (0.0, 0.0)
    radius: float = 1.0
    positions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.layer:
            raise ValueError("PatchTarget needs the name of a layer with a cortical sheet")
        if len(self.centre) != 2:
            raise ValueError(f"centre must be an (x, y) position on the sheet, got {self.centre}")
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"radius must be a positive distance on the sheet, got {self.radius}")

    kind = "patch"

    @property
    def label(self) -> str:
        return f"{self.layer} patch ({self.centre[0]:.3g}, {self.centre[1]:.3g}) r={self.radius:.3g}"

    def describe(self):
        return {**super().describe(), "centre": [float(c) for c in self.centre], "radius": float(self.radius)}

    def mask(self, unit_shape, model) -> np.ndarray:
        pos = self.positions if self.positions is not None else sheet_positions(model, self.layer)
        pos = np.asarray(pos, dtype=np.float64)
        n = int(np.prod(unit_shape))
        if pos.shape != (n, 2):
            raise ValueError(
                f"positions of layer {self.layer!r} have shape {pos.shape}; expected ({n}, 2) for unit shape "
                f"{unit_shape} (flattened C, H, W order)"
            )
        inside = np.hypot(*(pos - np.asarray(self.centre, dtype=np.float64)).T) <= self.radius
        if not inside.any():
            lo, hi = pos.min(0), pos.max(0)
            raise ValueError(
                f"no unit of {self.layer!r} lies within {self.radius} of {tuple(self.centre)}; the sheet spans "
                f"x {lo[0]:.3g}..{hi[0]:.3g}, y {lo[1]:.3g}..{hi[1]:.3g}"
            )
        return inside

    def weights(self, unit_shape, model):
        inside = self.mask(unit_shape, model)
        w = torch.from_numpy(inside.astype(np.float64) / inside.sum())
        return w, torch.zeros((), dtype=torch.float64)


@dataclass
class NeuralSiteTarget(Target):
    """Predicted response of one neuroid: ``coef[neuroid] @ flatten(layer output) + intercept[neuroid]``.

    ``coef`` (n_neuroids, n_units) and ``intercept`` (n_neuroids,) are the fitted linear readout from the alignment
    stage. Optional ``feature_mean`` / ``feature_scale`` (n_units,) standardise the features first, when the readout
    was fitted on standardised features (target = coef @ ((f - mean) / scale) + intercept).
    """

    layer: str = ""
    coef: np.ndarray | None = field(default=None, repr=False)
    intercept: np.ndarray | None = field(default=None, repr=False)
    neuroid: int = 0
    neuroid_id: str | None = None
    feature_mean: np.ndarray | None = field(default=None, repr=False)
    feature_scale: np.ndarray | None = field(default=None, repr=False)
    source: str = ""

    def __post_init__(self):
        if not self.layer:
            raise ValueError("NeuralSiteTarget needs the layer the readout was fitted on")
        if self.coef is None:
            raise ValueError("NeuralSiteTarget needs coef (n_neuroids, n_units) of the fitted readout")
        self.coef = np.atleast_2d(np.asarray(self.coef, dtype=np.float64))
        n_neuroids = self.coef.shape[0]
        self.intercept = (np.zeros(n_neuroids) if self.intercept is None
                          else np.atleast_1d(np.asarray(self.intercept, dtype=np.float64)))
        if self.intercept.shape != (n_neuroids,):
            raise ValueError(f"intercept has shape {self.intercept.shape}; expected ({n_neuroids},) to match coef")
        if not 0 <= int(self.neuroid) < n_neuroids:
            raise ValueError(f"neuroid {self.neuroid} is out of range: the readout has {n_neuroids} neuroids")
        if not (np.isfinite(self.coef).all() and np.isfinite(self.intercept).all()):
            raise ValueError("the readout's coef or intercept contains NaN or inf")

    kind = "neural_site"

    @property
    def label(self) -> str:
        name = self.neuroid_id if self.neuroid_id is not None else f"#{self.neuroid}"
        return f"neuroid {name} via {self.layer}"

    def describe(self):
        return {**super().describe(), "neuroid": int(self.neuroid), "neuroid_id": self.neuroid_id,
                "source": self.source}

    @classmethod
    def from_npz(cls, path: str | Path, neuroid: int | str = 0, layer: str | None = None) -> "NeuralSiteTarget":
        """Load a readout saved as ``<layer>.npz`` with coef, intercept[, neuroid_ids, feature_mean/scale]."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no readout file {path}; run the align stage first (it writes cache/readouts)")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.keys()}
        return cls.from_arrays(arrays, neuroid, layer or path.stem, source=str(path))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], neuroid: int | str = 0, layer: str = "",
                    source: str = "") -> "NeuralSiteTarget":
        """A neuroid of a fitted readout given as arrays (``RunDir.load_readout(data_set, layer)``): coef,
        intercept[, neuroid_ids, feature_mean, feature_scale]. ``neuroid``: an index, or an id from neuroid_ids."""
        where = source or f"the readout of {layer!r}"
        if "coef" not in arrays:
            raise KeyError(f"{where} has no 'coef' array; found {list(arrays)}")
        ids = None
        for key in ("neuroid_ids", "neuroid_id"):
            if key in arrays:
                ids = [str(i) for i in arrays[key]]
        if isinstance(neuroid, str):
            if ids is None or neuroid not in ids:
                raise KeyError(f"neuroid {neuroid!r} not in {where}; ids are {ids[:10] if ids else 'absent'}")
            index = ids.index(neuroid)
        else:
            index = int(neuroid)
        return cls(layer=layer, coef=arrays["coef"], intercept=arrays.get("intercept"),
                   neuroid=index, neuroid_id=ids[index] if ids and index < len(ids) else None,
                   feature_mean=arrays.get("feature_mean"), feature_scale=arrays.get("feature_scale"),
                   source=source)

    def weights(self, unit_shape, model):
        n = int(np.prod(unit_shape))
        if self.coef.shape[1] != n:
            raise ValueError(
                f"readout coef has {self.coef.shape[1]} features but layer {self.layer!r} has {n} units "
                f"(shape {unit_shape}); was the readout fitted on projected features (extract.projection_dim)?"
            )
        w = self.coef[int(self.neuroid)].copy()
        b = float(self.intercept[int(self.neuroid)])
        # Standardisation folds into the linear map: coef @ ((f - m) / s) = (coef / s) @ f - coef @ (m / s).
        if self.feature_scale is not None:
            scale = np.asarray(self.feature_scale, dtype=np.float64).reshape(-1)
            if scale.shape != (n,) or np.any(scale == 0):
                raise ValueError(f"feature_scale must be ({n},) and non-zero")
            w = w / scale
        if self.feature_mean is not None:
            mean = np.asarray(self.feature_mean, dtype=np.float64).reshape(-1)
            if mean.shape != (n,):
                raise ValueError(f"feature_mean must be ({n},)")
            b = b - float(w @ mean)
        return torch.from_numpy(w.astype(np.float64)), torch.tensor(b, dtype=torch.float64)


def as_target(target: Any) -> Target:
    """An int is a class logit; a Target passes through; a dict names the kind (``{"kind": "unit", ...}``)."""
    if isinstance(target, Target):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return ClassTarget(index=int(target))
    if isinstance(target, dict):
        spec = dict(target)
        kind = spec.pop("kind", None)
        kinds = {"class": ClassTarget, "unit": UnitTarget, "patch": PatchTarget, "neural_site": NeuralSiteTarget}
        if kind not in kinds:
            raise ValueError(f"target kind {kind!r} is unknown; use one of {sorted(kinds)}")
        if "centre" in spec:
            spec["centre"] = tuple(spec["centre"])
        if "unit" in spec and isinstance(spec["unit"], list):
            spec["unit"] = tuple(spec["unit"])
        return kinds[kind](**spec)
    raise TypeError(
        f"target must be a class index (int), a workbench.attribution Target or a dict with 'kind'; got {target!r}"
    )


class TargetForward(nn.Module):
    """``x -> (N, 1)`` target values: the model, a hook on the named layer and a fixed linear reduction.

    The layer hook is registered for the duration of each forward pass only, so nothing stays attached to the
    model between calls. ``unit_shape`` (the layer's output shape per image) skips the probe forward pass on
    ``example`` when it is already known. While ``recorded`` is a list, each forward pass appends its (detached)
    output to it: methods whose library forward pass runs on the inputs themselves read f(x) from it.
    """

    def __init__(self, model: nn.Module, target: Target, example: torch.Tensor | None = None, *,
                 unit_shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        self.model = model
        self.target = target
        self._captured: list[torch.Tensor] = []
        self.recorded: list[torch.Tensor] | None = None
        # a tuple, not an attribute: an nn.Module attribute would register the layer a second time as our child
        self._layer = (resolve_layer(model, target.layer),) if target.layer is not None else ()
        if unit_shape is None:
            if example is None:
                raise ValueError("TargetForward needs an example input (or the layer's unit_shape, dtype, device)")
            with torch.no_grad():
                features = self._features(example[:1])
            unit_shape, dtype, device = tuple(features.shape[1:]), features.dtype, features.device
        self.unit_shape = tuple(unit_shape)
        w, b = target.weights(self.unit_shape, model)
        # the reduction in the features' dtype (float64, bfloat16... as the model computes)
        self.register_buffer("weight", w.to(device=device, dtype=dtype))
        self.register_buffer("bias", b.to(device=device, dtype=dtype))

    def _capture(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {self.target.layer!r} returns {type(output).__name__}, not a tensor")
        self._captured.append(output)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not self._layer:
            return self.model(x)
        self._captured.clear()
        handle = self._layer[0].register_forward_hook(self._capture)
        try:
            self.model(x)
        finally:
            handle.remove()
        if len(self._captured) != 1:
            n = len(self._captured)
            self._captured.clear()
            raise repeated_call_error(self.model, self.target.layer, n, "attribution target")
        return self._captured.pop()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The named layer's output (the model output for a class target), checked against the bound unit shape."""
        feats = self._features(x)
        if tuple(feats.shape[1:]) != self.unit_shape:
            where = f"layer {self.target.layer!r}" if self.target.layer is not None else "the model output"
            raise ValueError(
                f"{where} gives units of shape {tuple(feats.shape[1:])}, but the target was bound to shape "
                f"{self.unit_shape}: the model changed after it was first used for attribution; call "
                "workbench.attribution.safety.clear_model_cache() to forget what was learnt about it"
            )
        return feats

    def reduce(self, feats: torch.Tensor) -> torch.Tensor:
        """Layer output (N, *unit_shape) -> target values (N,): the fixed linear reduction."""
        return feats.flatten(1) @ self.weight + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reduce(self.features(x)).unsqueeze(1)
        if self.recorded is not None:
            self.recorded.append(out.detach())
        return out

    def remove(self) -> None:
        """Nothing to remove (the layer hook lives for one forward pass); kept for callers of earlier versions."""
        self._captured.clear()
