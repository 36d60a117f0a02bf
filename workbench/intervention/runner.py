"""Run a model under a lesion of one layer: responses of any layer above it, and class predictions.

A lesion of layer L changes nothing below L. When the model can be replayed from L (``replay.layer_replay``, checked
against the full model), each probe's clean output of L is computed once, and each lesion runs only the network
above L on the ablated output; otherwise every lesion runs full forward passes with the ablation hook. Both give
the same numbers (tests/test_intervention.py).

    runner = LesionRunner(model, "conv4", (128, 4, 4), mode="zero", check_input=x[:4])
    probe = runner.probe(images)
    with runner.lesioned(selection) as lesion:
        responses = lesion.outputs(probe, "avgpool")
        labels = lesion.predictions(probe)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from workbench.intervention.ablation import AblationHandle, ablate_units
from workbench.intervention.effects import layer_outputs, predict_labels
from workbench.intervention.replay import LayerReplay, layer_replay
from workbench.intervention.selection import Selection
from workbench.models.hooks import repeated_call_error

__all__ = ["Probe", "LesionRunner", "Lesioned"]


@dataclass
class Probe:
    """Images a lesion is measured on, with the lesioned layer's clean output when the model is replayed."""

    images: torch.Tensor
    cached: torch.Tensor | None = None


class LesionRunner:
    def __init__(self, model: nn.Module, layer: str, unit_shape: Sequence[int], *, mode: str = "zero",
                 reference: np.ndarray | None = None, batch_size: int = 256, device: torch.device | None = None,
                 check_input: torch.Tensor | None = None, leaves: Sequence[str] = ()):
        self.model, self.layer, self.unit_shape = model, layer, tuple(unit_shape)
        self.mode, self.reference, self.batch_size = mode, reference, int(batch_size)
        self.device = device or torch.device("cpu")
        self.replay: LayerReplay | None = None
        if check_input is not None:
            self.replay = layer_replay(model, layer, check_input.to(self.device), leaves=leaves)

    @property
    def replayed(self) -> bool:
        return self.replay is not None

    def probe(self, images: torch.Tensor, clean_output: np.ndarray | None = None) -> Probe:
        """A probe of ``images``; ``clean_output``: the layer's clean (n, n_units) output if already computed."""
        if self.replay is None:
            return Probe(images)
        if clean_output is None:
            clean_output = layer_outputs(self.model, images, [self.layer], self.batch_size)[self.layer]
        return Probe(images, torch.from_numpy(clean_output).reshape((-1,) + self.unit_shape))

    @contextmanager
    def lesioned(self, selection: Selection) -> Iterator["Lesioned"]:
        with ablate_units(self.model, self.layer, selection, mode=self.mode, reference=self.reference,
                          unit_shape=self.unit_shape) as handle:
            yield Lesioned(self, handle)


class Lesioned:
    """The model under one lesion (valid inside ``LesionRunner.lesioned``)."""

    def __init__(self, runner: LesionRunner, handle: AblationHandle):
        self.runner, self.handle = runner, handle

    def outputs(self, probe: Probe, layer: str) -> np.ndarray:
        """(n, n_units) outputs of ``layer`` (the lesioned one or one above it) for the probe's images."""
        if probe.cached is None:
            return layer_outputs(self.runner.model, probe.images, [layer], self.runner.batch_size)[layer]
        return self._replay(probe.cached, layer)[1]

    def predictions(self, probe: Probe) -> np.ndarray:
        """Arg-max class of every image of the probe."""
        if probe.cached is None:
            return predict_labels(self.runner.model, probe.images, self.runner.batch_size)
        return self._replay(probe.cached, None)[0]

    @torch.no_grad()
    def _replay(self, cached: torch.Tensor, capture: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        run = self.runner
        labels, responses = [], []
        grabbed: list[torch.Tensor] = []
        hook = None
        if capture is not None and capture != run.layer:
            hook = run.model.get_submodule(capture).register_forward_hook(
                lambda _m, _i, out: grabbed.append(out.detach()))
        try:
            for start in range(0, cached.shape[0], run.batch_size):
                h = self.handle.apply(cached[start:start + run.batch_size].to(run.device))
                grabbed.clear()
                labels.append(run.replay(h).argmax(1).cpu())
                if hook is not None and len(grabbed) != 1:  # a module run twice: which output is ambiguous
                    raise repeated_call_error(run.model, capture, len(grabbed), "lesion response capture")
                if capture is not None:
                    r = h if capture == run.layer else grabbed[0]
                    responses.append(r.reshape(r.shape[0], -1).float().cpu().numpy())
        finally:
            if hook is not None:
                hook.remove()
        return torch.cat(labels).numpy(), (np.concatenate(responses) if capture is not None else None)
