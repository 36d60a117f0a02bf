"""A simulated cortical sheet: a 2-D position for every unit of one layer.

Layout (TDANN, Lee et al. 2020; Margalit et al. 2024): the sheet is cut into an H x W grid of retinotopic cells,
one per feature-map location, so the image position sets the coarse cortical position; inside each cell the C
channels tile a ``tile_rows x tile_cols`` lattice of slots. The same channel sits in the same slot of every cell:
a convolution shares its weights across space, so only a tiling that repeats across cells can be made smooth by
learning. A seeded jitter breaks the exact lattice. Positions are in millimetres of sheet.

Units are ordered as a flattened (C, H, W) array, exactly like ``activation.reshape(n, -1)`` of an NCHW tensor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["CorticalSheet", "channel_tile_shape"]


def channel_tile_shape(n_channels: int) -> tuple[int, int]:
    """The channel tile (rows, cols) with rows * cols == n_channels exactly and rows the largest divisor <= sqrt.

    This is TopoLoss's cortical sheet (Deb et al. 2025, ``find_cortical_sheet_size``): every slot holds a channel,
    so no empty slot takes part in the weight-smoothness blur, and channel c sits at (c // cols, c % cols) as in its
    ``(height width)`` reshape. A channel count without a near-square factor pair gets an elongated tile
    (10 -> 2 x 5, a prime p -> 1 x p); set the sheet's ``grid`` to choose another tile.
    """
    if n_channels < 1:
        raise ValueError(f"a layer needs at least one channel, got {n_channels}")
    rows = int(math.isqrt(n_channels))
    while n_channels % rows:
        rows -= 1
    return rows, n_channels // rows


class CorticalSheet:
    """Unit positions for one layer with unit shape (C, H, W) (or (n,) for a fully connected layer).

    Parameters
    ----------
    unit_shape: (C, H, W) of the layer output (without batch); (n,) is treated as (n, 1, 1).
    size_mm: side length of the square sheet in mm (TDANN uses ~ 1.3-70 mm depending on the area; only the ratio
        of distances to the loss's 1/(d+1) matters, so pick it so that a neighbourhood spans a few mm).
    grid: optional (rows, cols) of unit slots for the whole sheet. It must hold the layer: rows = H * tile_rows and
        cols = W * tile_cols with tile_rows * tile_cols >= C. None sizes the tile with ``channel_tile_shape`` (no
        empty slots).
    jitter: uniform jitter of every position, as a fraction of the slot spacing (0 = exact lattice, < 0.5 keeps
        slots from crossing).
    seed: seed of the jitter (and of ``shuffle_channels``).
    shuffle_channels: assign channels to tile slots in a seeded random order instead of channel order.
    slot_of_channel: an explicit tile slot (row-major index) for each channel, e.g. from the position
        pre-optimisation (``workbench.models.preoptimise``); overrides ``shuffle_channels``.
    layer: the layer's name, kept for messages and the checkpoint.
    """

    def __init__(self, unit_shape: Sequence[int], size_mm: float = 10.0, grid: Sequence[int] | None = None,
                 jitter: float = 0.1, seed: int = 0, shuffle_channels: bool = False, layer: str = "",
                 slot_of_channel: Sequence[int] | np.ndarray | None = None):
        shape = tuple(int(s) for s in unit_shape)
        if len(shape) == 1:
            shape = (shape[0], 1, 1)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"unit_shape must be (C, H, W) or (n,) with positive sizes, got {tuple(unit_shape)}")
        if not (np.isfinite(size_mm) and size_mm > 0):
            raise ValueError(f"size_mm must be a positive number of millimetres, got {size_mm}")
        if not (0.0 <= jitter < 0.5):
            raise ValueError(f"jitter must be in [0, 0.5) of the slot spacing, got {jitter}")
        c, h, w = shape
        name = f"layer {layer!r}" if layer else "the layer"
        if grid is None:
            tile_rows, tile_cols = channel_tile_shape(c)
        else:
            if len(grid) != 2 or min(int(g) for g in grid) < 1:
                raise ValueError(f"grid must be (rows, cols) of unit slots, got {grid}")
            rows, cols = int(grid[0]), int(grid[1])
            tile_rows, tile_cols = rows // h, cols // w
            if rows % h or cols % w or tile_rows * tile_cols < c:
                need_r, need_c = channel_tile_shape(c)
                raise ValueError(
                    f"sheet too small for {name}: a grid of {rows}x{cols} slots must split into {h}x{w} retinotopic "
                    f"cells of at least {c} slots each (unit shape {shape}); got cells of {rows / h:g}x{cols / w:g}. "
                    f"Use e.g. grid: [{h * need_r}, {w * need_c}], or grid: null to size the sheet automatically."
                )
        self.layer = layer
        self.unit_shape = shape
        self.size_mm = float(size_mm)
        self.tile_shape = (tile_rows, tile_cols)
        self.grid = (h * tile_rows, w * tile_cols)
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.shuffle_channels = bool(shuffle_channels)
        self.given_slots = None if slot_of_channel is None else self._checked_slots(slot_of_channel, name)
        self.positions = self._layout()

    # -- layout ----------------------------------------------------------------------------------------------
    @property
    def spacing_mm(self) -> float:
        """Distance between neighbouring slots (the sheet is square in mm, slots are square if the grid is)."""
        return self.size_mm / max(self.grid)

    @property
    def n_units(self) -> int:
        c, h, w = self.unit_shape
        return c * h * w

    def _checked_slots(self, slots, name: str) -> np.ndarray:
        slots = np.asarray(slots)
        c, n_slots = self.unit_shape[0], self.tile_shape[0] * self.tile_shape[1]
        if (slots.shape != (c,) or not np.issubdtype(slots.dtype, np.integer) or len(np.unique(slots)) != c
                or slots.min() < 0 or slots.max() >= n_slots):
            raise ValueError(f"slot_of_channel for {name} must give each of its {c} channels a distinct tile slot in "
                             f"0..{n_slots - 1}, got {slots.tolist()[:8]}{'...' if slots.size > 8 else ''}")
        return slots.astype(np.int64)

    def _layout(self) -> np.ndarray:
        c, h, w = self.unit_shape
        tr, tc = self.tile_shape
        rng = np.random.default_rng(self.seed)
        slot_of_channel = rng.permutation(tr * tc)[:c] if self.shuffle_channels else np.arange(c)
        if self.given_slots is not None:
            slot_of_channel = self.given_slots
        self.slot_of_channel = slot_of_channel  # channel -> slot index in the tile (row-major)
        slot_row, slot_col = np.divmod(slot_of_channel, tc)
        # (C, H, W) broadcast: row = cell row * tile rows + slot row, same for columns.
        rows = np.arange(h)[None, :, None] * tr + slot_row[:, None, None]
        cols = np.arange(w)[None, None, :] * tc + slot_col[:, None, None]
        rows, cols = np.broadcast_to(rows, (c, h, w)), np.broadcast_to(cols, (c, h, w))
        xy = np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1).astype(np.float64) + 0.5
        if self.jitter > 0:
            xy += rng.uniform(-self.jitter, self.jitter, size=xy.shape)
        return (xy * self.spacing_mm).astype(np.float32)

    # -- checkpoint --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        import torch

        return {
            "layer": self.layer, "unit_shape": list(self.unit_shape), "size_mm": self.size_mm,
            "grid": list(self.grid), "jitter": self.jitter, "seed": self.seed,
            "shuffle_channels": self.shuffle_channels, "positions": torch.from_numpy(self.positions.copy()),
            "slot_of_channel": torch.from_numpy(np.asarray(self.slot_of_channel, dtype=np.int64).copy()),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CorticalSheet":
        sheet = cls(d["unit_shape"], size_mm=d["size_mm"], grid=d["grid"], jitter=d["jitter"], seed=d["seed"],
                    shuffle_channels=d.get("shuffle_channels", False), layer=d.get("layer", ""),
                    slot_of_channel=_as_numpy(d.get("slot_of_channel")))
        stored = d.get("positions")
        if stored is not None:
            # The stored positions are the truth (a future layout change must not move a trained model's units).
            stored = _as_numpy(stored)
            if stored.shape != sheet.positions.shape:
                raise ValueError(f"stored positions have shape {stored.shape}, expected {sheet.positions.shape}")
            sheet.positions = np.asarray(stored, dtype=np.float32)
        return sheet

    def __repr__(self) -> str:
        return (f"CorticalSheet(layer={self.layer!r}, unit_shape={self.unit_shape}, grid={self.grid}, "
                f"size_mm={self.size_mm:g})")


def _as_numpy(value: Any) -> np.ndarray | None:
    """A stored tensor (or list) as a numpy array; None stays None (checkpoints written before the field)."""
    if value is None:
        return None
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
