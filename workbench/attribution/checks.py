"""How much to trust a map: numbers, not pictures.

- ``completeness``: sum of attributions vs f(x) - f(baseline) per image (IG, DeepLift, the SHAP family).
- ``model_randomisation``: cascading model-parameter randomisation (Adebayo et al. 2018): randomise the layers from
  the top down, one more at each step, and correlate (Spearman) each map with the trained model's map. A method
  whose maps depend on what the model learned decorrelates; one that stays high is mostly an edge detector.
  Quantus (Hedström et al. 2023) uses the same default (|map|, Spearman, top-down); its follow-up work shows the
  test is sensitive to the similarity measure, so we report the full cascade rather than one pass/fail bit.
- ``deletion_insertion``: remove (deletion) or add (insertion) pixels in the order of the map and track the target
  (Petsiuk et al. 2018, RISE); compare the area under each curve with random pixel orders. A faithful map has a
  lower deletion AUC and a higher insertion AUC than random.
- ``method_agreement``: Spearman rank correlation between the maps of different methods, per image.

Each check is an entry of ``CHECKS`` (named like its switch in the attribute config's ``checks`` section) carrying its
citations; a stage cites the checks it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy.integrate import trapezoid
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from workbench.logs import progress_disabled

from workbench.attribution.methods import Attribution, method_class, prepare_inputs
from workbench.attribution.safety import safe_copy
from workbench.attribution.targets import TargetForward, as_target
from workbench.registry import Registry

__all__ = [
    "CHECKS", "spearman_rows", "completeness", "randomisation_layers", "model_randomisation", "RandomisationResult",
    "deletion_insertion", "FaithfulnessResult", "method_agreement", "reduce_maps",
]

CHECKS: Registry[Any] = Registry("attribution check")
ADEBAYO_2018 = "Adebayo et al. (2018). Sanity checks for saliency maps. NeurIPS."
PETSIUK_2018 = ("Petsiuk, Das & Saenko (2018). RISE: randomized input sampling for explanation of black-box models. "
                "BMVC.")
HEDSTROM_2023 = ("Hedström et al. (2023). Quantus: an explainable AI toolkit for responsible evaluation of neural "
                 "network explanations. JMLR 24(34).")
SUNDARARAJAN_2017 = "Sundararajan, Taly & Yan (2017). Axiomatic attribution for deep networks. ICML."


def reduce_maps(attributions: Attribution | np.ndarray, reduce: str = "abs") -> np.ndarray:
    """(N, H, W) maps from (N, C, H, W) attributions: 'sum' (signed), 'abs' (|channel sum|), 'abs_sum'."""
    if isinstance(attributions, Attribution):
        return attributions.maps(reduce)
    a = np.asarray(attributions)
    if a.ndim != 4:
        raise ValueError(f"attributions must be (N, C, H, W), got shape {a.shape}")
    return {"sum": lambda: a.sum(1), "abs": lambda: np.abs(a.sum(1)), "abs_sum": lambda: np.abs(a).sum(1)}[reduce]()


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between matching rows of (N, D) arrays (average ranks for ties; NaN if constant)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate maps of shapes {a.shape} and {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / denom, np.nan)


@CHECKS.register("completeness", citation=SUNDARARAJAN_2017,
                 description="sum of attributions vs f(x) - f(baseline), per image")
def completeness(attribution: Attribution) -> dict[str, Any]:
    """Per-image sum of attributions, f(x) - f(baseline) and their relative gap."""
    if attribution.delta is None:
        raise ValueError(f"{attribution.method} promises no completeness (no baseline or not a path method)")
    sums = attribution.attributions.reshape(len(attribution.attributions), -1).astype(np.float64).sum(1)
    rel = attribution.relative_completeness_error
    return {
        "sum_attributions": sums.tolist(),
        "output_difference": (attribution.outputs - attribution.baseline_outputs).tolist(),
        "relative_error": rel.tolist(),
        "relative_error_max": float(np.nanmax(rel)) if np.isfinite(rel).any() else float("nan"),
        "relative_error_median": float(np.nanmedian(rel)) if np.isfinite(rel).any() else float("nan"),
    }


# -- model-parameter randomisation ---------------------------------------------------------------------------------
def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomisation_layers(model: nn.Module, example: torch.Tensor, granularity: str = "children") -> list[str]:
    """Parameterised modules in top-down order (the reverse of the order they first run).

    'children': the model's direct children with parameters (one step per block); falls back to 'leaves' when the
    model has fewer than two. 'leaves': every leaf module with parameters.
    """
    counts_order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    handles = [m.register_forward_pre_hook(lambda mod, i: counts_order.append(names[id(mod)]) and None)
               for m in model.modules()]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    first_run = list(dict.fromkeys(counts_order))
    modules = dict(model.named_modules())
    if granularity not in ("children", "leaves"):
        raise ValueError(f"granularity must be 'children' or 'leaves', got {granularity!r}")
    children = [n for n, m in model.named_children() if _has_params(m)]
    if granularity == "children" and len(children) >= 2:
        chosen = set(children)
    else:
        chosen = {n for n, m in modules.items() if n and not list(m.children()) and _has_params(m)}
    ordered = [n for n in first_run if n in chosen]
    return ordered[::-1]


def _randomise(module: nn.Module, generator_seed: int) -> None:
    """Re-draw a module's parameters from its default initialisation (seeded); BN goes back to identity stats."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
        for p in module.parameters(recurse=True):
            if not torch.isfinite(p).all():
                raise RuntimeError("randomisation produced non-finite parameters")


@dataclass
class RandomisationResult:
    method: str
    layers: list[str]                   # step k randomises layers[:k + 1] (top-down)
    spearman: np.ndarray                # (n_steps, n_images)
    reduce: str = "abs"

    @property
    def mean(self) -> np.ndarray:
        return np.nanmean(self.spearman, axis=1)

    def summary(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "reduce": self.reduce,
            "spearman_mean": self.mean.tolist(),
            "spearman_per_image": self.spearman.tolist(),
            "spearman_fully_randomised": float(self.mean[-1]) if len(self.mean) else float("nan"),
        }


@CHECKS.register("randomisation", citation=(ADEBAYO_2018, HEDSTROM_2023),
                 description="cascading model-parameter randomisation, top-down, Spearman vs the trained map")
def model_randomisation(model: nn.Module, inputs: Any, target: Any, method: str, *, baselines: Any = None,
                        layers: Sequence[str] | None = None, granularity: str = "children", reduce: str = "abs",
                        seed: int = 0, original: Attribution | None = None, progress: bool = True,
                        method_options: dict[str, Any] | None = None) -> RandomisationResult:
    """Cascading randomisation: Spearman between the trained model's maps and the maps after randomising layers.

    ``layers`` (top-down) default to ``randomisation_layers(model, inputs, granularity)``. ``original`` reuses
    maps already computed on the trained model with the same method, target and options. ``method_options`` go
    to the method class (e.g. ``{"n_steps": 32}``).
    """
    cls = method_class(method)
    options = dict(method_options or {})
    x = prepare_inputs(model, inputs)
    if layers is None:
        layers = randomisation_layers(model, x, granularity)
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise KeyError(f"cannot randomise unknown layers {missing}; valid names: {[n for n in modules if n]}")
    if original is None:
        original = cls(model, target, **options).attribute(x, baselines, progress=False)
    reference = reduce_maps(original, reduce).reshape(len(x), -1)
    randomised, _ = safe_copy(model)
    rand_modules = dict(randomised.named_modules())
    rows = []
    bar = tqdm(layers, desc=f"randomisation {cls.name}", disable=progress_disabled(progress), leave=False)
    for step, name in enumerate(bar):
        _randomise(rand_modules[name], seed + step)
        maps = cls(randomised, target, **options).attribute(x, baselines, progress=False)
        rows.append(spearman_rows(reference, reduce_maps(maps, reduce).reshape(len(x), -1)))
    return RandomisationResult(cls.name, list(layers), np.asarray(rows).reshape(len(layers), len(x)), reduce)


# -- deletion / insertion --------------------------------------------------------------------------------------------
@dataclass
class FaithfulnessResult:
    fractions: np.ndarray               # (S + 1,) fraction of pixels removed / inserted
    deletion: np.ndarray                # (N, S + 1) target value along the map's order
    insertion: np.ndarray
    deletion_random: np.ndarray         # (N, S + 1) mean over random orders
    insertion_random: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def auc(self, curve: np.ndarray) -> np.ndarray:
        return trapezoid(curve, self.fractions, axis=1)

    def summary(self) -> dict[str, Any]:
        d, i = self.auc(self.deletion), self.auc(self.insertion)
        dr, ir = self.auc(self.deletion_random), self.auc(self.insertion_random)
        return {
            "deletion_auc": float(d.mean()), "deletion_auc_random": float(dr.mean()),
            "insertion_auc": float(i.mean()), "insertion_auc_random": float(ir.mean()),
            # positive = better than random for both (lower deletion, higher insertion)
            "deletion_gain": float((dr - d).mean()), "insertion_gain": float((i - ir).mean()),
            "deletion_better_than_random_fraction": float((d < dr).mean()),
            "insertion_better_than_random_fraction": float((i > ir).mean()),
            "deletion_auc_per_image": d.tolist(), "insertion_auc_per_image": i.tolist(),
            **self.extra,
        }


def _fill_images(x: torch.Tensor, fill: Any) -> torch.Tensor:
    if isinstance(fill, (int, float)):
        return torch.full_like(x, float(fill))
    # isinstance first: an image given as a numpy array compares elementwise with a string
    if isinstance(fill, str) and fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if isinstance(fill, str) and fill == "blur":
        from torchvision.transforms.functional import gaussian_blur

        k = max(3, (min(x.shape[-2:]) // 4) | 1)
        return gaussian_blur(x, kernel_size=[k, k], sigma=[k / 3.0, k / 3.0])
    if isinstance(fill, str):
        raise ValueError(f"unknown fill {fill!r}: use a number, 'mean', 'blur' or an image of shape "
                         f"{tuple(x.shape[1:])}")
    f = torch.as_tensor(np.asarray(fill), dtype=x.dtype)
    if f.shape not in (x.shape[1:], x.shape):
        raise ValueError(f"fill must be a number, 'mean', 'blur' or an image of shape {tuple(x.shape[1:])}")
    return f.expand_as(x).clone()


@torch.no_grad()
def _curves(forward: TargetForward, x: torch.Tensor, fill: torch.Tensor, order: np.ndarray, n_steps: int,
            batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Target values along deletion and insertion for pixel ``order`` (N, H*W), most important first."""
    n, _, h, w = x.shape
    counts = np.round(np.linspace(0, h * w, n_steps + 1)).astype(int)
    # rank_of[i, p] = position of pixel p in image i's order; pixel p is 'taken' at step k if rank < counts[k].
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(h * w)[None, :].repeat(n, 0), axis=1)
    rank_of = torch.from_numpy(rank_of).reshape(n, 1, h, w)
    deletion, insertion = np.empty((n, n_steps + 1)), np.empty((n, n_steps + 1))
    jobs = [(i, k) for i in range(n) for k in range(n_steps + 1)]
    for start in range(0, len(jobs), batch_size):
        part = jobs[start:start + batch_size]
        idx = torch.tensor([i for i, _ in part])
        taken = rank_of[idx] < torch.tensor([counts[k] for _, k in part]).view(-1, 1, 1, 1)
        xi, fi = x[idx], fill[idx]
        deleted = torch.where(taken, fi, xi).to(device)
        inserted = torch.where(taken, xi, fi).to(device)
        d = forward(deleted)[:, 0].double().cpu().numpy()
        s = forward(inserted)[:, 0].double().cpu().numpy()
        for (i, k), dv, sv in zip(part, d, s):
            deletion[i, k], insertion[i, k] = dv, sv
    return deletion, insertion


@CHECKS.register("faithfulness", citation=PETSIUK_2018,
                 description="deletion / insertion curves in the map's pixel order vs random orders")
def deletion_insertion(model: nn.Module, inputs: Any, attributions: Attribution | np.ndarray, target: Any, *,
                       n_steps: int = 20, fill: Any = 0.0, n_random: int = 3, reduce: str = "sum", seed: int = 0,
                       batch_size: int = 64, device: str | None = None) -> FaithfulnessResult:
    """Deletion and insertion curves of ``target`` for pixels ordered by the map (and by random orders).

    Pixels are spatial locations (all channels move together), ordered by the channel-summed map, largest first
    (``reduce='sum'`` ranks positive evidence first; 'abs' ranks by magnitude). Removed pixels take the value of
    ``fill``: a number (0 = the mean image in normalised input space), 'mean' (per-image channel means), 'blur',
    or an image.
    """
    from workbench.utils import get_device

    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    x = prepare_inputs(model, inputs)
    maps = reduce_maps(attributions, reduce)
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps of shape {maps.shape} do not match inputs {tuple(x.shape)}")
    dev = get_device(device)
    safe, _ = safe_copy(model, dev)
    forward = TargetForward(safe, as_target(target), x[:1].to(dev))
    fill_x = _fill_images(x, fill)
    flat = maps.reshape(len(x), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    deletion, insertion = _curves(forward, x, fill_x, order, int(n_steps), batch_size, dev)
    rng = np.random.default_rng(seed)
    rand_d, rand_i = [], []
    for _ in range(max(1, int(n_random))):
        rorder = np.argsort(rng.random(flat.shape), axis=1)
        d, i = _curves(forward, x, fill_x, rorder, int(n_steps), batch_size, dev)
        rand_d.append(d)
        rand_i.append(i)
    forward.remove()
    return FaithfulnessResult(np.linspace(0, 1, int(n_steps) + 1), deletion, insertion,
                              np.mean(rand_d, 0), np.mean(rand_i, 0),
                              extra={"fill": fill if isinstance(fill, (int, float, str)) else "image",
                                     "reduce": reduce, "n_random": int(n_random), "n_steps": int(n_steps)})


# -- agreement between methods ---------------------------------------------------------------------------------------
@CHECKS.register("agreement", description="Spearman rank correlation between the maps of every pair of methods")
def method_agreement(attributions: dict[str, Attribution | np.ndarray], reduce: str = "abs") -> dict[str, Any]:
    """Mean (over images) Spearman correlation between every pair of methods' maps."""
    names = list(attributions)
    maps = {n: reduce_maps(a, reduce) for n, a in attributions.items()}
    shapes = {m.shape for m in maps.values()}
    if len(shapes) > 1:
        raise ValueError(f"methods produced maps of different shapes: {shapes}")
    k = len(names)
    mean = np.eye(k)
    per_image: dict[str, list[float]] = {}
    for a in range(k):
        for b in range(a + 1, k):
            rho = spearman_rows(maps[names[a]].reshape(len(maps[names[a]]), -1),
                                maps[names[b]].reshape(len(maps[names[b]]), -1))
            mean[a, b] = mean[b, a] = float(np.nanmean(rho))
            per_image[f"{names[a]}~{names[b]}"] = rho.tolist()
    return {"methods": names, "reduce": reduce, "spearman_mean": mean.tolist(), "spearman_per_image": per_image}
