"""TDANN's position pre-optimisation (Margalit et al. 2024): before the spatial loss is switched on, swap units
between sheet positions so that units whose responses correlate sit near each other.

What is implemented (TDANN's greedy local swaps, as this package reads the method): the responses of a network
(trained without the spatial loss, or at initialisation) to a stimulus set give every pair of units a response
correlation r_ij. Then, for ``iterations`` rounds, a local neighbourhood (the ``neighbourhood_size`` positions
nearest a seeded random position) is taken, and inside it the pair of units whose swap most raises

    sum over unit pairs (i, j) of the neighbourhood  r_ij / (d_ij + 1)          (d: sheet distance in mm)

is swapped, up to ``swaps_per_neighbourhood`` times while a swap still raises it. Swaps stay inside the
neighbourhood, so the set of its units and the set of its distances are fixed: this sum is then the covariance
term of TDANN's spatial loss (the Pearson correlation of r_ij with 1/(d_ij + 1) over the neighbourhood's pairs),
and raising it lowers that loss exactly. The gain of every candidate swap comes from one matrix product (see
``_swap_gains``). Deterministic from the seed.

On this package's cortical sheets a channel occupies the same tile slot in every retinotopic cell (weights are
shared across space), so ``preoptimise_sheet`` swaps channels between tile slots: a channel's responses are pooled
over stimuli and image positions, and the positions are the tile's slot coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.models.sheet import CorticalSheet

__all__ = ["PreoptimiseResult", "preoptimise_positions", "preoptimise_sheet", "response_correlations",
           "neighbour_correlation"]


@dataclass
class PreoptimiseResult:
    assignment: np.ndarray        # (n_units,): unit u now sits at position assignment[u] of the input positions
    n_swaps: int                  # swaps made
    iterations: int               # neighbourhoods visited
    neighbour_correlation_before: float  # mean r of each unit with its nearest neighbours (``neighbour_correlation``)
    neighbour_correlation_after: float

    def to_dict(self) -> dict:
        return {"n_swaps": self.n_swaps, "iterations": self.iterations,
                "neighbour_correlation_before": self.neighbour_correlation_before,
                "neighbour_correlation_after": self.neighbour_correlation_after}


def response_correlations(responses: np.ndarray) -> np.ndarray:
    """Pearson correlation over samples (rows) of every pair of units (columns), 0 for a unit that never varies
    (a dead unit carries no evidence of where it belongs), 0 on the diagonal."""
    x = np.asarray(responses, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"responses must be (n_samples >= 3, n_units), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("responses contain NaN or infinite values")
    x = x - x.mean(0)
    norm = np.linalg.norm(x, axis=0)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)
    r = x.T @ x
    np.fill_diagonal(r, 0.0)
    return r


def neighbour_correlation(correlations: np.ndarray, positions: np.ndarray, k: int = 4) -> float:
    """Mean response correlation of each unit with its ``k`` nearest units on the sheet (the smoothness the
    pre-optimisation raises; random positions give the mean off-diagonal correlation)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(np.asarray(positions, dtype=np.float64)).query(positions, k=k + 1)
    return float(np.mean(np.take_along_axis(correlations, idx[:, 1:], axis=1)))


def _swap_gains(r_local: np.ndarray, target: np.ndarray) -> np.ndarray:
    """gain[a, b]: change of sum_{a' != b'} r[a', b'] t[a', b'] when the units at local slots a and b swap.

    r_local[a, c] = correlation of the units at slots a and c, target[a, c] = 1/(d_ac + 1); both symmetric with a
    zero diagonal. With M = r_local @ target, swapping moves every c != a, b from t[a, c] to t[b, c] and back, so
    gain = 2 (M[a, b] + M[b, a] - M[a, a] - M[b, b] + 2 r[a, b] t[a, b]) (the last term undoes the c = a, b
    terms, whose distance the swap leaves unchanged; the factor 2 counts both orders of each pair)."""
    m = r_local @ target
    diag = np.diag(m)
    return 2.0 * (m + m.T - diag[:, None] - diag[None, :] + 2.0 * r_local * target)


def preoptimise_positions(responses: np.ndarray | None, positions: np.ndarray, iterations: int = 2000,
                          neighbourhood_size: int = 49, swaps_per_neighbourhood: int = 8, seed: int = 0,
                          correlations: np.ndarray | None = None) -> PreoptimiseResult:
    """Greedy local swaps of units between ``positions`` (n_units, 2) so that correlated units sit near each other.

    responses: (n_samples, n_units) (or ``correlations`` (n_units, n_units) given directly). Returns the unit ->
    position assignment; ``positions[result.assignment]`` are the units' new positions.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be (n_units, 2), got shape {positions.shape}")
    n = len(positions)
    r = response_correlations(responses) if correlations is None else np.asarray(correlations, dtype=np.float64)
    if r.shape != (n, n):
        raise ValueError(f"responses describe {r.shape[0]} units but there are {n} positions: both must list the "
                         "units in the same order")
    if iterations < 0 or swaps_per_neighbourhood < 1:
        raise ValueError(f"iterations must be >= 0 and swaps_per_neighbourhood >= 1, got {iterations} and "
                         f"{swaps_per_neighbourhood}")
    k = min(int(neighbourhood_size), n)
    if k < 3:
        raise ValueError(f"neighbourhood_size must be >= 3 (and the sheet hold 3 units), got {neighbourhood_size} "
                         f"for {n} units")
    from scipy.spatial import cKDTree

    before = neighbour_correlation(r, positions)
    rng = np.random.default_rng(seed)
    _, hoods = cKDTree(positions).query(positions, k=k)   # the k positions nearest each position
    hoods = np.asarray(hoods).reshape(n, k)
    unit_at = np.arange(n)                                 # position p holds unit unit_at[p]
    n_swaps = 0
    for centre in rng.integers(0, n, size=int(iterations)):
        slots = hoods[centre]
        pos = positions[slots]
        target = 1.0 / (np.linalg.norm(pos[:, None] - pos[None], axis=-1) + 1.0)
        np.fill_diagonal(target, 0.0)
        for _ in range(int(swaps_per_neighbourhood)):
            units = unit_at[slots]
            gains = _swap_gains(r[np.ix_(units, units)], target)
            a, b = np.unravel_index(int(np.argmax(gains)), gains.shape)
            if gains[a, b] <= 1e-12:
                break
            unit_at[slots[a]], unit_at[slots[b]] = units[b], units[a]
            n_swaps += 1
    assignment = np.empty(n, dtype=np.int64)
    assignment[unit_at] = np.arange(n)
    after = neighbour_correlation(r, positions[assignment])
    return PreoptimiseResult(assignment, n_swaps, int(iterations), before, after)


def channel_responses(activations: np.ndarray, unit_shape: tuple[int, int, int]) -> np.ndarray:
    """(n_stimuli, C*H*W) or (n_stimuli, C, H, W) -> (n_stimuli * H * W, C): each channel's responses pooled over
    stimuli and image positions (a channel shares its weights over positions, so this is its response profile)."""
    c, h, w = unit_shape
    acts = np.asarray(activations, dtype=np.float64).reshape(-1, c, h, w)
    return acts.transpose(0, 2, 3, 1).reshape(-1, c)


def preoptimise_sheet(sheet: CorticalSheet, activations: np.ndarray, iterations: int = 2000,
                      neighbourhood_size: int | None = None, swaps_per_neighbourhood: int = 8,
                      seed: int = 0) -> tuple[CorticalSheet, PreoptimiseResult]:
    """A copy of ``sheet`` whose channels are re-assigned to tile slots by ``preoptimise_positions`` on the
    responses ``activations`` (n_stimuli, C, H, W) of the sheet's layer. neighbourhood_size: channels per local
    neighbourhood (null: half the tile, at least 9)."""
    c = sheet.unit_shape[0]
    if c < 3:
        raise ValueError(f"layer {sheet.layer!r} has {c} channels: pre-optimisation needs at least 3")
    tile_cols = sheet.tile_shape[1]
    slot_row, slot_col = np.divmod(np.asarray(sheet.slot_of_channel), tile_cols)
    slot_xy = np.stack([slot_col, slot_row], axis=1).astype(np.float64) * sheet.spacing_mm
    if neighbourhood_size is None:
        neighbourhood_size = max(9, c // 2)
    result = preoptimise_positions(channel_responses(activations, sheet.unit_shape), slot_xy, iterations,
                                   neighbourhood_size, swaps_per_neighbourhood, seed)
    new = CorticalSheet(sheet.unit_shape, size_mm=sheet.size_mm, grid=sheet.grid, jitter=sheet.jitter,
                        seed=sheet.seed, shuffle_channels=sheet.shuffle_channels, layer=sheet.layer,
                        slot_of_channel=np.asarray(sheet.slot_of_channel)[result.assignment])
    return new, result
