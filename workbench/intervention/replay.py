"""Run a model from a cached layer output onwards, so a lesion study does not recompute the layers below a lesion.

A lesion of layer L changes nothing below L. For hundreds of lesions of the same layer on the same images it is
much cheaper to compute L's clean output once and, per lesion, run only the part of the network above L on the
ablated output. :class:`LayerReplay` builds that upper part with ``torch.fx``: it traces the model with L as a leaf,
keeps the nodes that do not depend on the input except through L, and refuses (returns None from
:func:`layer_replay`) when some later node reads a tensor from below L (a skip connection around L), when tracing
fails, or when the replayed output differs from the full model's on a check batch.

The replay shares the model's modules (weights, hooks): forward hooks on modules above L fire as usual, and the
ablation itself is applied with :meth:`AblationHandle.apply`, the same code the ``ablate_units`` hook runs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import fx, nn

from workbench.models.hooks import layer_hooks

__all__ = ["LayerReplay", "layer_replay"]


class _LeafTracer(fx.Tracer):
    def __init__(self, leaves: Sequence[str]):
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


class LayerReplay(nn.Module):
    """``replay(h)`` = the model's output when ``layer`` outputs ``h`` (modules shared with ``model``)."""

    def __init__(self, model: nn.Module, layer: str, leaves: Sequence[str] = ()):
        super().__init__()
        tracer = _LeafTracer([layer, *leaves])
        graph = tracer.trace(model)
        gm = fx.GraphModule(model, graph)
        nodes = list(gm.graph.nodes)
        layer_nodes = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(layer_nodes) != 1:
            raise ValueError(f"layer {layer!r} is called {len(layer_nodes)} times in the traced model; a replay needs "
                             "exactly one call")
        start = layer_nodes[0]
        # every node that the layer's call depends on (the part of the network below the lesion)
        below: set[fx.Node] = set()
        stack = [start]
        while stack:
            n = stack.pop()
            for a in n.all_input_nodes:
                if a not in below:
                    below.add(a)
                    stack.append(a)
        new = fx.Graph()
        h = new.placeholder("layer_output")
        env: dict[fx.Node, fx.Node] = {start: h}
        for n in nodes[nodes.index(start) + 1:]:
            if n.op == "output":
                out_args = n.args[0]
                new.output(fx.map_arg(out_args, lambda a: env[a]))
                break
            if n in below or n.op == "placeholder":
                continue
            bad = [a for a in n.all_input_nodes if a in below or (a not in env)]
            if bad:
                raise ValueError(f"node {n.name} above layer {layer!r} reads {bad[0].name} from below it (a skip "
                                 "connection around the layer); the model cannot be replayed from this layer")
            env[n] = new.node_copy(n, lambda a: env[a])
        self.layer = layer
        self.module = fx.GraphModule(gm, new)

    def forward(self, layer_output: torch.Tensor) -> torch.Tensor:
        return self.module(layer_output)


def layer_replay(model: nn.Module, layer: str, check_input: torch.Tensor, leaves: Sequence[str] = (),
                 atol: float = 1e-5) -> LayerReplay | None:
    """A verified :class:`LayerReplay`, or None when the model cannot be replayed from ``layer``.

    ``check_input``: a small input batch; the replay must reproduce ``model(check_input)`` from the layer's
    captured output (eval mode) within ``atol``.
    """
    try:
        replay = LayerReplay(model, layer, leaves)
    except Exception:  # tracing is best effort: any failure means "run the full model"
        return None
    captured = {}
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), layer_hooks(model, {layer: lambda m, i, o: captured.__setitem__("h", o)}, "replay"):
            full = model(check_input)
        with torch.no_grad():
            again = replay(captured["h"])
    except Exception:
        return None
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not isinstance(full, torch.Tensor) or full.shape != again.shape:
        return None
    if not torch.allclose(full, again, atol=atol, rtol=0):
        return None
    return replay
