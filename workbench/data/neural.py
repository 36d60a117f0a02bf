"""Neural data as xarray, in the Brain-Score / BrainIO convention.

Responses: ``presentation x neuroid`` (+ ``repetition`` for trial-level data), with coords ``stimulus_id`` on the
presentation dim and ``neuroid_id``, ``region``, ``session`` on the neuroid dim. RDM stacks:
``subject x session x stimulus x stimulus_b``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from workbench.data.files import DataNotFoundError, REGISTRY, data_root, fetch
from workbench.data.stimuli import COWLEY_CITATION, KRIEGESKORTE_CITATION, V4_SESSIONS, Background, StimulusSet
from workbench.registry import Registry
from workbench.utils import atomic_save_npz

RESPONSES: Registry[Callable[..., xr.DataArray]] = Registry("response dataset")
RDM_SETS: Registry[Callable[..., xr.DataArray]] = Registry("RDM dataset")

NAN_POLICIES = ("raise", "drop_neuroids", "drop_presentations")


# ---------------------------------------------------------------------------------------------------------------
# Cowley et al. 2023 V4
def v4_session_file(session: str) -> Path:
    """session_<id>.npz under the data root; built from the verified public originals when absent."""
    session = str(session)
    if session not in V4_SESSIONS:
        raise KeyError(f"unknown V4 session {session!r}; sessions with images are {', '.join(V4_SESSIONS)}")
    rel = f"cowley2023_v4/session_{session}.npz"
    if (data_root() / rel).exists():
        return fetch(rel)
    avg = np.load(fetch(f"cowley2023_v4/original/responses_{session}.npy"))
    arrays = {"responses_avg": avg.astype(np.float64),
              "image_names": np.array([f"image{k + 1:04d}.jpg" for k in range(avg.shape[1])]),
              "session_id": np.int64(session)}
    raw_rel = f"cowley2023_v4/original/responses_raw_{session}.npy"
    if raw_rel in REGISTRY:
        raw = np.load(fetch(raw_rel))
        arrays["responses_raw"] = raw
        arrays["n_repeats"] = np.sum(~np.isnan(raw), axis=2).astype(np.int16)
    path = data_root() / rel
    # Our own repack: its sha256 differs from the mirror's, so it is recorded beside the verified originals.
    atomic_save_npz(path, **arrays)
    return path


@RESPONSES.register("cowley2023_v4", citation=COWLEY_CITATION,
                    description="macaque V4 spike counts (100 ms bins) to natural images, 4 sessions")
def _cowley_v4(session: str = "201025", trials: bool = False) -> xr.DataArray:
    session = str(session)
    try:
        path = v4_session_file(session)
    except DataNotFoundError:
        raise
    with np.load(path) as d:
        names = [str(n) for n in d["image_names"]]
        avg = d["responses_avg"]
        raw = d["responses_raw"] if "responses_raw" in d.files else None
    stim_ids = [f"{session}/{n.rsplit('.', 1)[0]}" for n in names]
    neuroid_coords = {
        "neuroid_id": ("neuroid", [f"{session}_n{i:03d}" for i in range(avg.shape[0])]),
        "region": ("neuroid", ["V4"] * avg.shape[0]),
        "session": ("neuroid", [session] * avg.shape[0]),
    }
    pres_coords = {"stimulus_id": ("presentation", stim_ids), "image_name": ("presentation", names)}
    if trials:
        if raw is None:
            have = [s for s in V4_SESSIONS if f"cowley2023_v4/original/responses_raw_{s}.npy" in REGISTRY]
            raise ValueError(f"V4 session {session} has no trial-level data; sessions with trials: {have}")
        # (neuron, image, repeat) -> presentation x neuroid x repetition; NaN marks a repeat that was not shown
        data = np.transpose(raw, (1, 0, 2))
        return xr.DataArray(data, dims=("presentation", "neuroid", "repetition"),
                            coords={**pres_coords, **neuroid_coords, "repetition": np.arange(data.shape[2])},
                            name="spike_count", attrs={"units": "spikes / 100 ms", "citation": COWLEY_CITATION})
    return xr.DataArray(avg.T, dims=("presentation", "neuroid"), coords={**pres_coords, **neuroid_coords},
                        name="mean_spike_count", attrs={"units": "spikes / 100 ms", "citation": COWLEY_CITATION})


def _cowley_v4_session(session: str) -> Callable[..., xr.DataArray]:
    def load(trials: bool = False) -> xr.DataArray:
        return _cowley_v4(session, trials=trials)

    load.__qualname__ = f"cowley_v4_{session}"
    return load


# One response set per session, named like the session's stimulus set: a stage that scores recordings names one
# data set (``cowley_v4_201025``) and finds both its images (STIMULUS_SETS) and its responses (RESPONSES) by it.
for _session in V4_SESSIONS:
    RESPONSES.add(f"cowley_v4_{_session}", _cowley_v4_session(_session), citation=COWLEY_CITATION,
                  description=f"macaque V4 session {_session}: spike counts (100 ms) to its natural images")


def load_responses(name: str, **selection) -> xr.DataArray:
    """Neural responses of a registered dataset, e.g. ``load_responses("cowley2023_v4", session="201025")``."""
    return RESPONSES.get(name)(**selection)


# ---------------------------------------------------------------------------------------------------------------
# Kriegeskorte et al. 2008 RDMs
def _k92_ids(n: int = 92) -> list[str]:
    return [f"k92_{i + 1:02d}" for i in range(n)]


def _rdm_array(stack: np.ndarray, subjects, sessions, region: str, citation: str) -> xr.DataArray:
    ids = _k92_ids(stack.shape[-1])
    return xr.DataArray(stack.astype(np.float64), dims=("subject", "session", "stimulus", "stimulus_b"),
                        coords={"subject": list(subjects), "session": list(sessions),
                                "stimulus": ids, "stimulus_b": ids},
                        name=f"{region}_rdm", attrs={"region": region, "citation": citation})


@RDM_SETS.register("kriegeskorte2008", citation=KRIEGESKORTE_CITATION,
                   description="92-image RDMs: human IT fMRI (4 subjects x 2 sessions), monkey IT, behaviour")
def _kriegeskorte_rdms(region: str = "hIT") -> xr.DataArray:
    import scipy.io as sio
    from scipy.spatial.distance import squareform

    if region == "hIT":
        mat = sio.loadmat(fetch("kriegeskorte2008/92_brainRDMs.mat"), squeeze_me=True, struct_as_record=False)
        rdms = mat["RDMs"]
        stack = np.stack([[rdms[s, k].RDM for k in range(rdms.shape[1])] for s in range(rdms.shape[0])])
        subjects = [str(rdms[s, 0].name).split("|")[1].strip() for s in range(rdms.shape[0])]
        return _rdm_array(stack, subjects, [1, 2], "hIT", KRIEGESKORTE_CITATION)
    if region == "mIT":
        mat = sio.loadmat(fetch("kriegeskorte2008/Kriegeskorte_Neuron2008_supplementalData.mat"),
                          squeeze_me=True, struct_as_record=False)
        vec = mat["RDMs_mIT_hIT_fig1"][0].RDM
        kiani = ("Kiani, R., Esteky, H., Mirpour, K., Tanaka, K. (2007). Object category structure in response "
                 "patterns of neuronal population in monkey inferior temporal cortex. J Neurophysiol 97(6).")
        return _rdm_array(squareform(vec)[None, None], ["monkey"], [1], "mIT", KRIEGESKORTE_CITATION + " " + kiani)
    if region == "behaviour":
        mat = sio.loadmat(fetch("kriegeskorte2008/92_behavRDMs.mat"), squeeze_me=True, struct_as_record=False)
        b = mat["rdms_behav_92"]
        mur = ("Mur, M. et al. (2013). Human object-similarity judgments reflect and transcend the primate-IT "
               "object representation. Front Psychol 4:128.")
        return _rdm_array(np.stack([r.RDM for r in b])[:, None], [f"subject{i + 1}" for i in range(len(b))], [1],
                          "behaviour", mur)
    raise KeyError(f"unknown region {region!r} for kriegeskorte2008; choose hIT, mIT or behaviour")


def load_rdms(name: str, region: str = "hIT") -> xr.DataArray:
    """RDM stack (subject x session x stimulus x stimulus_b) of a registered dataset."""
    return RDM_SETS.get(name)(region=region)


def load_model_rdms(name: str = "kriegeskorte2008") -> xr.DataArray:
    """The model RDMs shipped with the 92-image set: (model x stimulus x stimulus_b)."""
    import scipy.io as sio

    if name != "kriegeskorte2008":
        raise KeyError(f"no model RDMs for {name!r}; only kriegeskorte2008 ships them")
    models = sio.loadmat(fetch("kriegeskorte2008/92_modelRDMs.mat"), squeeze_me=True,
                         struct_as_record=False)["Models"]
    stack = np.stack([np.asarray(m.RDM, dtype=np.float64) for m in models])
    ids = _k92_ids(stack.shape[-1])
    return xr.DataArray(stack, dims=("model", "stimulus", "stimulus_b"),
                        coords={"model": [str(m.name) for m in models], "stimulus": ids, "stimulus_b": ids},
                        name="model_rdm", attrs={"citation": KRIEGESKORTE_CITATION})


# ---------------------------------------------------------------------------------------------------------------
# A user's own assembly
def validate_assembly(assembly: xr.DataArray, nan_policy: str = "raise",
                      stimuli: StimulusSet | None = None) -> xr.DataArray:
    """Check an assembly's dims, coords and values; return it (NaN handled as ``nan_policy`` says).

    nan_policy: ``raise`` (default: NaN is an error), ``drop_neuroids`` or ``drop_presentations`` (drop every
    neuroid / presentation that holds a NaN). Trial-level assemblies (with a ``repetition`` dim) keep NaN: it marks
    repeats that were not shown.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    dims = tuple(assembly.dims)
    if dims[:2] != ("presentation", "neuroid") or len(dims) not in (2, 3):
        raise ValueError(f"an assembly must have dims (presentation, neuroid[, repetition]), got {dims}; use "
                         f"assembly.transpose('presentation', 'neuroid', ...) or rename the dims")
    if "stimulus_id" not in assembly.coords or assembly["stimulus_id"].dims != ("presentation",):
        raise ValueError("an assembly needs a 'stimulus_id' coordinate on the presentation dim")
    if "neuroid_id" not in assembly.coords:
        assembly = assembly.assign_coords(neuroid_id=("neuroid", [f"n{i:04d}" for i in range(assembly.sizes["neuroid"])]))
    _check_ids(assembly)
    values = assembly.values
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"assembly values must be numeric, got {values.dtype}")
    if np.isinf(values).any():
        raise ValueError("assembly holds infinite values; replace them before loading")
    if "repetition" not in dims and np.isnan(values).any():
        nan = np.isnan(values)
        if nan_policy == "raise":
            rows, cols = np.nonzero(nan)
            raise ValueError(
                f"assembly holds {nan.sum()} NaN values (first at presentation {rows[0]}, neuroid {cols[0]}); pass "
                f"nan_policy='drop_neuroids' or 'drop_presentations' to drop them, or clean the data")
        if nan_policy == "drop_neuroids":
            assembly = assembly.isel(neuroid=~nan.any(axis=0))
        else:
            assembly = assembly.isel(presentation=~nan.any(axis=1))
        if 0 in assembly.shape:
            raise ValueError(f"nan_policy={nan_policy!r} dropped everything: every row or column holds a NaN")
    if stimuli is not None:
        ids = set(map(str, assembly["stimulus_id"].values))
        have = set(map(str, stimuli.stimulus_ids))
        missing = sorted(ids - have)
        if missing:
            raise ValueError(f"assembly stimulus ids without an image in stimulus set {stimuli.name!r}: "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all); the "
                             f"stimulus_id coordinate must name the image files (file name without extension)")
    return assembly


def _check_ids(assembly: xr.DataArray) -> None:
    """Refuse an empty assembly and repeated stimulus or neuroid ids (each would be scored as a separate sample)."""
    for dim in ("presentation", "neuroid"):
        if assembly.sizes[dim] == 0:
            raise ValueError(f"the assembly has no {dim}s (shape {dict(assembly.sizes)}): nothing to score; check "
                             f"that the file holds the responses")
    stimulus_ids = pd.Index(map(str, assembly["stimulus_id"].values))
    if stimulus_ids.has_duplicates:
        repeated = list(stimulus_ids[stimulus_ids.duplicated()].unique())
        raise ValueError(
            f"stimulus ids repeat in the assembly: {repeated[:5]}{' ...' if len(repeated) > 5 else ''} "
            f"({len(repeated)} ids). Each presentation row must be one stimulus: average the repeats "
            "(assembly.groupby('stimulus_id').mean()), or keep them as trials, either as a third dim "
            "(presentation x neuroid x repetition) or with a 'repetition' coordinate on presentation in a .nc file")
    neuroid_ids = pd.Index(map(str, assembly["neuroid_id"].values))
    if neuroid_ids.has_duplicates:
        repeated = list(neuroid_ids[neuroid_ids.duplicated()].unique())
        raise ValueError(f"neuroid ids repeat in the assembly: {repeated[:5]}{' ...' if len(repeated) > 5 else ''} "
                         f"({len(repeated)} ids); give every recorded site its own neuroid_id")


def save_assembly(assembly: xr.DataArray, path: str | Path) -> Path:
    """Write an assembly (presentation x neuroid [x repetition]) as netCDF, atomically. Coordinates are stored
    flat (netCDF has no MultiIndex), as BrainIO stores its assemblies; ``load_assembly`` reads it back."""
    from workbench.utils import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".nc":
        raise ValueError(f"save_assembly writes netCDF: give a path ending in .nc, got {path}")
    assembly = validate_assembly(assembly)
    flat = assembly.reset_index([d for d in assembly.dims if d in assembly.indexes
                                 and len(getattr(assembly.indexes[d], "names", [])) > 1])
    return atomic_write_bytes(path, bytes(flat.to_netcdf()))


def from_brainscore_layout(assembly: xr.DataArray) -> xr.DataArray:
    """A Brain-Score / BrainIO assembly as this package lays them out: a ``time_bin`` dim of size 1 dropped,
    ``neuroid`` x ``presentation`` transposed, and trial-level data with repeated presentations of a stimulus (a
    ``repetition`` coordinate on ``presentation``) reshaped to presentation x neuroid x repetition (NaN where a
    stimulus was shown fewer times). Anything else is returned unchanged."""
    if "time_bin" in assembly.dims:
        if assembly.sizes["time_bin"] != 1:
            raise ValueError(f"the assembly has {assembly.sizes['time_bin']} time bins; select or average one "
                             f"(assembly.sel(time_bin=...) or .mean('time_bin')) before loading")
        assembly = assembly.isel(time_bin=0, drop=True)
    if set(assembly.dims) == {"presentation", "neuroid"}:
        assembly = assembly.transpose("presentation", "neuroid")
    if "repetition" in assembly.dims or "repetition" not in assembly.coords or "stimulus_id" not in assembly.coords:
        return assembly
    ids = [str(s) for s in assembly["stimulus_id"].values]
    reps = np.asarray(assembly["repetition"].values)
    unique = list(dict.fromkeys(ids))
    rep_index = {r: i for i, r in enumerate(np.unique(reps))}
    out = np.full((len(unique), assembly.sizes["neuroid"], len(rep_index)), np.nan)
    row = {s: i for i, s in enumerate(unique)}
    values = assembly.values
    for k, (sid, rep) in enumerate(zip(ids, reps)):
        out[row[sid], :, rep_index[rep]] = values[k]
    neuroid_coords = {name: ("neuroid", assembly[name].values) for name in assembly.coords
                      if assembly[name].dims == ("neuroid",)}
    return xr.DataArray(out, dims=("presentation", "neuroid", "repetition"),
                        coords={"stimulus_id": ("presentation", unique), **neuroid_coords}, attrs=assembly.attrs)


def load_assembly(path: str | Path, image_folder: str | Path | None = None, nan_policy: str = "raise",
                  image_size: int | None = None, background: Background = None) -> xr.DataArray:
    """A user's assembly (xarray, presentation x neuroid [x repetition]) from netCDF (``.nc``) or ``.npz``,
    validated (and with ``image_folder``, checked against the image files: every stimulus id names one).

    ``.npz`` must hold ``responses`` (presentation x neuroid [x repetition]) and ``stimulus_id`` (presentation,), and
    may hold ``neuroid_id``. Pickles are never read. ``load_recording`` also returns the images as a StimulusSet.
    Stimulus and neuroid ids must be unique. ``background``: the (r, g, b) screen on which images with translucent
    pixels are composited (``StimulusSet.from_folder``); without it such images are refused.
    """
    return load_recording(path, image_folder, nan_policy, image_size, background)[0]


def load_recording(path: str | Path, image_folder: str | Path | None = None, nan_policy: str = "raise",
                   image_size: int | None = None,
                   background: Background = None) -> tuple[xr.DataArray, StimulusSet | None]:
    """``(assembly, stimuli)``: ``load_assembly``'s assembly and its images in presentation order (None without
    ``image_folder``), the two halves of a registered data set (``RESPONSES`` and ``STIMULUS_SETS``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"assembly file {path} does not exist")
    if path.suffix == ".nc":
        assembly = from_brainscore_layout(xr.load_dataarray(path))
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            for key in ("responses", "stimulus_id"):
                if key not in d.files:
                    raise ValueError(f"{path} lacks the array {key!r}; an assembly .npz holds 'responses' "
                                     f"(presentation x neuroid [x repetition]) and 'stimulus_id' (presentation,)")
            resp = d["responses"]
            sid = d["stimulus_id"].astype(str)
            if resp.ndim not in (2, 3):
                raise ValueError(f"{path}: responses must be 2-D or 3-D, got shape {resp.shape}")
            if len(sid) != resp.shape[0]:
                raise ValueError(f"{path}: {len(sid)} stimulus ids but {resp.shape[0]} presentations in responses")
            dims = ("presentation", "neuroid", "repetition")[: resp.ndim]
            coords = {"stimulus_id": ("presentation", sid)}
            if "neuroid_id" in d.files:
                nid = d["neuroid_id"].astype(str)
                if len(nid) != resp.shape[1]:
                    raise ValueError(f"{path}: {len(nid)} neuroid ids but {resp.shape[1]} neuroids in responses")
                coords["neuroid_id"] = ("neuroid", nid)
            assembly = xr.DataArray(resp, dims=dims, coords=coords)
    else:
        raise ValueError(f"unsupported assembly format {path.suffix!r}: use .nc (netCDF) or .npz")
    stimuli = None
    if image_folder is not None:
        stimuli = StimulusSet.from_folder(image_folder, size=image_size, background=background)
    assembly = validate_assembly(assembly, nan_policy=nan_policy, stimuli=stimuli)
    if stimuli is not None:
        stimuli = stimuli.select_ids(list(map(str, assembly["stimulus_id"].values)))
    return assembly, stimuli
