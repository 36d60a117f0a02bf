"""Make a model safe for attribution, or say precisely why it cannot be.

Known failure modes (captum issue #1082; shap issues #1479, #3466, #3725, #3938):
- in-place activations overwrite the tensor a backward hook needs -> we copy the model and switch ``inplace`` off;
- one module object registered in several places (``nn.Sequential(conv, relu, conv, relu)`` with the same ``relu``)
  makes DeepLift / DeepExplainer keep one saved state for two places -> the copy gets its own clone per place;
- one module *called* several times from the same attribute (``self.relu`` used twice in ``forward``) or a functional
  nonlinearity (``F.relu``) cannot be fixed by copying: module-rule methods (DeepLift, DeepExplainer) would be
  silently wrong, so we raise an error that names the module. Gradient methods are unaffected and are allowed.

Copying costs a deep copy per call, so ``prepare_model`` copies only when the model needs it (in-place modules,
one module registered in several places, a module in training mode, weights on another device) or when the method
mutates the model it runs on (shap calls ``zero_grad`` and sets attributes on modules). A copy is kept per model
and device and gets the model's current weights on every call, so it never runs stale weights; it is rebuilt when
the model's structure (modules, their settings, tensor shapes) changes. ``clear_model_cache()`` frees the copies.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "safe_copy", "module_call_counts", "functional_nonlinearities", "check_module_rules", "PreparedModel",
    "prepare_model", "clear_model_cache", "discard_copy", "model_dtype", "check_module_rules_once",
]

# Functions whose DeepLift multiplier differs from the gradient; captum and shap only apply their rules to modules.
_NONLINEAR_FUNCTIONS = {
    torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh, torch.nn.functional.gelu,
    torch.nn.functional.elu, torch.nn.functional.leaky_relu, torch.nn.functional.softplus,
    torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d, torch.nn.functional.max_pool3d,
    torch.nn.functional.silu, torch.nn.functional.softmax, torch.softmax, torch.nn.functional.sigmoid,
    torch.nn.functional.tanh, torch.max_pool2d,
}
# Leaf modules through whose forward these functions legitimately run (captum and shap handle the module itself).
_RULE_MODULES = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softmax, nn.GELU, nn.SELU,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
)


def _untie_reused_slots(model: nn.Module) -> list[str]:
    """Give every place a module object is registered its own clone; returns the names of the cloned places."""
    seen: set[int] = set()
    cloned: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            if id(child) in seen:
                child = copy.deepcopy(child)
                parent._modules[name] = child
                cloned.append(full)
            seen.add(id(child))
            visit(child, full)

    seen.add(id(model))
    visit(model, "")
    return cloned


def safe_copy(model: nn.Module, device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """A deep copy in eval mode, no in-place ops, each registered place its own module, weights frozen.

    Returns (copy, report) with the names of modules whose ``inplace`` flag was switched off and of cloned places.
    Freezing the weights (requires_grad False) saves the parameter gradients that attribution never needs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    clone = copy.deepcopy(model)
    inplace_off = []
    for name, module in clone.named_modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
            inplace_off.append(name)
    cloned = _untie_reused_slots(clone)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    if device is not None:
        clone.to(device)
    return clone, {"inplace_switched_off": inplace_off, "cloned_reused_modules": cloned}


@contextmanager
def _call_counter(model: nn.Module):
    counts: Counter = Counter()
    names = {id(m): n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, i, o: counts.update([names[id(mod)]]))
               for m in model.modules()]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def module_call_counts(model: nn.Module, example: torch.Tensor) -> Counter:
    """How many times each named module runs in one forward pass of ``example``."""
    with _call_counter(model) as counts, torch.no_grad():
        model(example)
    return counts


class _FunctionalSpy(TorchFunctionMode):
    """Records nonlinear functions called while no rule-carrying leaf module is running."""

    def __init__(self, stack: list[nn.Module], names: dict[int, str]):
        super().__init__()
        self.stack, self.names, self.found = stack, names, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _NONLINEAR_FUNCTIONS and not (self.stack and isinstance(self.stack[-1], _RULE_MODULES)):
            where = self.names.get(id(self.stack[-1]), "?") if self.stack else "<top>"
            self.found.append((getattr(func, "__name__", str(func)), where or type(self.stack[-1]).__name__))
        return func(*args, **(kwargs or {}))


def functional_nonlinearities(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(function, calling module) for each nonlinearity called as a function rather than as a module."""
    stack: list[nn.Module] = []
    names = {id(m): (n or type(m).__name__) for n, m in model.named_modules()}
    handles = []

    def enter(mod, inputs):
        stack.append(mod)

    def leave(mod, inputs, output):  # must return None: a returned value would replace the module's output
        stack.pop()

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    spy = _FunctionalSpy(stack, names)
    try:
        with torch.no_grad(), spy:
            model(example)
    finally:
        for h in handles:
            h.remove()
    return sorted(set(spy.found))


def check_module_rules(model: nn.Module, example: torch.Tensor, method: str) -> None:
    """Raise ValueError naming the module when DeepLift-style module rules would be silently wrong."""
    counts = module_call_counts(model, example)
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    reused = sorted(n for n, c in counts.items() if c > 1 and n in leaves)
    if reused:
        detail = ", ".join(f"{n!r} ({counts[n]} calls)" for n in reused)
        raise ValueError(
            f"{method} keeps one saved state per module, but these modules run more than once per forward pass: "
            f"{detail}. Give each call its own module (e.g. self.relu1, self.relu2), or use a gradient method "
            "(saliency, integrated_gradients, gradient_shap, shap_gradient), which reuse does not affect."
        )
    functional = functional_nonlinearities(model, example)
    if functional:
        detail = ", ".join(f"{f} in {w!r}" for f, w in functional)
        raise ValueError(
            f"{method} applies its rules to nn.Module nonlinearities only, but the model calls nonlinear functions "
            f"directly: {detail}. Replace them with modules (nn.ReLU, nn.MaxPool2d, ...), or use a gradient method."
        )


# -- running the caller's model when it is safe; one cached copy when it is not -------------------------------------
def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (else of its buffers; float32 for a model with neither)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


_SETTING_TYPES = frozenset({bool, int, float, str, type(None)})


def _settings(module: nn.Module) -> tuple:
    """A module's plain settings (kernel size, ``inplace``, ``eps``...), not ``training``: copies run in eval."""
    out = []
    for k, v in module.__dict__.items():
        kind = type(v)
        if kind in _SETTING_TYPES:
            if k != "training":
                out.append((k, v))
        elif kind is tuple and all(type(e) in _SETTING_TYPES for e in v):
            out.append((k, v))
    return tuple(out)


def _same_device(a: torch.device, device: torch.device) -> bool:
    if a.type != device.type:
        return False
    if device.type != "cuda":
        return True
    return a.index == (device.index if device.index is not None else torch.cuda.current_device())


def _survey(model: nn.Module, device: torch.device) -> tuple[tuple, list[str]]:
    """One quick pass over the modules: the registered places (name, module identity, type) and why the model
    would need a copy. Settings and tensor shapes join the key only when a copy is made (``_copy_key``)."""
    places, reasons = [], set()
    seen: set[int] = set()
    devices: set[torch.device] = set()
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen:
            reasons.add("one module registered in several places")
        seen.add(id(m))
        if m.training:
            reasons.add("training mode")
        if getattr(m, "inplace", False) is True:
            reasons.add("in-place modules")
        for t in m._parameters.values():
            if t is not None:
                devices.add(t.device)
        for t in m._buffers.values():
            if t is not None:
                devices.add(t.device)
        places.append((name, id(m), type(m)))
    if not all(_same_device(d, device) for d in devices):
        reasons.add(f"weights not on {device}")
    return tuple(places), sorted(reasons)


def _copy_key(model: nn.Module) -> tuple:
    """What a cached copy must match beyond the registered places: every module's plain settings and its tensors'
    names, shapes and dtypes (weights are not in it: a copy gets the current weights on every call)."""
    return tuple((_settings(m), tuple((k, t.shape, t.dtype) for k, t in itertools.chain(
        m._parameters.items(), m._buffers.items()) if t is not None))
        for m in model.modules())


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(itertools.chain(model.named_parameters(remove_duplicate=False),
                                model.named_buffers(remove_duplicate=False)))


@torch.no_grad()
def _load_current_weights(copy_: nn.Module, model: nn.Module) -> bool:
    """Copy the model's current parameters and buffers into its safe copy (every registered place by name);
    False, copying nothing, when the two no longer hold the same tensors (the copy must be rebuilt)."""
    source, target = _named_tensors(model), _named_tensors(copy_)
    if source.keys() != target.keys() or any(t.shape != source[k].shape for k, t in target.items()):
        return False
    for name, t in target.items():
        t.copy_(source[name])
    return True


@dataclass
class _CacheEntry:
    places: tuple                                                               # the registered places
    copies: dict[str, tuple[nn.Module, dict, tuple]] = field(default_factory=dict)   # device: copy, report, key
    facts: dict[Any, Any] = field(default_factory=dict)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, _CacheEntry]" = weakref.WeakKeyDictionary()


def clear_model_cache() -> None:
    """Forget every cached safe copy and probe result (frees the copies' memory)."""
    _CACHE.clear()


def discard_copy(model: nn.Module, device: torch.device | str) -> None:
    """Forget the cached copy of ``model`` on ``device``: after a call that failed half-way, a library may have
    left hooks or attributes on it."""
    entry = _CACHE.get(model)
    if entry is not None:
        entry.copies.pop(str(torch.device(device)), None)


@dataclass
class PreparedModel:
    """The module attribution runs on (the caller's model, or its safe copy), its report, and a memo for facts
    about it (layer shapes, module-rule checks) that hold while the model's structure stays the same."""

    model: nn.Module
    report: dict
    facts: dict

    @property
    def copied(self) -> bool:
        return bool(self.report["copied"])


def prepare_model(model: nn.Module, device: torch.device | str, *, private: bool = False) -> PreparedModel:
    """The model itself when attribution can run on it unchanged, else its (cached) safe copy with current weights.

    ``private``: always run on a copy (for libraries that mutate the model they are given).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device)
    places, reasons = _survey(model, device)
    if private:
        reasons = reasons + ["the method mutates the model it runs on"]
    entry = _CACHE.get(model)
    if entry is None or entry.places != places:
        entry = _CacheEntry(places)
        _CACHE[model] = entry
    if not reasons:
        report = {"copied": False, "copy_reasons": [], "inplace_switched_off": [], "cloned_reused_modules": []}
        return PreparedModel(model, report, entry.facts.setdefault("model itself", {}))
    where, key = str(device), _copy_key(model)
    cached = entry.copies.get(where)
    if cached is not None and cached[2] == key and _load_current_weights(cached[0], model):
        clone, report, _ = cached
    else:
        clone, report = safe_copy(model, device)
        entry.copies[where] = clone, report, key
        entry.facts[("copy", where)] = {}   # what was learnt about the previous copy
    report = {"copied": True, "copy_reasons": reasons, **report}
    return PreparedModel(clone, report, entry.facts[("copy", where)])


def check_module_rules_once(prepared: PreparedModel, example: torch.Tensor, method: str) -> None:
    """``check_module_rules`` run once per model structure and input shape (a passed check is remembered)."""
    key = ("module rules", tuple(example.shape[1:]), example.dtype)
    if key not in prepared.facts:
        check_module_rules(prepared.model, example[:1], method)
        prepared.facts[key] = True
