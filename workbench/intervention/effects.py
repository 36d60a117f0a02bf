"""What a lesion does: behavioural deficits per class, response changes per category, and their statistics.

All functions take plain arrays; the model is only touched by :func:`predict_labels` and :func:`layer_outputs`,
which run under whatever ablation context the caller opened.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from workbench.models.hooks import layer_hooks

__all__ = [
    "predict_labels", "layer_outputs", "per_class_accuracy", "class_deficits", "relative_response_change",
    "category_response_change", "stratified_bootstrap_indices", "percentile_ci",
]


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Arg-max class of every (preprocessed) image, in eval mode; the model's mode is restored after."""
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        raise ValueError("images must be a preprocessed tensor (n, C, H, W)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    modes = {m: m.training for m in model.modules()}
    out = []
    try:
        model.eval()
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size].to(device))
            out.append(logits.argmax(1).cpu())
    finally:
        for m, mode in modes.items():
            m.training = mode
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


@torch.no_grad()
def layer_outputs(model: nn.Module, images: torch.Tensor, layers: Sequence[str],
                  batch_size: int = 256) -> dict[str, np.ndarray]:
    """Flattened (n, n_units) float32 outputs of ``layers`` for preprocessed ``images`` (eval mode)."""
    from workbench.intervention.ablation import get_layer

    device = _device_of(model)
    captured: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    hooks = {}
    for layer in layers:
        get_layer(model, layer)  # a KeyError naming the valid layers
        def hook(_m, _i, out, layer=layer):
            captured[layer].append(out.detach().reshape(out.shape[0], -1).float().cpu().numpy())
        hooks[layer] = hook
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with layer_hooks(model, hooks, "lesion effects"):
            for start in range(0, images.shape[0], batch_size):
                model(images[start:start + batch_size].to(device))
    finally:
        for m, mode in modes.items():
            m.training = mode
    return {layer: np.concatenate(chunks) for layer, chunks in captured.items()}


def _check_labels(labels: Any, n: int | None = None) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {lab.dtype} shape {lab.shape}")
    if n is not None and lab.size != n:
        raise ValueError(f"{lab.size} labels for {n} predictions")
    return lab


def per_class_accuracy(correct: Any, labels: Any, n_classes: int, index: np.ndarray | None = None) -> np.ndarray:
    """Fraction correct per class; ``index`` (e.g. a bootstrap resample) picks the images to use. NaN if a class
    has no image."""
    c = np.asarray(correct, dtype=np.float64)
    lab = _check_labels(labels, c.shape[-1])
    if index is not None:
        c, lab = c[..., index], lab[index]
    counts = np.bincount(lab, minlength=n_classes).astype(np.float64)
    if c.ndim == 1:
        sums = np.bincount(lab, weights=c, minlength=n_classes)
    else:  # (n_lesions, n_images): one bincount per row via an offset trick
        offsets = (np.arange(c.shape[0])[:, None] * n_classes + lab[None, :]).reshape(-1)
        sums = np.bincount(offsets, weights=c.reshape(-1), minlength=c.shape[0] * n_classes).reshape(c.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def class_deficits(clean_correct: Any, lesion_correct: Any, labels: Any, n_classes: int,
                   index: np.ndarray | None = None) -> np.ndarray:
    """Accuracy lost per class: acc(clean) - acc(lesioned). ``lesion_correct`` may be (n_lesions, n_images)."""
    clean = per_class_accuracy(clean_correct, labels, n_classes, index)
    return clean - per_class_accuracy(lesion_correct, labels, n_classes, index)


def relative_response_change(clean: Any, lesioned: Any, eps: float = 1e-12) -> np.ndarray:
    """Per stimulus, ||r_lesioned - r_clean|| / ||r_clean|| over the units of a (downstream) layer."""
    a, b = np.asarray(clean, dtype=np.float64), np.asarray(lesioned, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"clean and lesioned responses must both be (n_stimuli, n_units), got {a.shape}, {b.shape}")
    return np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), eps)


def category_response_change(change: Any, categories: Any, names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean per-stimulus response change inside each category (boolean (n_stimuli, n_categories) membership)."""
    ch = np.asarray(change, dtype=np.float64)
    cat = np.asarray(categories, dtype=bool)
    if cat.ndim == 1:
        cat = cat[:, None]
    if cat.shape[0] != ch.shape[0]:
        raise ValueError(f"category membership covers {cat.shape[0]} stimuli, the changes {ch.shape[0]}")
    names = list(names) if names is not None else [str(k) for k in range(cat.shape[1])]
    if len(names) != cat.shape[1]:
        raise ValueError(f"{len(names)} names for {cat.shape[1]} categories")
    return {n: float(ch[cat[:, k]].mean()) if cat[:, k].any() else float("nan") for k, n in enumerate(names)}


def stratified_bootstrap_indices(labels: Any, n_boot: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """(n_boot, n) resamples with replacement drawn within each class, so every class keeps its count."""
    lab = _check_labels(labels)
    if n_boot < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_boot}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = np.empty((n_boot, lab.size), dtype=np.int64)
    pos = 0
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        out[:, pos:pos + members.size] = rng.choice(members, size=(n_boot, members.size), replace=True)
        pos += members.size
    return out


def percentile_ci(samples: Any, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of finite samples (NaN, NaN if none is finite)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
