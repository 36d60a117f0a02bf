"""Make a model safe for attribution, or say precisely why it cannot be.

Known failure modes (captum issue #1082; shap issues #1479, #3466, #3725, #3938):
- in-place activations overwrite the tensor a backward hook needs -> we copy the model and switch ``inplace`` off;
- one module object registered in several places (``nn.Sequential(conv, relu, conv, relu)`` with the same ``relu``)
  makes DeepLift / DeepExplainer keep one saved state for two places -> the copy gets its own clone per place;
- one module *called* several times from the same attribute (``self.relu`` used twice in ``forward``) or a functional
  nonlinearity (``F.relu``) cannot be fixed by copying: module-rule methods (DeepLift, DeepExplainer) would be
  silently wrong, so we raise an error that names the module. Gradient methods are unaffected and are allowed.
"""

from __future__ import annotations

import copy
from collections import Counter
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["safe_copy", "module_call_counts", "functional_nonlinearities", "check_module_rules"]

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
