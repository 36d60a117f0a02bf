"""The train stage's position pre-optimisation (``model.topography.preoptimise``): responses of a source network to
a stimulus set, then ``workbench.models.preoptimise.preoptimise_sheet`` on every topography layer's sheet.

Usable without a run: ``preoptimised_sheets(model, source, images, options)`` with plain tensors.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from workbench.models.config import PreoptimiseConfig
from workbench.models.preoptimise import preoptimise_sheet
from workbench.models.sheet import CorticalSheet

__all__ = ["layer_responses", "preoptimised_sheets", "preoptimise_for_training"]


@torch.no_grad()
def layer_responses(model: nn.Module, images: torch.Tensor, layers: list[str], batch_size: int = 128
                    ) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` (n_images, C, H, W) for preprocessed ``images`` (n, 3, H, W), in eval mode."""
    from workbench.models.hooks import layer_hooks

    captured: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}

    def keep(layer: str) -> Callable:
        def hook(_module, _inputs, output):
            captured[layer].append(output.detach().float().cpu().numpy())
        return hook

    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with layer_hooks(model, {layer: keep(layer) for layer in layers}, "position pre-optimisation"):
            for batch in images.split(batch_size):
                model(batch.to(device))
    finally:
        model.train(was_training)
    return {layer: np.concatenate(chunks) for layer, chunks in captured.items()}


def preoptimised_sheets(sheets: dict[str, CorticalSheet], source: nn.Module, images: torch.Tensor,
                        options: PreoptimiseConfig) -> tuple[dict[str, CorticalSheet], dict[str, Any]]:
    """New sheets for every layer of ``sheets`` from the responses of ``source`` to ``images``, and a record (per
    layer: swaps, neighbour correlation before/after)."""
    responses = layer_responses(source, images, list(sheets))
    new, record = {}, {}
    for layer, sheet in sheets.items():
        acts = responses[layer]
        if acts.reshape(len(acts), -1).shape[1] != sheet.n_units:
            raise ValueError(f"layer {layer}: the source network's output has {acts[0].size} units, the sheet "
                             f"{sheet.n_units}; preoptimise.from_run must name a run of the same architecture")
        new[layer], result = preoptimise_sheet(sheet, acts, options.iterations, options.neighbourhood_size,
                                               options.swaps_per_neighbourhood, options.seed)
        record[layer] = result.to_dict()
    return new, record


def _stimulus_images(options: PreoptimiseConfig, datamodule_fn: Callable, preprocess) -> torch.Tensor:
    """The first ``n_stimuli`` validation images of the training data (no augmentation), or a stimulus set's
    images preprocessed as the model's inputs."""
    if options.stimuli == "data":
        datamodule = datamodule_fn()
        datamodule.setup("fit")
        batches, n = [], 0
        for x, _ in datamodule.val_dataloader():
            batches.append(x)
            n += len(x)
            if n >= options.n_stimuli:
                break
        if n < 3:
            raise ValueError(f"the training data's validation split holds {n} images; pre-optimisation needs >= 3")
        return torch.cat(batches)[:options.n_stimuli]
    from workbench.data import load_stimuli

    stimuli = load_stimuli(options.stimuli)
    return preprocess(stimuli.images[:options.n_stimuli])


def preoptimise_for_training(model: nn.Module, model_cfg: dict, datamodule_fn: Callable | None, preprocess,
                             images: torch.Tensor | None = None) -> dict[str, Any] | None:
    """Replace ``model.cortical_sheets`` by pre-optimised ones when ``model.topography.preoptimise.enabled``;
    returns the provenance record (None when off). ``images``: preprocessed stimuli to use instead of the
    configured ones (from Python)."""
    from workbench.config import parse

    options = parse(PreoptimiseConfig, dict((model_cfg.get("topography") or {}).get("preoptimise") or {}),
                    "model.topography.preoptimise")
    sheets = dict(getattr(model, "cortical_sheets", {}) or {})
    if not options.enabled or not sheets:
        return None
    if options.from_run:
        from workbench.run import RunDir

        source = RunDir(options.from_run, create=False).load_model()
        source_label = str(RunDir(options.from_run, create=False).path.resolve())
    else:
        source, source_label = model, "the network at initialisation (same seed)"
    if images is None:
        images = _stimulus_images(options, datamodule_fn, preprocess)
    new, layers = preoptimised_sheets(sheets, source, images, options)
    model.cortical_sheets = new
    return {"source": source_label, "stimuli": options.stimuli, "n_stimuli": int(len(images)),
            "iterations": options.iterations, "seed": options.seed, "layers": layers,
            "slot_of_channel": {layer: sheet.slot_of_channel.tolist() for layer, sheet in new.items()}}
