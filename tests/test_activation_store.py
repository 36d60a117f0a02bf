"""Streamed extraction: activations written batch by batch to an on-disk store, read back lazily (issue 14)."""

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.stimuli import StimulusSet
from workbench.features.extract import extract_activations
from workbench.features.store import is_store, open_store
from workbench.models import build_model
from workbench.run import ArtefactError, RunDir


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"})
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    stimuli = StimulusSet("noise40", pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(40)]}), images)
    return model, stimuli


def test_a_store_holds_what_memory_holds_and_reads_lazily(small, tmp_path):
    model, stimuli = small
    in_memory = extract_activations(model, stimuli, ["conv2", "fc"], batch_size=16, progress=False)
    stored = extract_activations(model, stimuli, ["conv2", "fc"], batch_size=16, progress=False,
                                 store=tmp_path / "s")
    assert is_store(tmp_path / "s") and not (tmp_path / "s.partial").exists()
    for layer in ("conv2", "fc"):
        assert isinstance(stored[layer], np.memmap)
        np.testing.assert_array_equal(stored[layer], in_memory[layer])
    assert stored.unit_shapes == in_memory.unit_shapes and list(stored.stimulus_ids) == list(stimuli.stimulus_ids)


def test_a_store_is_reused_only_for_the_same_weights(small, tmp_path):
    model, stimuli = small
    extract_activations(model, stimuli, ["fc"], batch_size=16, progress=False, store=tmp_path / "s")
    stamp = (tmp_path / "s" / "layer_000.npy").stat().st_mtime_ns
    extract_activations(model, stimuli, ["fc"], batch_size=16, progress=False, store=tmp_path / "s")
    assert (tmp_path / "s" / "layer_000.npy").stat().st_mtime_ns == stamp
    changed = build_model({"name": "small_cnn"})
    again = extract_activations(changed, stimuli, ["fc"], batch_size=16, progress=False, store=tmp_path / "s")
    expected = extract_activations(changed, stimuli, ["fc"], batch_size=16, progress=False)
    np.testing.assert_array_equal(again["fc"], expected["fc"])


def test_an_interrupted_extraction_leaves_no_store(small, tmp_path):
    model, stimuli = small
    calls = []

    def fail_on_third_batch(module, inputs, output):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    hook = model.conv1.register_forward_hook(fail_on_third_batch)
    try:
        with pytest.raises(KeyboardInterrupt):
            extract_activations(model, stimuli, ["fc"], batch_size=8, progress=False, store=tmp_path / "s")
    finally:
        hook.remove()
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_a_changed_store_file_is_refused_and_discarded(small, tmp_path):
    model, stimuli = small
    run = RunDir(tmp_path / "run")
    run.writing_stage = "extract"
    extract_activations(model, stimuli, ["fc"], batch_size=16, progress=False,
                        store=run.activations_store_path("noise40"))
    run.record_store("noise40")
    assert run.activation_sets() == ["noise40"]
    np.testing.assert_array_equal(run.load_activations("noise40")["fc"],
                                  open_store(run.activations_store_path("noise40"))["fc"])
    layer_file = run.activations_store_path("noise40") / "layer_000.npy"
    data = np.load(layer_file)
    np.save(layer_file, data[::-1].copy())  # rows permuted
    with pytest.raises(ArtefactError, match="layer_000.npy changed.*extract stage") as err:
        run.load_activations("noise40")
    run.discard_artefact(err.value.path)
    assert not run.activations_store_path("noise40").exists()


@pytest.mark.slow
def test_the_extract_stage_streams_and_alignment_reads_the_store(tiny_run, tiny_config, tmp_path):
    from workbench.pipeline import run_pipeline

    source, metrics = tiny_run
    run = RunDir(shutil.copytree(source.path, tmp_path / "run"))
    cfg = {**tiny_config, "extract": {**tiny_config["extract"], "store_above": 0}}
    again = run_pipeline(cfg, run, stages=["extract", "align"], force=True, log=lambda _m: None)
    for name in again["extract"]["stimulus_sets"]:
        assert is_store(run.activations_store_path(name)) and not run.activations_path(name).exists()
    for key in ("best_hIT_score", "best_ridge_cowley_v4_210325_median_r"):
        assert again["align"]["summary"][key] == pytest.approx(metrics["align"]["summary"][key], abs=1e-6), key


def _image_folder(tmp_path, n=12):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def test_a_lazy_set_decodes_only_what_is_used_and_extracts_the_same(small, tmp_path):
    from workbench.data.lazy import LazyImages

    model, _ = small
    folder = _image_folder(tmp_path)
    eager = StimulusSet.from_folder(folder)
    lazy = StimulusSet.from_folder(folder, lazy=True)
    assert isinstance(lazy.images, LazyImages) and lazy.images.shape == eager.images.shape
    np.testing.assert_array_equal(lazy.images[3:5], eager.images[3:5])
    assert lazy.content_hash() != eager.content_hash()  # the files' bytes, not the pixels, are hashed
    half = lazy.subset(slice(0, 6))
    assert isinstance(half.images, LazyImages) and len(half) == 6
    expected = extract_activations(model, eager, ["fc"], batch_size=5, progress=False)
    for workers in (0, 2):
        got = extract_activations(model, lazy, ["fc"], batch_size=5, progress=False, num_workers=workers,
                                  store=tmp_path / f"s{workers}")
        np.testing.assert_allclose(got["fc"], expected["fc"], atol=1e-6)


def test_lazy_images_from_a_zip(tmp_path):
    import zipfile

    from workbench.data.lazy import LazyImages

    folder = _image_folder(tmp_path, n=4)
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as z:
        for path in sorted(folder.iterdir()):
            z.write(path, f"imgs/{path.name}")
    images = LazyImages.from_zip(tmp_path / "set.zip", size=16)
    assert images.shape == (4, 16, 16, 3) and images[1:3].shape == (2, 16, 16, 3)


def test_a_very_sparse_projection_preserves_distances_with_few_non_zeros():
    from workbench.features.extract import sparse_random_projection

    n_units, k = 20000, 512
    matrix = sparse_random_projection(n_units, k, seed=0, device="cpu")
    assert matrix.shape == (k, n_units) and matrix.layout == torch.sparse_csr
    expected_nnz = k * np.sqrt(n_units)
    assert abs(matrix.values().numel() - expected_nnz) < 5 * np.sqrt(expected_nnz)  # binomial spread
    x = torch.randn(20, n_units)
    projected = (matrix @ x.T).T
    ratio = torch.pdist(projected) / torch.pdist(x)
    assert abs(float(ratio.mean()) - 1) < 0.05 and float(ratio.std()) < 0.1  # Johnson-Lindenstrauss
    again = sparse_random_projection(n_units, k, seed=0, device="cpu")
    assert torch.equal(again.col_indices(), matrix.col_indices()) and torch.equal(again.values(), matrix.values())


def test_reductions_give_their_widths_and_refuse_bad_combinations(small):
    model, stimuli = small
    full = extract_activations(model, stimuli, ["conv2"], progress=False)
    sparse = extract_activations(model, stimuli, ["conv2"], progress=False, projection_dim=64, reduction="sparse")
    pooled = extract_activations(model, stimuli, ["conv2"], progress=False, reduction="pool")
    channels = full.unit_shapes["conv2"][0]
    assert sparse["conv2"].shape == (40, 64) and sparse.projection["conv2"]["kind"] == "sparse"
    assert pooled["conv2"].shape == (40, channels) and pooled.unit_shapes["conv2"] == (channels,)
    means = full["conv2"].reshape(40, channels, -1).mean(2)
    np.testing.assert_allclose(pooled["conv2"], means, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="takes no projection_dim"):
        extract_activations(model, stimuli, ["conv2"], progress=False, projection_dim=8, reduction="pool")
    with pytest.raises(ValueError, match="unknown reduction"):
        extract_activations(model, stimuli, ["conv2"], progress=False, reduction="pca")


def test_an_unwritable_store_folder_is_refused_before_any_extraction(small, tmp_path, monkeypatch):
    model, stimuli = small
    calls = []
    hook = model.conv1.register_forward_hook(lambda *args: calls.append(1))
    try:
        (tmp_path / "a_file").write_text("not a folder")
        with pytest.raises(OSError, match=r"cannot write the activation store .*a_file.*s .*make .*a_file writable"):
            extract_activations(model, stimuli, ["fc"], progress=False, store=tmp_path / "a_file" / "s")
        read_only = tmp_path / "read_only"
        read_only.mkdir()
        read_only.chmod(0o500)
        if os.access(read_only, os.W_OK):  # root writes anyway: the refusal is then the filesystem's
            monkeypatch.setattr(Path, "mkdir", _refuse_mkdir)
        with pytest.raises(PermissionError, match=rf"cannot write the activation store {read_only}.*writable"):
            extract_activations(model, stimuli, ["fc"], progress=False, store=read_only / "s")
        monkeypatch.undo()
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep me")
        with pytest.raises(FileExistsError, match="not an activation store"):
            extract_activations(model, stimuli, ["fc"], progress=False, store=tmp_path / "mine")
        assert (tmp_path / "mine" / "notes.txt").exists()
    finally:
        hook.remove()
    assert not calls  # no forward pass ran


def _refuse_mkdir(self, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", str(self))


def test_a_full_disk_leaves_no_store_a_rerun_would_trust(small, tmp_path, monkeypatch):
    import workbench.features.store as store

    model, stimuli = small[0], small[1].subset(slice(0, 16))
    writes = []
    original = store._write_at

    def fill_the_disk_at_the_third_write(handle, position, data):
        writes.append(1)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(handle, position, data)

    monkeypatch.setattr(store, "_write_at", fill_the_disk_at_the_third_write)
    with pytest.raises(OSError, match="disk filled while writing the activation store .*removed.*Free space"):
        extract_activations(model, stimuli, ["conv2", "fc"], batch_size=8, progress=False, store=tmp_path / "s")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(OSError, match=r"needs 0.00\d* GB more but its disk has 0.00 GB free"):
        extract_activations(model, stimuli, ["fc"], batch_size=8, progress=False, store=tmp_path / "s")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    monkeypatch.undo()
    (tmp_path / "s.partial").mkdir()  # what a killed process (no clean-up) leaves: never read, replaced
    (tmp_path / "s.partial" / "layer_000.npy").write_bytes(b"half")
    rerun = extract_activations(model, stimuli, ["conv2", "fc"], batch_size=8, progress=False, store=tmp_path / "s")
    expected = extract_activations(model, stimuli, ["conv2", "fc"], batch_size=8, progress=False)
    for layer in ("conv2", "fc"):
        np.testing.assert_array_equal(rerun[layer], expected[layer])
    assert not (tmp_path / "s.partial").exists()
