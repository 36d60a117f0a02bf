"""Which units to lesion: selectivity-ranked sets, cortical disks, and their size-matched random controls.

``SELECTIONS`` is the registry of lesion selections the intervene stage runs: selective ones (``top_k``,
``disk_peak``), each naming the size-matched control it is compared with (``random``, ``random_disk``). ``SITES``
holds the ways of tiling a layer into lesion sites for interventional alignment (``disk``, ``top_k``). A new
selection is one class in one module (see CONTRIBUTING.md, "Adding a lesion selection"):

    @SELECTIONS.register("least_selective", citation="...", description="...")
    class LeastSelective(SelectiveLesion):
        control = "random"

        def choose(self, layer, size, selectivity, label):
            return Selection(np.argsort(selectivity)[:resolve_size(size, layer.n_units)], layer.n_units, ...)

All selections are built from plain arrays, so they work for any model:

    selectivity (n_units,)   e.g. a category d' map from the 92 images, flattened in (C, H, W) order
    positions   (n_units, 2) unit positions on the cortical sheet (``model.cortical_sheets[layer].positions``)

The lesion designs follow the ITN lesion experiments (Blauch, Behrmann & Plaut 2022, PNAS): a *topographic* lesion
is the set of units nearest to a (smoothed) selectivity peak on the sheet; a *metric-ordered* lesion takes the most
selective units wherever they are; the controls are a random set of the same size and a disk of the same size
around a random centre. Sizes are given as a unit count (int) or a fraction of the layer (float in (0, 1]), so
topographic, ranked and random lesions of one size remove exactly the same number of units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from workbench.registry import Registry

__all__ = [
    "Selection", "resolve_size", "category_dprime", "top_k_selective", "smooth_on_sheet", "selectivity_peak",
    "disk", "disk_around_peak", "random_units", "random_disk", "size_sweep", "sheet_positions",
    "stratified_halves", "farthest_point_centers", "LesionLayer", "SelectiveLesion", "ControlLesion", "LesionSites",
    "SELECTIONS", "SITES", "site_choice",
]


@dataclass(frozen=True, eq=False)
class Selection:
    """A non-empty set of units of one layer (flat indices in (C, H, W) order) and how it was chosen."""

    units: np.ndarray
    n_units: int
    layer: str | None = None
    kind: str = "custom"
    label: str | None = None
    center: tuple[float, float] | None = None
    radius: float | None = None
    seed: int | None = None
    unit_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        units = np.unique(np.asarray(self.units, dtype=np.int64).reshape(-1))
        if units.size == 0:
            raise ValueError(f"empty {self.kind} selection{self._where()}: a lesion needs at least one unit "
                             "(increase the size / radius)")
        if units[0] < 0 or units[-1] >= self.n_units:
            raise ValueError(f"unit index {int(units[-1] if units[-1] >= self.n_units else units[0])} out of range "
                             f"for a layer of {self.n_units} units{self._where()}")
        if self.unit_shape is not None and int(np.prod(self.unit_shape)) != self.n_units:
            raise ValueError(f"unit_shape {self.unit_shape} does not hold {self.n_units} units")
        object.__setattr__(self, "units", units)

    def _where(self) -> str:
        return f" in layer {self.layer!r}" if self.layer else ""

    def __len__(self) -> int:
        return int(self.units.size)

    @property
    def fraction(self) -> float:
        return len(self) / self.n_units

    def mask(self) -> np.ndarray:
        m = np.zeros(self.n_units, dtype=bool)
        m[self.units] = True
        return m

    def summary(self) -> dict[str, Any]:
        """JSON-able description (without the unit list)."""
        out = {"kind": self.kind, "layer": self.layer, "label": self.label, "n_units": len(self),
               "fraction": round(self.fraction, 6)}
        if self.center is not None:
            out["center_mm"] = [float(self.center[0]), float(self.center[1])]
        if self.radius is not None:
            out["radius_mm"] = float(self.radius)
        if self.seed is not None:
            out["seed"] = int(self.seed)
        out.update(self.info)
        return out


# -- helpers -----------------------------------------------------------------------------------------------------

def resolve_size(size: int | float, n_units: int) -> int:
    """A lesion size as a unit count: ints are counts, floats in (0, 1] are fractions of the layer."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ValueError(f"lesion size must be a unit count (int) or a fraction of the layer (float), got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not (0.0 < size <= 1.0):
            raise ValueError(f"a fractional lesion size must lie in (0, 1], got {size}")
        count = int(round(float(size) * n_units))
        if count == 0:
            raise ValueError(f"a lesion of {size:g} of {n_units} units is empty; use a larger fraction "
                             f"(at least {1 / n_units:.2g})")
        return count
    count = int(size)
    if count < 1:
        raise ValueError(f"empty selection: a lesion needs at least one unit, got size {count}")
    if count > n_units:
        raise ValueError(f"lesion size {count} exceeds the {n_units} units of the layer")
    return count


def _check_map(selectivity: Any, name: str = "selectivity") -> np.ndarray:
    sel = np.asarray(selectivity, dtype=np.float64)
    if sel.ndim != 1:
        sel = sel.reshape(-1) if sel.ndim > 1 else sel
    if sel.ndim != 1 or sel.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array over units, got shape {np.shape(selectivity)}")
    if not np.isfinite(sel).any():
        raise ValueError(f"{name} has no finite value")
    return sel


def _check_positions(positions: Any, n_units: int | None = None) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (n_units, 2) sheet coordinates, got shape {pos.shape}")
    if n_units is not None and pos.shape[0] != n_units:
        raise ValueError(f"positions hold {pos.shape[0]} units but the selectivity map has {n_units}; they must "
                         "describe the same layer in the same (C, H, W) order")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain NaN or inf")
    return pos


def sheet_positions(model: Any, layer: str) -> np.ndarray:
    """``model.cortical_sheets[layer].positions`` as an (n_units, 2) array, or a clear error if there is none."""
    sheets = getattr(model, "cortical_sheets", None) or {}
    if layer not in sheets:
        have = sorted(sheets) if sheets else "none"
        raise ValueError(f"layer {layer!r} has no cortical sheet (sheets exist for: {have}), so a disk lesion is "
                         "undefined there; use a selectivity-ranked or random lesion, or add the layer to "
                         "model.topography.layers")
    pos = sheets[layer].positions
    pos = pos.detach().cpu().numpy() if hasattr(pos, "detach") else np.asarray(pos)
    return _check_positions(pos)


def category_dprime(responses: Any, labels: Any, eps: float = 1e-8) -> np.ndarray:
    """Selectivity d' of every unit for each category: (mean_in - mean_out) / sqrt((var_in + var_out) / 2).

    responses: (n_stimuli, n_units). labels: boolean (n_stimuli,) for one category or (n_stimuli, n_categories);
    or integer class labels (n_stimuli,) giving one-vs-rest d' for every class 0..max. Returns
    (n_categories, n_units); units that do not vary give 0 (not +-inf). The d' itself is
    ``workbench.models.topography.selectivity(..., "dprime")``, one category at a time.
    """
    x = np.asarray(responses, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"responses must be (n_stimuli, n_units), got shape {x.shape}")
    lab = np.asarray(labels)
    if lab.dtype != bool and lab.ndim == 1 and np.issubdtype(lab.dtype, np.integer):
        lab = lab[:, None] == np.arange(int(lab.max()) + 1)[None, :]
    lab = lab.astype(bool)
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.shape[0] != x.shape[0]:
        raise ValueError(f"labels cover {lab.shape[0]} stimuli but responses have {x.shape[0]}")
    n_in = lab.sum(0)
    if (n_in < 2).any() or (lab.shape[0] - n_in < 2).any():
        raise ValueError("every category needs at least 2 stimuli inside and 2 outside it to compute d'")
    from workbench.models.topography import selectivity

    out = np.empty((lab.shape[1], x.shape[1]))
    for k in range(lab.shape[1]):
        out[k] = selectivity(x, lab[:, k], "dprime", eps=eps)
    return out


# -- selectivity-ranked ---------------------------------------------------------------------------------------------

def top_k_selective(selectivity: Any, size: int | float, *, layer: str | None = None, label: str | None = None,
                    unit_shape: Sequence[int] | None = None) -> Selection:
    """The ``size`` most selective units (largest values of ``selectivity``; NaN never chosen)."""
    sel = _check_map(selectivity)
    k = resolve_size(size, sel.size)
    finite = np.isfinite(sel)
    if finite.sum() < k:
        raise ValueError(f"only {int(finite.sum())} units have a finite selectivity, fewer than the {k} requested")
    ranked = np.argsort(-np.where(finite, sel, -np.inf), kind="stable")[:k]
    return Selection(ranked, sel.size, layer=layer, kind="top_k", label=label,
                     unit_shape=tuple(unit_shape) if unit_shape is not None else None,
                     info={"min_selectivity": float(sel[ranked].min())})


# -- topographic ----------------------------------------------------------------------------------------------------

def smooth_on_sheet(values: Any, positions: Any, sigma: float, chunk: int = 2048) -> np.ndarray:
    """Gaussian-weighted average of ``values`` over sheet neighbours (sigma in sheet units; NaN ignored)."""
    vals = _check_map(values, "values")
    pos = _check_positions(positions, vals.size)
    if not (sigma > 0):
        raise ValueError(f"smoothing sigma must be positive (sheet units), got {sigma}")
    finite = np.isfinite(vals)
    v = np.where(finite, vals, 0.0)
    out = np.empty_like(vals)
    for start in range(0, vals.size, chunk):
        d2 = ((pos[start:start + chunk, None, :] - pos[None, :, :]) ** 2).sum(-1)
        w = np.exp(-d2 / (2.0 * sigma ** 2)) * finite[None, :]
        out[start:start + chunk] = (w @ v) / np.maximum(w.sum(1), 1e-300)
    return out


def selectivity_peak(selectivity: Any, positions: Any, smoothing_sigma: float | None = None) -> tuple[np.ndarray, int]:
    """The sheet position (and unit index) of the maximum of the (optionally smoothed) selectivity map."""
    sel = _check_map(selectivity)
    pos = _check_positions(positions, sel.size)
    smoothed = smooth_on_sheet(sel, pos, smoothing_sigma) if smoothing_sigma else sel
    idx = int(np.nanargmax(smoothed))
    return pos[idx].copy(), idx


def disk(positions: Any, center: Sequence[float], *, radius: float | None = None, size: int | float | None = None,
         layer: str | None = None, kind: str = "disk", label: str | None = None, seed: int | None = None,
         unit_shape: Sequence[int] | None = None) -> Selection:
    """Units within ``radius`` of ``center`` on the sheet, or the ``size`` units nearest to it (give exactly one).

    The nearest-``size`` form is the size-matched disk of the ITN lesion experiments; its effective radius (the
    distance to the farthest unit taken) is recorded.
    """
    pos = _check_positions(positions)
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ValueError(f"center must be a finite (x, y) sheet position, got {center!r}")
    if (radius is None) == (size is None):
        raise ValueError("give exactly one of radius (sheet units) or size (unit count / fraction) for a disk")
    dist = np.sqrt(((pos - c) ** 2).sum(1))
    if radius is not None:
        if not (radius > 0):
            raise ValueError(f"disk radius must be positive, got {radius}")
        units = np.flatnonzero(dist <= radius)
        if units.size == 0:
            raise ValueError(f"empty selection: no unit lies within {radius:g} of {tuple(c)} "
                             f"(nearest is {dist.min():.3g} away); increase the radius")
        eff_radius = float(radius)
    else:
        k = resolve_size(size, pos.shape[0])
        units = np.argsort(dist, kind="stable")[:k]
        eff_radius = float(dist[units].max())
    return Selection(units, pos.shape[0], layer=layer, kind=kind, label=label, center=(float(c[0]), float(c[1])),
                     radius=eff_radius, seed=seed, unit_shape=tuple(unit_shape) if unit_shape is not None else None)


def disk_around_peak(selectivity: Any, positions: Any, *, radius: float | None = None,
                     size: int | float | None = None, smoothing_sigma: float | None = None, layer: str | None = None,
                     label: str | None = None, unit_shape: Sequence[int] | None = None) -> Selection:
    """A disk on the cortical sheet centred on the peak of the (smoothed) selectivity map."""
    center, peak_unit = selectivity_peak(selectivity, positions, smoothing_sigma)
    sel = disk(positions, center, radius=radius, size=size, layer=layer, kind="disk_peak", label=label,
               unit_shape=unit_shape)
    sel.info["peak_unit"] = peak_unit
    return sel


# -- controls -------------------------------------------------------------------------------------------------------

def _rng(seed: int | np.random.Generator | None) -> tuple[np.random.Generator, int | None]:
    if isinstance(seed, np.random.Generator):
        return seed, None
    return np.random.default_rng(seed), seed


def random_units(n_units: int, size: int | float, seed: int | np.random.Generator | None = None, *,
                 exclude: Any = None, layer: str | None = None, label: str | None = None,
                 unit_shape: Sequence[int] | None = None) -> Selection:
    """``size`` units drawn uniformly without replacement (optionally never from ``exclude``)."""
    if int(n_units) < 1:
        raise ValueError(f"n_units must be positive, got {n_units}")
    n_units = int(n_units)
    k = resolve_size(size, n_units)
    pool = np.arange(n_units)
    if exclude is not None:
        ex = exclude.units if isinstance(exclude, Selection) else np.asarray(exclude, dtype=np.int64)
        pool = np.setdiff1d(pool, ex)
    if pool.size < k:
        raise ValueError(f"only {pool.size} units are left to draw {k} random units from")
    rng, s = _rng(seed)
    return Selection(rng.choice(pool, size=k, replace=False), n_units, layer=layer, kind="random", label=label,
                     seed=s, unit_shape=tuple(unit_shape) if unit_shape is not None else None)


def random_disk(positions: Any, *, radius: float | None = None, size: int | float | None = None,
                seed: int | np.random.Generator | None = None, avoid: Sequence[float] | None = None,
                min_distance: float = 0.0, layer: str | None = None, label: str | None = None,
                unit_shape: Sequence[int] | None = None) -> Selection:
    """A disk of the same radius / size around a random unit's position (the ITN random structured control).

    ``avoid`` and ``min_distance`` keep the random centre at least that far from a point (e.g. the selectivity peak).
    """
    pos = _check_positions(positions)
    rng, s = _rng(seed)
    candidates = np.arange(pos.shape[0])
    if avoid is not None and min_distance > 0:
        far = np.sqrt(((pos - np.asarray(avoid, dtype=np.float64)) ** 2).sum(1)) >= min_distance
        candidates = candidates[far]
        if candidates.size == 0:
            raise ValueError(f"no unit lies {min_distance:g} or more from {tuple(avoid)}; lower min_distance")
    center = pos[rng.choice(candidates)]
    return disk(pos, center, radius=radius, size=size, layer=layer, kind="random_disk", label=label, seed=s,
                unit_shape=unit_shape)


def size_sweep(make_selection: Callable[[int | float], Selection],
               sizes: Iterable[int | float]) -> list[Selection]:
    """One selection per lesion size, e.g. ``size_sweep(lambda s: top_k_selective(d, s), [0.01, 0.05, 0.1])``.

    Sizes must increase strictly, so the sweep is a curve of growing lesions.
    """
    sizes = list(sizes)
    if not sizes:
        raise ValueError("a lesion-size sweep needs at least one size")
    out = [make_selection(s) for s in sizes]
    counts = [len(s) for s in out]
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"lesion sizes must grow strictly along the sweep, got unit counts {counts}")
    return out


# -- splits and site centres ----------------------------------------------------------------------------------------

def stratified_halves(labels: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted index sets, each holding (about) half of every class (the first gets the odd one).

    One half measures selectivity (which units a lesion takes), the other the lesion's effect, so an effect is never
    measured on the images that chose the units."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = (members.size + 1) // 2
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def farthest_point_centers(positions: Any, n: int, seed: int) -> np.ndarray:
    """n sheet positions spread evenly: greedy farthest-point sampling from a seeded random start."""
    positions = _check_positions(positions)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(positions)))]
    dist = np.linalg.norm(positions - positions[chosen[0]], axis=1)
    for _ in range(1, min(n, len(positions))):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(positions - positions[nxt], axis=1))
    return positions[chosen]


# -- the registry of lesion selections ------------------------------------------------------------------------------

BLAUCH2022 = ("Blauch, N. M., Behrmann, M., & Plaut, D. C. (2022). A connectivity-constrained computational account "
              "of topographic organization in primate high-level visual cortex. PNAS, 119(3), e2112566119.")
AFRAZ2015 = ("Afraz, A., Boyden, E. S., & DiCarlo, J. J. (2015). Optogenetic and pharmacological suppression of "
             "spatial clusters of face neurons reveal their causal role in face gender discrimination. PNAS, 112(21), "
             "6730-6735.")
SADAGOPAN2017 = ("Sadagopan, S., Zarco, W., & Freiwald, W. A. (2017). A causal relationship between face-patch "
                 "activity and face-detection behavior. eLife, 6, e18558.")
RAJALINGHAM2019 = ("Rajalingham, R., & DiCarlo, J. J. (2019). Reversible inactivation of different millimeter-scale "
                   "regions of primate IT results in different patterns of core object recognition deficits. Neuron, "
                   "102(2), 493-505.")


@dataclass(frozen=True, eq=False)
class LesionLayer:
    """The layer a lesion study removes units from, as a selection sees it."""

    name: str
    unit_shape: tuple[int, ...]
    positions: np.ndarray | None = None    # (n_units, 2) cortical-sheet positions; None: the layer has no sheet
    smoothing_sigma: float | None = None   # sheet units: smoothing of a selectivity map before picking its peak

    @property
    def n_units(self) -> int:
        return int(np.prod(self.unit_shape))

    @property
    def has_sheet(self) -> bool:
        return self.positions is not None


class SelectiveLesion:
    """A lesion chosen by a category's selectivity map; compared with the size-matched control named by
    ``control`` (a registered ``ControlLesion``)."""

    control: ClassVar[str] = "random"
    needs_sheet: ClassVar[bool] = False    # not run on a layer without a cortical sheet

    def choose(self, layer: LesionLayer, size: int | float, selectivity: np.ndarray, label: str) -> Selection:
        """``size`` (a count, or a fraction of the layer) units of ``layer`` for category ``label``."""
        raise NotImplementedError


class ControlLesion:
    """A size-matched control lesion: ``n_random`` seeded draws per lesion size."""

    needs_sheet: ClassVar[bool] = False
    # added to every draw's seed, so that two controls never share their random draws
    seed_offset: ClassVar[int] = 0

    def choose(self, layer: LesionLayer, size: int | float, seed: int) -> Selection:
        raise NotImplementedError


SELECTIONS: Registry[type] = Registry("lesion selection")


@SELECTIONS.register("top_k", citation=BLAUCH2022,
                     description="the most selective units, wherever they lie (ITN's metric-ordered lesion)")
class TopK(SelectiveLesion):
    control = "random"

    def choose(self, layer, size, selectivity, label):
        return top_k_selective(selectivity, size, layer=layer.name, label=label, unit_shape=layer.unit_shape)


@SELECTIONS.register("disk_peak", citation=(BLAUCH2022, AFRAZ2015, SADAGOPAN2017),
                     description="the disk of the cortical sheet around the selectivity peak (ITN's topographic "
                                 "lesion; the model's counterpart of silencing a face patch)")
class DiskPeak(SelectiveLesion):
    control = "random_disk"
    needs_sheet = True

    def choose(self, layer, size, selectivity, label):
        return disk_around_peak(selectivity, layer.positions, size=size, smoothing_sigma=layer.smoothing_sigma,
                                layer=layer.name, label=label, unit_shape=layer.unit_shape)


@SELECTIONS.register("random", citation=BLAUCH2022, description="units drawn uniformly (size-matched control)")
class RandomUnits(ControlLesion):
    seed_offset = 0

    def choose(self, layer, size, seed):
        return random_units(layer.n_units, size, seed=seed, layer=layer.name, unit_shape=layer.unit_shape)


@SELECTIONS.register("random_disk", citation=BLAUCH2022,
                     description="a disk of the same size around a random unit's sheet position (size-matched "
                                 "structured control)")
class RandomDisk(ControlLesion):
    needs_sheet = True
    seed_offset = 500

    def choose(self, layer, size, seed):
        return random_disk(layer.positions, size=size, seed=seed, layer=layer.name, unit_shape=layer.unit_shape)


# -- lesion sites for interventional alignment ----------------------------------------------------------------------

class LesionSites:
    """Lesion sites of one layer, each compared by its selectivity profile across classes with its deficits."""

    needs_sheet: ClassVar[bool] = False

    def choose(self, layer: LesionLayer, size: int | float, class_selectivity: np.ndarray,
               class_names: Sequence[str], n_sites: int, seed: int) -> list[Selection]:
        raise NotImplementedError


SITES: Registry[type] = Registry("lesion site choice")


@SITES.register("disk", citation=RAJALINGHAM2019,
                description="n_sites disks tiling the cortical sheet (farthest-point centres), like the "
                            "millimetre-scale IT inactivation sites")
class DiskSites(LesionSites):
    needs_sheet = True

    def choose(self, layer, size, class_selectivity, class_names, n_sites, seed):
        centers = farthest_point_centers(layer.positions, n_sites, seed)
        return [disk(layer.positions, c, size=size, layer=layer.name, kind="site", unit_shape=layer.unit_shape)
                for c in centers]


@SITES.register("top_k", citation=RAJALINGHAM2019,
                description="per class, its most selective units (for layers without a cortical sheet)")
class TopKSites(LesionSites):
    def choose(self, layer, size, class_selectivity, class_names, n_sites, seed):
        return [top_k_selective(class_selectivity[k], size, layer=layer.name, label=class_names[k],
                                unit_shape=layer.unit_shape) for k in range(len(class_names))]


def site_choice(site_kind: str, layer: LesionLayer) -> str:
    """The SITES name for ``site_kind`` on ``layer``: ``auto`` is disk with a cortical sheet, else top_k."""
    if site_kind == "auto":
        return "disk" if layer.has_sheet else "top_k"
    if SITES.get(site_kind).needs_sheet and not layer.has_sheet:
        raise ValueError(f"intervene.site_kind={site_kind} needs a cortical sheet for {layer.name}; set "
                         "default_sheet: true or site_kind: top_k")
    return site_kind
