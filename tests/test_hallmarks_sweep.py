"""The cross-run hallmark analysis of a spatial-weight sweep, on fake run folders with known answers (issue 16)."""

import json
import math

import numpy as np
import pytest
import yaml

from workbench.report.hallmarks_sweep import (analyse_hallmarks, complex_morans_i, hallmarks_section_html,
                                              load_orientation_map,
                                              map_stability, run_hallmarks, seed_interval, write_hallmarks)

T_975_DF2 = 4.302652729911275  # Student t quantile (0.975, 2 degrees of freedom), from tables


def _sheet(n=24, spacing=0.1):
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    return np.stack([xs.ravel(), ys.ravel()], axis=1) * spacing


def _blob(positions, centre, width=0.4, height=8.0):
    """A smooth t-map: one Gaussian bump of selectivity (a patch when it rises above the threshold 4)."""
    d2 = ((positions - np.asarray(centre)) ** 2).sum(1)
    return height * np.exp(-d2 / (2 * width ** 2))


def fake_run(folder, weight, seed, accuracy=0.5, ratio=1.2, ratio_ci=(1.0, 1.4), alignment=0.1, face_patches=1,
             density=3.0, intervene=True, face_map=None, positions=None):
    """A run folder as the stages write it: config.yaml, metrics.json (train, topography, intervene sections) and,
    with ``face_map``, the topography stage's cache of the conv4 face t-map and its positions."""
    folder.mkdir(parents=True)
    config = {"study": "spatial_weight_sweep", "seed": seed, "model": {"name": "small_cnn",
                                                                      "topography": {"weight": weight}},
              "topography": {"patch_threshold": 4.0, "patch_smoothing_mm": 0.2, "patch_min_units": 5}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    patches = [{"label": i + 1, "n_units": 30, "area_mm2": 0.5 + i, "centroid_mm": [1, 1], "peak": 6.0,
                "mean_selectivity": 5.0} for i in range(face_patches)]
    metrics = {
        "train": {"test_accuracy": accuracy, "seconds": 10.0},
        "topography": {"seconds": 5.0, "orientation": {"conv3": {
            "mean_osi": 0.3, "n_pinwheels": 4, "pinwheel_density": density, "column_spacing_mm": 1.0}},
            "layers": {"conv3": {"contrasts": {}}, "conv4": {"contrasts": {"face": {
                "n_patches": face_patches, "patches": patches,
                "morans_i": {"morans_i": 0.4, "p_value": 0.01}}}}}},
    }
    if intervene:
        metrics["intervene"] = {"seconds": 2.5, "layer": "conv4", "specificity": {"face": {
            "top_k": {"control": "random", "responses92": {"specificity_ratio": 9.0,
                                                             "specificity_ratio_ci": [8.0, 10.0]}},
            "disk_peak": {"control": "random_disk", "responses92": {"specificity_ratio": ratio,
                                                                    "specificity_ratio_ci": list(ratio_ci)}}}},
            "interventional_alignment": {"score": alignment, "score_ci": [alignment - 0.1, alignment + 0.1]},
            "lesion_sizes": [0.05, 0.2], "selections": {"disk_peak": "random_disk", "top_k": "random"},
            "sweep": {"face": {"response_change_target": {"disk_peak": [0.3, 0.6], "top_k": [0.5, 0.5],
                                                          "random_disk": [[0.1, 0.2], [0.1, 0.4]],
                                                          "random": [[0.0, 0.0], [0.0, 0.0]]}}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if face_map is not None:
        (folder / "cache" / "topography").mkdir(parents=True)
        np.savez(folder / "cache" / "topography" / "selectivity.npz", **{"conv4/face": face_map,
                                                                      "conv4/positions": positions})
    return folder


def _row(table, weight, quantity):
    match = table[(table["weight"] == weight) & (table["quantity"] == quantity)]
    assert len(match) == 1
    return match.iloc[0]


def test_table_means_and_t_intervals_over_seeds_and_missing_values(tmp_path):
    runs = [fake_run(tmp_path / "w0s0", 0, 0, accuracy=0.5, ratio=1.0),
            fake_run(tmp_path / "w0s1", 0, 1, accuracy=0.6, ratio=1.5),
            fake_run(tmp_path / "w0s2", 0, 2, accuracy=0.7, intervene=False),
            fake_run(tmp_path / "w2s0", 2, 0, accuracy=0.4, intervene=False, face_patches=0)]
    hallmarks = analyse_hallmarks(runs, orientation=False)
    table = hallmarks.table
    accuracy = _row(table, 0.0, "test_accuracy")
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # s.d. of (0.5, 0.6, 0.7) is 0.1
    assert accuracy["mean"] == pytest.approx(0.6) and accuracy["n"] == 3 and accuracy["n_missing"] == 0
    assert (accuracy["ci_low"], accuracy["ci_high"]) == pytest.approx((0.6 - half, 0.6 + half))
    # the lesion ratio is the patch lesion's (disk_peak), not top_k's 9; the run without intervene is missing
    ratio = _row(table, 0.0, "face.specificity_ratio")
    assert ratio["mean"] == pytest.approx(1.25) and ratio["n"] == 2 and ratio["n_missing"] == 1
    assert "seed 0: 1 [1, 1.4]" in ratio["per_run"] and "seed 2: missing" in ratio["per_run"]
    # one seed: a mean and no interval; no seed with the value: missing, never 0
    single = _row(table, 2.0, "test_accuracy")
    assert single["mean"] == pytest.approx(0.4) and math.isnan(single["ci_low"]) and single["n"] == 1
    absent = _row(table, 2.0, "interventional_alignment")
    assert math.isnan(absent["mean"]) and absent["n"] == 0 and absent["n_missing"] == 1
    # patch area: the listed patches' total (0.5 + 1.5 for two), 0 for no patch; wall time: the stages' seconds
    runs_frame = hallmarks.runs_frame.set_index("run")
    assert runs_frame.loc["w0s0", "face.patch_area_mm2"] == 0.5 and runs_frame.loc["w2s0", "face.patch_area_mm2"] == 0
    assert runs_frame.loc["w0s0", "wall_time_s"] == 17.5 and runs_frame.loc["w0s2", "wall_time_s"] == 15.0
    # the ratio at each lesion size: the patch lesion's damage over its controls' mean (0.3 / 0.1, 0.6 / 0.3)
    assert runs_frame.loc["w0s0", "face.specificity_ratio@0.05"] == pytest.approx(3.0)
    assert _row(table, 0.0, "face.specificity_ratio@0.2")["mean"] == pytest.approx(2.0)
    # without a checkpoint there is no orientation map: Moran's I of it is missing, with the reason
    assert math.isnan(runs_frame.loc["w0s0", "orientation_morans_i"])
    html = hallmarks_section_html(hallmarks, None)
    assert "missing" in html and "weight 0" in html and "weight 2" in html


def test_seed_interval_and_values_written_as_null(tmp_path):
    out = seed_interval([1.0, float("nan"), 3.0])
    assert out["mean"] == 2.0 and out["n"] == 2 and out["n_missing"] == 1
    assert out["ci_high"] - 2.0 == pytest.approx(12.706204736174698 * math.sqrt(2) / math.sqrt(2))
    run = fake_run(tmp_path / "r", 0.5, 0)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["train"]["test_accuracy"] = None  # how metrics.json holds a NaN
    metrics["train"]["nonfinite"] = {"test_accuracy": "nan"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert math.isnan(run_hallmarks(run, orientation=False).values["test_accuracy"])
    with pytest.raises(FileNotFoundError, match="no config.yaml or metrics.json"):
        analyse_hallmarks([tmp_path / "nothing"])
    # a run that failed before its first stage ended: every number missing, nothing invented
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "config.yaml").write_text(yaml.safe_dump({"seed": 3, "model": {"topography": {
        "weight": 0.5}}}))
    table = analyse_hallmarks([run, tmp_path / "failed"], orientation=False).table
    assert (table["n_missing"] >= 1).all() and _row(table, 0.5, "test_accuracy")["n"] == 0


def test_complex_morans_i_is_the_variance_weighted_mean_of_its_parts():
    from workbench.models.hallmarks import morans_i

    positions = _sheet(20)
    theta = np.pi * (positions[:, 0] + 0.5 * positions[:, 1]) / 2.0  # a smooth orientation gradient
    z = (0.5 + 0.2 * np.random.default_rng(0).random(len(positions))) * np.exp(2j * theta)
    got = complex_morans_i(z, positions, 0.25, n_shuffles=50)
    x = z - z.mean()
    weights = np.array([(x.real ** 2).sum(), (x.imag ** 2).sum()])
    parts = np.array([morans_i(z.real, positions, 0.25), morans_i(z.imag, positions, 0.25)])
    assert got["morans_i"] == pytest.approx((weights * parts).sum() / weights.sum(), rel=1e-10)
    assert got["morans_i"] > 0.8 and got["p_value"] < 0.05
    shuffled = z[np.random.default_rng(1).permutation(len(z))]
    assert abs(complex_morans_i(shuffled, positions, 0.25, n_shuffles=0)["morans_i"]) < 0.05


def test_stability_is_one_for_the_same_map_and_chance_for_shuffled_or_moved_maps():
    positions = _sheet()
    face = _blob(positions, (0.8, 0.8))
    order = np.random.default_rng(0).permutation(len(positions))  # another seed's unit order: compared by place
    same = map_stability((face, positions), (face[order], positions[order]), {"patch_min_units": 5,
                                                                               "patch_smoothing_mm": 0.2})
    assert same["r"] == pytest.approx(1.0) and same["dice_top"] == 1.0 and same["dice_patches"] == 1.0
    assert same["r_p"] < 0.05 and same["r_null"] < 0.5 and same["n_patch_pixels_a"] > 0
    shuffled = map_stability((face, positions), (face[order], positions), {"patch_min_units": 5})
    assert abs(shuffled["r"]) < 0.15 and shuffled["r_p"] > 0.05
    moved = map_stability((face, positions), (_blob(positions, (1.9, 1.9)), positions),
                          {"patch_min_units": 5, "patch_smoothing_mm": 0.2})
    assert moved["dice_patches"] == 0.0 and moved["dice_top"] == 0.0
    # a sheet sampled at other positions (a jittered grid) still matches the same underlying map
    jittered = positions + np.random.default_rng(2).uniform(-0.04, 0.04, positions.shape)
    assert map_stability((face, positions), (_blob(jittered, (0.8, 0.8)), jittered))["r"] > 0.95
    flat = map_stability((np.zeros(len(positions)), positions), (face, positions),
                         {"patch_min_units": 5, "patch_smoothing_mm": 0.2})
    assert math.isnan(flat["r"]) and flat["dice_patches"] == 0.0


def test_sweep_stability_files_and_report_section(tmp_path):
    positions = _sheet()
    rng = np.random.default_rng(0)
    face = _blob(positions, (0.8, 0.8))
    runs = [fake_run(tmp_path / f"w0.5s{s}", 0.5, s, face_map=face, positions=positions) for s in (0, 1)]
    runs += [fake_run(tmp_path / f"w0s{s}", 0, s, face_map=rng.normal(size=len(positions)), positions=positions)
             for s in (0, 1)]
    hallmarks = analyse_hallmarks(runs, orientation=False, n_shifts=50)
    summary = hallmarks.stability_summary().set_index("weight")
    assert summary.loc[0.5, "r"] == pytest.approx(1.0) and summary.loc[0.5, "dice_top"] == 1.0
    assert abs(summary.loc[0.0, "r"]) < 0.2 and summary.loc[0.0, "n_pairs"] == 1
    files = write_hallmarks(hallmarks, tmp_path / "sweep")
    assert {"table", "runs", "stability", "json", "figure"} <= set(files)
    written = json.loads(files["json"].read_text())
    assert written["runs"][0]["values"]["orientation_morans_i"] is None  # missing is null, never a number
    assert (tmp_path / "sweep" / "figures" / "sweep_hallmarks_maps.pdf").is_file()
    html = hallmarks_section_html(hallmarks, files["figure"])
    assert "Patch location stability" in html and "data:image/png;base64," in html


def test_on_a_real_tiny_run_and_its_copy(tiny_run, tmp_path):
    """The session's tiny run and a copy of it as a second seed: the orientation map recomputed from the checkpoint
    has the pinwheels the topography stage counted, and the two identical runs' maps are stable (r = 1)."""
    import shutil

    source, metrics = tiny_run[0].path, tiny_run[1]
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"seed={seed}"
        for name in ("config.yaml", "metrics.json", "checkpoints/model.pt", "cache/topography/selectivity.npz"):
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, run / name)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["seed"] = seed
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        runs.append(run)
    hallmarks = analyse_hallmarks(runs, n_shifts=20)
    first = hallmarks.runs[0]
    layer = first.orientation_layer
    orientation = load_orientation_map(first)  # recomputed from the checkpoint (the stage stores Moran's I only)
    assert len(orientation["centres"]) == metrics["topography"]["orientation"][layer]["n_pinwheels"]
    assert math.isfinite(first.values["orientation_morans_i"]) and math.isfinite(first.values["test_accuracy"])
    accuracy = hallmarks.table[hallmarks.table["quantity"] == "test_accuracy"].iloc[0]
    assert accuracy["n"] == 2 and accuracy["ci_low"] == accuracy["mean"] == accuracy["ci_high"]  # identical seeds
    assert len(hallmarks.stability) == len(first.categories) > 0
    # from the size curves, the ratio at the main size is the stage's own specificity ratio
    intervene = metrics["intervene"]
    for category in first.categories:
        entry = intervene["specificity"][category]["disk_peak"]["responses92"]
        if first.notes.get(f"{category}.specificity_ratio") == "disk_peak/responses92":
            assert first.values[f"{category}.specificity_ratio@{intervene['main_size']:g}"] == pytest.approx(
                entry["specificity_ratio"])
    assert np.allclose(hallmarks.stability["r"], 1.0) and np.allclose(hallmarks.stability["dice_top"], 1.0)
