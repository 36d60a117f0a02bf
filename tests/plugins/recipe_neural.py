"""Recipe: a neural data set, from outside the package (CONTRIBUTING.md, "Adding a neural data set").

A stimulus set and a response set registered under one name, ``simulated_v1``: static sinusoidal gratings
(8 orientations x 3 spatial frequencies x 4 phases) and a simulated population of V1 complex cells (the energy model:
the summed squares of a quadrature pair of Gabor filters) with Poisson spike counts over repeats. A simulation has a
known answer, which makes it a check of the pipeline as much as an example: the cells are tuned to orientation and
spatial frequency but not to phase, which no linear readout of pixels (or of a layer that is still linear in them)
can reproduce; layers that rectify and pool can.

Your own recordings take the same two functions; read your files instead of simulating, e.g. with
``workbench.data.load_assembly("my_recording.nc", image_folder="my_images/")``. Use the data set with
``plugins: [recipe_neural]``, ``extract.stimulus_sets: [simulated_v1]`` and ``datasets: [simulated_v1]`` in an
encoding or CKA metric's settings.
"""

from functools import lru_cache

import numpy as np
import pandas as pd
import xarray as xr

from workbench.data import RESPONSES, STIMULUS_SETS, StimulusSet, validate_assembly

NAME = "simulated_v1"
CITATION = ("Adelson, E.H., Bergen, J.R. (1985). Spatiotemporal energy models for the perception of motion. "
            "J Opt Soc Am A 2(2), 284-299.")
SIZE = 32                                     # pixels
ORIENTATIONS = np.arange(8) * np.pi / 8
FREQUENCIES = (2.0, 4.0, 8.0)                 # cycles per image
PHASES = np.arange(4) * np.pi / 2
N_CELLS, N_REPEATS, SEED = 30, 6, 0


def _grating(orientation: float, frequency: float, phase: float) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    return np.cos(2 * np.pi * frequency * (x * np.cos(orientation) + y * np.sin(orientation)) + phase)


@lru_cache(maxsize=1)
def _simulation() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(metadata, contrast images in [-1, 1] (n, SIZE, SIZE), spike counts (n, N_CELLS, N_REPEATS))."""
    rows = [(o, f, p) for o in ORIENTATIONS for f in FREQUENCIES for p in PHASES]
    meta = pd.DataFrame(rows, columns=["orientation", "spatial_frequency", "phase"])
    meta.insert(0, "stimulus_id", [f"grating_{i:03d}" for i in range(len(rows))])
    images = np.stack([_grating(*row) for row in rows])
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    energies = []
    for _ in range(N_CELLS):  # a complex cell: preferred orientation and frequency, receptive field near the centre
        theta, freq = rng.uniform(0, np.pi), rng.choice(FREQUENCIES)
        cx, cy = rng.normal(SIZE / 2, SIZE / 8, size=2)
        envelope = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (SIZE / (2 * freq)) ** 2))
        pair = [envelope * _grating(theta, freq, phase)[None] for phase in (0.0, np.pi / 2)]
        energies.append(sum(np.einsum("nij,ij->n", images, g[0]) ** 2 for g in pair))
    energy = np.stack(energies, axis=1)
    rates = 2.0 + 18.0 * energy / energy.max(axis=0)  # spikes per 100 ms: 2 at rest, 20 at the best grating
    counts = rng.poisson(rates[:, :, None], size=(*rates.shape, N_REPEATS)).astype(np.float64)
    return meta, images, counts


@STIMULUS_SETS.register(NAME, citation=CITATION, description="96 sinusoidal gratings, 32 px (simulated V1 set)")
def simulated_v1_stimuli() -> StimulusSet:
    meta, images, _ = _simulation()
    rgb = np.repeat(np.round((images + 1) * 127.5).astype(np.uint8)[..., None], 3, axis=-1)
    return StimulusSet(NAME, meta, rgb, CITATION)


@RESPONSES.register(NAME, citation=CITATION,
                    description="simulated V1 complex cells (energy model), Poisson counts, 6 repeats")
def simulated_v1_responses(trials: bool = False) -> xr.DataArray:
    """presentation x neuroid mean counts, or presentation x neuroid x repetition with ``trials=True`` (which gives
    the encoding metrics their split-half ceiling)."""
    meta, _, counts = _simulation()
    coords = {"stimulus_id": ("presentation", meta["stimulus_id"].tolist()),
              "neuroid_id": ("neuroid", [f"v1_cell{i:02d}" for i in range(N_CELLS)]),
              "region": ("neuroid", ["V1 (simulated)"] * N_CELLS)}
    if trials:
        data = xr.DataArray(counts, dims=("presentation", "neuroid", "repetition"), coords=coords)
    else:
        data = xr.DataArray(counts.mean(axis=2), dims=("presentation", "neuroid"), coords=coords)
    data.attrs["units"] = "spikes / 100 ms"
    return validate_assembly(data, stimuli=simulated_v1_stimuli())
