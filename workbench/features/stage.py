"""The extract stage: activations of the run's model for each configured stimulus set."""

from __future__ import annotations

import time

from workbench.features.extract import extract_activations, run_activations_path
from workbench.features.preprocess import Preprocess


def extract_stage(run, cfg: dict) -> dict:
    from workbench.data import load_stimuli
    from workbench.pipeline import model_for_run

    ex = cfg.get("extract", {})
    model = model_for_run(run, cfg)
    preprocess = Preprocess.from_config(cfg["model"].get("preprocess"))
    section: dict = {"stimulus_sets": {}, "preprocess": preprocess.to_dict()}
    for name in ex.get("stimulus_sets", ["kriegeskorte92"]):
        path = run_activations_path(run, name)
        stimuli = load_stimuli(name)
        start = time.perf_counter()
        keyed = run.cache / "activations" / "keyed"
        # a keyed cache inside the run: a rerun after a crash reuses the layers already extracted
        acts = extract_activations(model, stimuli, ex.get("layers"), preprocess=preprocess,
                                   batch_size=ex.get("batch_size", 64), device=cfg.get("device"),
                                   projection_dim=ex.get("projection_dim"), projection_seed=cfg.get("seed", 0),
                                   cache_dir=keyed)
        acts.save(path)
        for leftover in keyed.glob("*.npz"):  # the per-layer pieces are now in the set's file
            leftover.unlink()
        section["stimulus_sets"][name] = {
            "n_stimuli": len(stimuli),
            "layers": {l: {"unit_shape": list(acts.unit_shapes[l]), "n_features": int(acts[l].shape[1]),
                           "projection": acts.projection[l]} for l in acts},
            "seconds": round(time.perf_counter() - start, 2),
            "citation": stimuli.citation,
        }
    section["references"] = sorted({s["citation"] for s in section["stimulus_sets"].values() if s["citation"]})
    return section
