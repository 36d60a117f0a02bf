"""Forward hooks on named layers that refuse a layer whose module runs more than once per forward pass.

A forward hook is attached to a module object, not to a place in the network. When one module runs twice in a
forward pass (torchvision's ResNet calls ``layer1.0.relu`` after both convolutions of a BasicBlock) or is registered
under two names (an alias, ``self.b = self.a``) and runs at both places, a hook that reads the output keeps only
the last call and a hook that replaces it (an ablation) changes every call: silently wrong either way.

``layer_hooks(model, {layer: hook}, purpose)`` counts each hooked module's calls during the forward passes the
hooks see anyway (a pre-hook on ``model`` resets the counts, a hook on ``model`` checks them): no extra pass.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

from torch import nn

__all__ = ["layer_hooks", "register_layer_hooks", "module_aliases", "repeated_call_error"]


def module_aliases(model: nn.Module, layer: str) -> list[str]:
    """Every ``named_modules`` path of the module object called ``layer`` (one entry when it has no alias)."""
    module = model.get_submodule(layer)
    return [name for name, m in model.named_modules(remove_duplicate=False) if m is module]


def repeated_call_error(model: nn.Module, layer: str, calls: int, purpose: str) -> ValueError:
    """The error for a hook on ``layer`` whose module ran ``calls`` times (not once) in one forward pass."""
    if calls == 0:
        return ValueError(f"{purpose}: layer {layer!r} did not run in the forward pass of {type(model).__name__}; "
                          "pick a layer the forward pass uses (`workbench layers model=...` lists the layers)")
    aliases = [a for a in module_aliases(model, layer) if a != layer]
    alias_txt = (f"; the same module object is also registered as {aliases}, so every place it runs counts"
                 if aliases else "")
    parent = layer.rpartition(".")[0]
    example = f", e.g. the block that contains it, {parent!r}" if parent else ""
    return ValueError(
        f"{purpose}: layer {layer!r} ({type(model.get_submodule(layer)).__name__}) runs {calls} times in one forward "
        f"pass of {type(model).__name__}{alias_txt}. A hook on it would see every call (an ablation silences all "
        f"of them, a recording keeps only the last), so its output is ambiguous. Pick a layer whose module runs "
        f"once per forward pass{example} (`workbench layers model=...` lists the layers)."
    )


class _CallCounter:
    """Calls of each hooked layer within the current forward pass of the root model."""

    def __init__(self, model: nn.Module, layers: list[str], purpose: str):
        self.model, self.purpose = model, purpose
        self.counts = dict.fromkeys(layers, 0)
        self.active = False

    def start(self, _module, _inputs) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self.active = True

    def count(self, layer: str) -> int:
        """The call number of this call (1 outside a forward pass of the model: a layer run on its own)."""
        if not self.active:
            return 1
        self.counts[layer] += 1
        return self.counts[layer]

    def check(self, _module, _inputs, _output) -> None:
        self.active = False
        for layer, calls in self.counts.items():
            if calls > 1:
                raise repeated_call_error(self.model, layer, calls, self.purpose)


def register_layer_hooks(model: nn.Module, hooks: Mapping[str, Callable], purpose: str) -> list:
    """Register ``hooks[layer]`` as the forward hook of each layer of ``model``, guarded against repeated calls.

    Returns the handles (remove them all to detach). The forward pass in which a hooked module runs more than once
    raises ``ValueError`` naming the layer, its call count and the fix, once the model's forward has finished.
    """
    counter = _CallCounter(model, list(hooks), purpose)
    handles = [model.register_forward_pre_hook(counter.start)]
    for layer, hook in hooks.items():
        handles.append(model.get_submodule(layer).register_forward_hook(_counted(counter, layer, hook)))
    handles.append(model.register_forward_hook(counter.check))  # after the hooks above when layer == ""
    return handles


def _counted(counter: _CallCounter, layer: str, hook: Callable) -> Callable:
    def counted_hook(module, inputs, output):
        if counter.count(layer) > 1:
            return None  # the pass fails once the model's forward ends; the hook's own checks would mislead
        return hook(module, inputs, output)
    return counted_hook


@contextlib.contextmanager
def layer_hooks(model: nn.Module, hooks: Mapping[str, Callable], purpose: str) -> Iterator[list]:
    """``register_layer_hooks`` for the duration of a ``with`` block (removed on exit, also after an error)."""
    handles = register_layer_hooks(model, hooks, purpose)
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
