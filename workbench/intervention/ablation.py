"""Interventions on a trained network: silencing units and deleting connections, always reversibly.

Both interventions are context managers that leave the model exactly as they found it on exit, including after an
exception inside the ``with`` block:

    with ablate_units(model, "conv4", units, mode="zero"):       # forward hook on the layer's output
        logits = model(images)

    with ablate_connections(model, "conv4", mask):                 # chosen weights set to 0, restored on exit
        logits = model(images)

Unit indices follow the workbench convention: a layer's units are its output without the batch dimension,
flattened in (C, H, W) order, exactly like ``activation.reshape(n, -1)`` and ``Activations[layer]``.

``mode="zero"`` replaces the chosen units' outputs by 0 (silencing, the analogue of a muscimol or optogenetic
inactivation of a ReLU population); ``mode="mean"`` replaces them by their mean over a reference stimulus set (mean
ablation, which removes the information a unit carries but not its average drive to the next layer).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from workbench.models.hooks import layer_hooks

__all__ = [
    "ablate_units", "ablate_connections", "connection_mask", "get_layer", "weight_module", "layer_mean_activation",
    "resolve_units", "AblationHandle",
]


# -- layers ------------------------------------------------------------------------------------------------------

def _valid_layer_names(model: nn.Module) -> list[str]:
    names = getattr(model, "workbench_layers", None)
    if names:
        return list(names)
    return [n for n, _ in model.named_modules() if n]


def get_layer(model: nn.Module, layer: str) -> nn.Module:
    """The sub-module called ``layer`` (a ``named_modules`` path such as ``"conv4"`` or ``"layer4.1.conv2"``)."""
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a module name such as 'conv4', got {layer!r}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise KeyError(f"model {type(model).__name__} has no layer {layer!r}; its layers are "
                       f"{_valid_layer_names(model)}") from None


def weight_module(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The convolution / linear module whose ``weight`` holds the connections into ``layer``.

    ``layer`` may name the weighted module itself, or a block that contains exactly one of them (a workbench
    conv-BN-ReLU block such as SmallCNN's ``conv4``); otherwise the full path of one weighted module is needed.
    """
    module = get_layer(model, layer)
    weighted = (nn.modules.conv._ConvNd, nn.Linear)
    if isinstance(module, weighted):
        return layer, module
    candidates = [(f"{layer}.{name}", m) for name, m in module.named_modules() if name and isinstance(m, weighted)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"layer {layer!r} ({type(module).__name__}) has no convolution or linear weights to "
                         "ablate connections of; name a Conv/Linear module")
    raise ValueError(f"layer {layer!r} holds {len(candidates)} weighted modules "
                     f"({[n for n, _ in candidates]}); name one of them to ablate its connections")


# -- unit sets ---------------------------------------------------------------------------------------------------

def resolve_units(units: Any, n_units: int, unit_shape: Sequence[int] | None = None,
                  layer: str | None = None) -> np.ndarray:
    """Sorted unique flat unit indices from indices, a boolean mask (flat or (C, H, W)) or a Selection.

    An empty set is allowed here (ablating nothing is the identity, the zero point of a lesion-size sweep); the
    selection constructors in :mod:`workbench.intervention.selection` refuse to build an empty selection.
    """
    where = f" of layer {layer!r}" if layer else ""
    shape_txt = f" (unit shape {tuple(unit_shape)})" if unit_shape is not None else ""
    if hasattr(units, "units") and hasattr(units, "n_units"):  # a Selection
        sel_layer = getattr(units, "layer", None)
        if layer is not None and sel_layer is not None and sel_layer != layer:
            raise ValueError(f"the selection was made for layer {sel_layer!r} but is applied to layer {layer!r}")
        if int(units.n_units) != n_units:
            raise ValueError(f"the selection was made for a layer of {units.n_units} units, but layer{where} has "
                             f"{n_units}{shape_txt}")
        units = units.units
    if isinstance(units, torch.Tensor):
        units = units.detach().cpu().numpy()
    arr = np.asarray(units)
    if arr.dtype == bool:
        if arr.shape == (n_units,):
            return np.flatnonzero(arr)
        if unit_shape is not None and arr.shape == tuple(unit_shape):
            return np.flatnonzero(arr.reshape(-1))
        raise ValueError(f"a boolean unit mask{where} must have shape ({n_units},) or the unit shape"
                         f"{shape_txt}, got {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"units must be a 1-D array of integer flat indices in (C, H, W) order, a boolean mask or a "
                         f"Selection; got an array of dtype {arr.dtype} and shape {arr.shape}")
    bad = arr[(arr < 0) | (arr >= n_units)]
    if bad.size:
        raise ValueError(f"unit index {int(bad[0])} out of range for layer{where} with {n_units} units{shape_txt}; "
                         f"flat indices must lie in [0, {n_units - 1}] ({bad.size} out of range)")
    return np.unique(arr.astype(np.int64))


def _reference_batches(reference: Any) -> Iterator[torch.Tensor]:
    if isinstance(reference, torch.Tensor):
        yield reference
        return
    for batch in reference:
        if isinstance(batch, (list, tuple)):  # (images, labels) from a DataLoader
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise ValueError(f"reference batches must be tensors or (tensor, label) pairs, got {type(batch).__name__}")
        yield batch


@torch.no_grad()
def layer_mean_activation(model: nn.Module, layer: str, reference: torch.Tensor | Iterable) -> torch.Tensor:
    """Mean output of ``layer`` over a reference stimulus set (an input tensor or an iterable of batches).

    Runs in eval mode (batch-norm running statistics must not move) and restores every module's mode after.
    Returns a tensor of the layer's unit shape (float64 accumulation, cast to float32).
    """
    get_layer(model, layer)
    total: list[torch.Tensor] = []
    count = [0]

    def capture(_m, _inp, out):
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; hook a tensor-valued layer")
        s = out.detach().double().sum(0)
        if total:
            total[0] += s
        else:
            total.append(s)
        count[0] += out.shape[0]

    modes = {m: m.training for m in model.modules()}
    device = _model_device(model)
    try:
        with layer_hooks(model, {layer: capture}, "mean ablation reference"):
            model.eval()
            for batch in _reference_batches(reference):
                model(batch.to(device))
    finally:
        for m, mode in modes.items():
            m.training = mode
    if count[0] == 0:
        raise ValueError("the reference stimulus set for mean ablation is empty; pass at least one image")
    return (total[0] / count[0]).float()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class AblationHandle:
    """What ``ablate_units`` yields: the resolved units and (once known) the layer's unit shape."""

    def __init__(self, layer: str, units: Any, mode: str):
        self.layer = layer
        self.mode = mode
        self._raw_units = units
        self.units: np.ndarray | None = None
        self.unit_shape: tuple[int, ...] | None = None
        self.fill: torch.Tensor | None = None
        self.n_calls = 0
        self._fill_values: torch.Tensor | None = None
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def apply(self, output: torch.Tensor) -> torch.Tensor:
        """The ablated version of one output of the layer (what the forward hook returns).

        Public so that a caller holding the layer's clean output (e.g. cached for many lesions) can apply the same
        intervention without rerunning the layers below it.
        """
        layer = self.layer
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer {layer!r} returns {type(output).__name__}, not a tensor; ablate a tensor-valued "
                             "layer")
        shape = tuple(output.shape[1:])
        if self.unit_shape is None:
            self.unit_shape = shape
            self.units = resolve_units(self._raw_units, int(np.prod(shape)), shape, layer)
        elif shape != self.unit_shape:
            raise ValueError(f"layer {layer!r} produced units of shape {shape}, but the ablation was set up for "
                             f"{self.unit_shape}; the mask / reference must match the layer's output")
        fill_values = self._fill_values
        if fill_values is not None and fill_values.numel() != int(np.prod(shape)):
            raise ValueError(f"the mean-ablation reference has {fill_values.numel()} values but layer {layer!r} has "
                             f"{int(np.prod(shape))} units (shape {shape})")
        self.n_calls += 1
        if self.units.size == 0:
            return output
        key = (output.device, output.dtype)
        if key not in self._cache:
            mask = torch.zeros(int(np.prod(shape)), dtype=torch.bool)
            mask[torch.from_numpy(self.units)] = True
            mask = mask.reshape(shape).to(output.device)
            if fill_values is None:
                fill = torch.zeros((), dtype=output.dtype, device=output.device)
            else:
                fill = fill_values.reshape(shape).to(device=output.device, dtype=output.dtype)
            self._cache[key] = (mask, fill)
        mask, fill = self._cache[key]
        self.fill = fill
        # torch.where keeps every unablated value bit-for-bit and lets gradients flow through them.
        return torch.where(mask, fill, output)

    def __repr__(self) -> str:
        n = "?" if self.units is None else len(self.units)
        return f"AblationHandle(layer={self.layer!r}, mode={self.mode!r}, n_units={n})"


@contextlib.contextmanager
def ablate_units(model: nn.Module, layer: str, units: Any, mode: str = "zero", reference: Any = None,
                 unit_shape: Sequence[int] | None = None) -> Iterator[AblationHandle]:
    """Silence ``units`` of ``layer`` for every forward pass inside the ``with`` block.

    Parameters
    ----------
    model, layer: the network and the name of the sub-module whose output is ablated.
    units: flat indices in (C, H, W) order, a boolean mask (flat or of the unit shape), or a
        :class:`~workbench.intervention.selection.Selection`. An empty set ablates nothing.
    mode: ``"zero"`` (outputs set to 0) or ``"mean"`` (outputs set to their mean over ``reference``).
    reference: for ``mode="mean"``: either the per-unit means (array/tensor of the unit shape or flat), or the
        reference stimuli (an input tensor, or an iterable of batches / (images, labels) pairs) to average over.
    unit_shape: the layer's output shape without batch, to validate ``units`` before the first forward pass; by
        default it is known from a Selection / (C, H, W) mask / mean reference, else checked on the first pass.

    Unablated units pass through ``torch.where`` untouched, so ablating no units is bit-identical to no ablation.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    get_layer(model, layer)
    sel_layer = getattr(units, "layer", None) if hasattr(units, "n_units") else None
    if sel_layer is not None and sel_layer != layer:
        raise ValueError(f"the selection was made for layer {sel_layer!r} but is applied to layer {layer!r}")
    handle = AblationHandle(layer, units, mode)

    fill_values: torch.Tensor | None = None
    if mode == "mean":
        if reference is None:
            raise ValueError("mode='mean' needs a reference: the per-unit mean activations, or reference stimuli to "
                             "average the layer's output over (see layer_mean_activation)")
        fill_values = _as_unit_means(reference, unit_shape, units)
        if fill_values is None:
            fill_values = layer_mean_activation(model, layer, reference)
            if unit_shape is None:
                unit_shape = tuple(fill_values.shape)
        elif unit_shape is None and fill_values.dim() > 1:
            unit_shape = tuple(fill_values.shape)

    if unit_shape is None:
        unit_shape = _shape_from_units(units)
    if unit_shape is not None:
        handle.unit_shape = tuple(int(s) for s in unit_shape)
        handle.units = resolve_units(units, int(np.prod(handle.unit_shape)), handle.unit_shape, layer)

    handle._fill_values = fill_values

    def hook(_module, _inputs, output):
        return handle.apply(output)

    with layer_hooks(model, {layer: hook}, "ablation"):
        yield handle


def _shape_from_units(units: Any) -> tuple[int, ...] | None:
    if hasattr(units, "unit_shape") and getattr(units, "unit_shape", None) is not None:
        return tuple(units.unit_shape)
    if isinstance(units, (np.ndarray, torch.Tensor)) and units.dtype in (np.bool_, torch.bool) and units.ndim > 1:
        return tuple(units.shape)
    return None


def _as_unit_means(reference: Any, unit_shape: Sequence[int] | None, units: Any) -> torch.Tensor | None:
    """``reference`` as per-unit means if it is shaped like the layer's units, else None (= reference stimuli)."""
    if not isinstance(reference, (np.ndarray, torch.Tensor)):
        return None
    ref = torch.as_tensor(reference).detach().cpu().float()
    known = unit_shape or _shape_from_units(units)
    means = None
    if known is not None:
        n = int(np.prod(known))
        if tuple(ref.shape) == tuple(known) or tuple(ref.shape) == (n,):
            means = ref.reshape(tuple(known))
    elif ref.dim() in (1, 3):
        # An image batch is (N, C, H, W) or (N, d); a 1-D or 3-D array can only be per-unit means.
        means = ref
    if means is not None and not torch.isfinite(means).all():
        raise ValueError("the per-unit means given as mean-ablation reference contain NaN or inf")
    return means


# -- connections -------------------------------------------------------------------------------------------------

def connection_mask(weight_shape: Sequence[int], in_channels: Iterable[int] | None = None,
                    out_channels: Iterable[int] | None = None) -> torch.Tensor:
    """Boolean mask over a conv / linear weight: True for every connection from ``in_channels`` to ``out_channels``.

    ``None`` means all channels on that side (e.g. ``out_channels=None`` cuts the chosen inputs from every output).
    """
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) < 2:
        raise ValueError(f"a connection mask needs a weight of shape (out, in, ...), got {shape}")
    n_out, n_in = shape[0], shape[1]

    def pick(channels, n, side):
        sel = torch.zeros(n, dtype=torch.bool)
        if channels is None:
            sel[:] = True
            return sel
        idx = np.asarray(list(channels), dtype=np.int64)
        if idx.size == 0:
            raise ValueError(f"empty set of {side} channels; give at least one channel or None for all")
        if (idx < 0).any() or (idx >= n).any():
            raise ValueError(f"{side} channel {int(idx[(idx < 0) | (idx >= n)][0])} out of range [0, {n - 1}]")
        sel[torch.from_numpy(idx)] = True
        return sel

    out_sel, in_sel = pick(out_channels, n_out, "output"), pick(in_channels, n_in, "input")
    mask = out_sel[:, None] & in_sel[None, :]
    return mask.reshape((n_out, n_in) + (1,) * (len(shape) - 2)).expand(shape).clone()


@contextlib.contextmanager
def ablate_connections(model: nn.Module, layer: str, mask: Any = None, *, in_channels: Iterable[int] | None = None,
                       out_channels: Iterable[int] | None = None) -> Iterator[torch.Tensor]:
    """Set chosen weights of ``layer`` to zero inside the ``with`` block; the exact weights come back on exit.

    ``mask`` is boolean, True = delete that connection, shaped like the weight ((out, in, kh, kw) for a conv) or
    (out, in) (then it applies to every kernel position). Instead of a mask, give ``in_channels`` and/or
    ``out_channels`` to delete all connections from those inputs to those outputs. Yields the boolean weight mask.
    The weight tensor is modified in place, so the Parameter object (and any optimizer state) stays the same.
    """
    name, module = weight_module(model, layer)
    weight = module.weight
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"{name}.weight is not a Parameter (is the module pruned or parametrized?); remove the "
                         "reparametrization before ablating connections")
    if mask is None:
        if in_channels is None and out_channels is None:
            raise ValueError("give a connection mask, or in_channels and/or out_channels to disconnect")
        if getattr(module, "groups", 1) != 1 and in_channels is not None:
            raise ValueError(f"{name} is a grouped convolution; pass an explicit mask over its weight "
                             f"{tuple(weight.shape)} instead of in_channels")
        full = connection_mask(weight.shape, in_channels, out_channels)
    else:
        if in_channels is not None or out_channels is not None:
            raise ValueError("give either mask or in_channels/out_channels, not both")
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).detach().cpu()
        if m.dtype != torch.bool:
            raise ValueError(f"the connection mask must be boolean (True = delete), got dtype {m.dtype}")
        wshape = tuple(weight.shape)
        if tuple(m.shape) == wshape:
            full = m.clone()
        elif tuple(m.shape) == wshape[:2]:
            full = m.reshape(wshape[:2] + (1,) * (len(wshape) - 2)).expand(wshape).clone()
        else:
            raise ValueError(f"connection mask of shape {tuple(m.shape)} does not fit {name}.weight {wshape}; use "
                             f"the weight's shape or (out, in) = {wshape[:2]}")
    full = full.to(weight.device)
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.masked_fill_(full, 0.0)
        yield full
    finally:
        with torch.no_grad():
            weight.copy_(saved)
