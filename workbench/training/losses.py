"""Topographic losses: push simulated neighbours on a cortical sheet to behave alike.

1. ``spatial_correlation`` (TDANN form; Lee et al. 2020, Margalit et al. 2024): in random neighbourhoods of the
   sheet, the pairwise Pearson correlations of unit responses over the batch should follow 1/(d + 1) of their
   cortical distance d (mm). Loss = (1 - Pearson(response correlations, 1/(d + 1))) / 2, in [0, 1].
2. ``weight_smoothness`` (TopoLoss; Deb et al. 2025): the sheet of incoming-weight vectors of a layer's channels
   (laid out as the channel tile of the cortical sheet) should be close to its blurred self; blur = bilinear
   down-sampling by ``factor`` and up-sampling back. Loss = 1 - mean cosine similarity(W, blur(W)), in [0, 2].

Both are float32 whatever the autocast dtype, finite with finite gradients on constant responses or weights.

A loss is a registered ``nn.Module`` class ``Loss(sheet, <options>, model=None)`` with a ``needs_activations``
flag; its options are its constructor's keyword arguments, set under ``model.topography.<loss name>`` and checked
against the signature (``workbench.models.config.loss_options_schema``), so a plugin loss needs no other wiring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.sheet import CorticalSheet
from workbench.registry import Registry

__all__ = [
    "LOSSES", "spatial_correlation_loss", "pearson_rows", "SpatialCorrelationLoss", "WeightSmoothnessLoss",
    "sample_neighbourhoods", "TopographyObjective", "parse_topography", "weight_sheet",
]

_EPS = 1e-6
LOSSES: Registry[type] = Registry("topographic loss")


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Pearson correlation of matching rows of a and b (..., P); eps keeps constant rows at r = 0, finite grads."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1) + eps)
    return num / den


def spatial_correlation_loss(responses: torch.Tensor, positions: torch.Tensor, neighbourhoods: torch.Tensor,
                             eps: float = _EPS) -> torch.Tensor:
    """TDANN spatial correlation loss, averaged over neighbourhoods.

    responses: (batch, n_units) of one layer; positions: (n_units, 2) in mm; neighbourhoods: (m, k) unit indices.
    """
    if responses.ndim != 2 or responses.shape[1] != positions.shape[0]:
        raise ValueError(f"responses must be (batch, n_units={positions.shape[0]}), got {tuple(responses.shape)}")
    if responses.shape[0] < 2:
        raise ValueError("the spatial correlation loss needs a batch of at least 2 (correlations are over the batch)")
    # float32 even inside a bf16/fp16 autocast region: correlations of near-identical units need the mantissa.
    with torch.autocast(device_type=responses.device.type, enabled=False):
        x = responses.float()[:, neighbourhoods]                              # (B, m, k)
        x = x - x.mean(0, keepdim=True)
        # eps under the root: a unit with constant response gets a zero vector, not a 0/0.
        x = x / torch.sqrt((x * x).sum(0, keepdim=True) + eps)
        corr = torch.bmm(x.transpose(0, 1).transpose(1, 2), x.transpose(0, 1))  # (m, k, k)
        with torch.no_grad():
            # Target: 1/(d+1) over the off-diagonal pairs, centred and scaled to unit norm, zero on the diagonal.
            # Each pair appears twice in the symmetric matrix, which leaves the Pearson correlation unchanged,
            # and working on the full matrix avoids gathering (and scattering back) the upper triangle.
            pos = positions.float()[neighbourhoods]                           # (m, k, 2)
            k = neighbourhoods.shape[1]
            off = ~torch.eye(k, dtype=torch.bool, device=pos.device)
            target = 1.0 / (torch.cdist(pos, pos) + 1.0)
            n_pairs = k * (k - 1)
            target = torch.where(off, target - (target * off).sum((1, 2), keepdim=True) / n_pairs, 0.0)
            target = target / torch.sqrt((target * target).sum((1, 2), keepdim=True) + eps)
        diag = torch.diagonal(corr, dim1=1, dim2=2)
        total = corr.sum((1, 2)) - diag.sum(1)
        total_sq = (corr * corr).sum((1, 2)) - (diag * diag).sum(1)
        # sum of squared deviations from the off-diagonal mean; clamp: rounding may push it a hair below 0
        ss = (total_sq - total * total / n_pairs).clamp_min(0.0)
        r = (corr * target).sum((1, 2)) / torch.sqrt(ss + eps)
        return ((1.0 - r) / 2.0).mean()


def sample_neighbourhoods(positions: np.ndarray, size: int, n: int, seed: int = 0) -> np.ndarray:
    """n neighbourhoods of the ``size`` units nearest to random centre units (seeded), as an (n, size) index array."""
    from scipy.spatial import cKDTree

    n_units = len(positions)
    size = min(int(size), n_units)
    if size < 3:
        raise ValueError(f"a neighbourhood needs at least 3 units to correlate correlations with distance, got {size}")
    rng = np.random.default_rng(seed)
    centres = rng.choice(n_units, size=min(int(n), n_units), replace=False)
    _, idx = cKDTree(positions).query(positions[centres], k=size)
    return np.asarray(idx, dtype=np.int64).reshape(len(centres), size)


@LOSSES.register("spatial_correlation", citation=(
    "Margalit, E., Lee, H., Finzi, D., DiCarlo, J. J., Grill-Spector, K., & Yamins, D. L. K. (2024). A unifying "
    "framework for functional organization in early and higher ventral visual cortex. Neuron, 112(14), 2435-2451; "
    "Lee, H., et al. (2020). Topographic deep artificial neural networks reproduce the hallmarks of the primate "
    "inferior temporal cortex face processing network. bioRxiv 2020.07.09.185116."))
class SpatialCorrelationLoss(nn.Module):
    """Activation loss of one layer: needs the layer's output (batch, C, H, W) each step."""

    needs_activations = True

    def __init__(self, sheet: CorticalSheet, neighbourhood_size: int = 256, n_neighbourhoods: int = 8,
                 pool_size: int = 512, seed: int = 0, model: nn.Module | None = None):
        super().__init__()
        if n_neighbourhoods < 1:
            raise ValueError(f"n_neighbourhoods must be >= 1, got {n_neighbourhoods}")
        self.n_units = sheet.n_units
        self.n_neighbourhoods = int(n_neighbourhoods)
        pool = sample_neighbourhoods(sheet.positions, neighbourhood_size, pool_size, seed)
        # Buffers (not parameters, not in the state dict) so they follow the module to the GPU.
        self.register_buffer("positions", torch.as_tensor(sheet.positions, dtype=torch.float32), persistent=False)
        self.register_buffer("pool", torch.as_tensor(pool), persistent=False)
        # A private generator: drawing neighbourhoods never touches the global RNG, so weight 0 reproduces plain
        # training exactly, and every DDP rank draws the same neighbourhoods.
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        responses = activation.reshape(activation.shape[0], -1)
        if responses.shape[1] != self.n_units:
            raise ValueError(f"activation has {responses.shape[1]} units per image, the sheet {self.n_units}")
        pick = torch.randint(len(self.pool), (min(self.n_neighbourhoods, len(self.pool)),), generator=self.generator)
        return spatial_correlation_loss(responses, self.positions, self.pool[pick.to(self.pool.device)])


def _producing_weight(module: nn.Module, n_out: int) -> nn.Parameter:
    """The weight of the last Conv2d/Linear inside ``module`` with ``n_out`` outputs (what makes the layer's units)."""
    candidates = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features) == n_out]
    if not candidates:
        raise ValueError(f"no Conv2d/Linear with {n_out} outputs inside {type(module).__name__}; the weight "
                         "smoothness loss needs a layer that ends in a convolution or linear map")
    return candidates[-1].weight


def weight_sheet(weight: torch.Tensor, sheet: CorticalSheet) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the per-channel incoming-weight vectors on the channel tile: (fan_in, rows, cols) + occupied mask."""
    c = weight.shape[0]
    tr, tc = sheet.tile_shape
    flat = weight.reshape(c, -1).float()
    grid = flat.new_zeros(tr * tc, flat.shape[1])
    slots = torch.as_tensor(sheet.slot_of_channel, device=flat.device)
    grid = grid.index_copy(0, slots, flat)
    mask = torch.zeros(tr * tc, dtype=torch.bool, device=flat.device)
    mask[slots] = True
    return grid.T.reshape(-1, tr, tc), mask.reshape(tr, tc)


@LOSSES.register("weight_smoothness", citation=(
    "Deb, M., Deb, M., & Murty, N. A. R. (2025). TopoNets: High performing vision and language models with "
    "brain-like topography. ICLR 2025 (TopoLoss)."))
class WeightSmoothnessLoss(nn.Module):
    """TopoLoss-style weight smoothness of one layer (needs no activations)."""

    needs_activations = False

    def __init__(self, sheet: CorticalSheet, factor: float = 2.0, model: nn.Module | None = None):
        super().__init__()
        if model is None:
            raise ValueError("the weight smoothness loss needs the model to find the layer's weights")
        if not factor > 1:
            raise ValueError(f"factor must be > 1 (the sheet is down-sampled by it), got {factor}")
        c = sheet.unit_shape[0]
        self.sheet = sheet
        self.factor = float(factor)
        # Kept outside the module tree: the model owns these weights (no duplicate parameters or state-dict keys).
        self.__dict__["layer_module"] = model.get_submodule(sheet.layer)
        _producing_weight(self.layer_module, c)  # fail now, not in the first step
        tr, tc = sheet.tile_shape
        self.small = (max(1, int(round(tr / self.factor))), max(1, int(round(tc / self.factor))))

    def forward(self, activation: torch.Tensor | None = None) -> torch.Tensor:
        w = _producing_weight(self.layer_module, self.sheet.unit_shape[0])
        with torch.autocast(device_type=w.device.type, enabled=False):
            grid, mask = weight_sheet(w, self.sheet)
            tr, tc = self.sheet.tile_shape
            blurred = F.interpolate(F.interpolate(grid[None], size=self.small, mode="bilinear", align_corners=False),
                                    size=(tr, tc), mode="bilinear", align_corners=False)[0]
            cos = F.cosine_similarity(grid.reshape(grid.shape[0], -1), blurred.reshape(grid.shape[0], -1), dim=0,
                                      eps=_EPS)
            return 1.0 - cos[mask.reshape(-1)].mean()


# -- configuration -------------------------------------------------------------------------------------------------
@dataclass
class TopographyObjective:
    layer: str
    loss_name: str
    weight: float
    loss: nn.Module
    options: dict[str, Any] = field(default_factory=dict)


def parse_topography(model_cfg: dict, model: nn.Module, sheets: dict[str, CorticalSheet] | None = None
                     ) -> list[TopographyObjective]:
    """Validated objectives from ``model_cfg['topography']`` (layers, weight, loss, per-loss options).

    The keys are checked by ``workbench.models.config.parse_model_topography``; each loss's options are its
    constructor's keyword arguments (``loss_options_schema``), so a registered loss maps its own options."""
    from workbench.config import ConfigError
    from workbench.models import check_layers
    from workbench.models.config import parse_model_topography

    section, options = parse_model_topography(model_cfg.get("topography"), LOSSES)
    layers = section.layers
    if not layers:
        return []
    check_layers(model, layers)
    sheets = getattr(model, "cortical_sheets", {}) if sheets is None else sheets
    missing = [layer for layer in layers if layer not in sheets]
    if missing:
        raise KeyError(f"no cortical sheet for topography layer(s) {missing}; build them with "
                       "workbench.models.build_sheets(model, model_cfg)")
    objectives = []
    for layer in layers:
        loss_name = section.loss_of(layer)
        given = options.get(loss_name, {})
        try:
            loss = LOSSES.get(loss_name)(sheets[layer], model=model, **given)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad options model.topography.{loss_name} = {given} for layer {layer!r}: {err}"
                              ) from None
        objectives.append(TopographyObjective(layer, loss_name, section.weight_of(layer), loss, given))
    return objectives
