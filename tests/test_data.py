import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.spatial.distance import squareform

from workbench.data import (CIFAR10DataModule, ChecksumError, DataNotFoundError, StimulusSet, load_assembly,
                            load_model_rdms, load_rdms, load_recording, load_responses, load_stimuli,
                            validate_assembly)


def test_92_images_and_categories(k92):
    assert k92.images.shape == (92, 175, 175, 3) and k92.images.dtype == np.uint8
    counts = k92.metadata["category"].value_counts().to_dict()
    assert counts == {"human bodypart": 12, "human face": 12, "nonhuman bodypart": 12, "nonhuman face": 12,
                      "natural inanimate": 23, "artificial inanimate": 21}
    # block order given in the README
    assert (k92.metadata["category"].iloc[12:24] == "human face").all()
    sums = {c: int(k92.metadata[c].sum()) for c in ["animate", "inanim", "human", "face", "body", "monkeyape"]}
    assert sums == {"animate": 48, "inanim": 44, "human": 24, "face": 24, "body": 24, "monkeyape": 7}
    assert k92.metadata["stimulus_id"].is_unique


def test_hit_rdm_stack(data_root):
    hit = load_rdms("kriegeskorte2008", "hIT")
    assert hit.dims == ("subject", "session", "stimulus", "stimulus_b") and hit.shape == (4, 2, 92, 92)
    v = hit.values
    assert np.allclose(v, np.swapaxes(v, -1, -2)) and np.all(np.diagonal(v, axis1=-2, axis2=-1) == 0)
    assert list(hit.subject.values) == ["BE", "KO", "SN", "TI"]


def test_mit_matches_model_rdm(data_root):
    mit = load_rdms("kriegeskorte2008", "mIT")
    models = load_model_rdms("kriegeskorte2008")
    assert mit.shape == (1, 1, 92, 92)
    assert np.array_equal(mit.values[0, 0], models.sel(model="monkeyIT").values)
    # the condensed vector round-trips through squareform
    assert np.array_equal(squareform(squareform(mit.values[0, 0])), mit.values[0, 0])


def test_v4_responses_align_with_images(data_root):
    stim = load_stimuli("cowley_v4_201025")
    resp = load_responses("cowley2023_v4", session="201025")
    assert stim.images.shape == (1200, 112, 112, 3)
    assert resp.dims == ("presentation", "neuroid") and resp.shape == (1200, 89)
    assert list(resp["stimulus_id"].values) == list(stim.stimulus_ids)
    assert set(resp["region"].values) == {"V4"}
    trials = load_responses("cowley2023_v4", session="210325", trials=True)
    assert trials.dims == ("presentation", "neuroid", "repetition") and trials.shape == (640, 50, 10)
    avg = load_responses("cowley2023_v4", session="210325")
    assert np.allclose(np.nanmean(trials.values, axis=2), avg.values)
    with pytest.raises(ValueError, match="no trial-level data"):
        load_responses("cowley2023_v4", session="201025", trials=True)
    with pytest.raises(KeyError, match="unknown V4 session"):
        load_responses("cowley2023_v4", session="999999")


def test_cifar_subset(data_root):
    dm = CIFAR10DataModule(subset=1000, test_subset=200, batch_size=50)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 1000 and len(dm.test_set) == 200
    labels = dm.test_set.targets
    assert np.bincount(labels).tolist() == [20] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 3, 32, 32) and y.shape == (50,)


def test_missing_data_root_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="WORKBENCH_DATA"):
        load_stimuli("kriegeskorte92")
    with pytest.raises(DataNotFoundError, match="CIFAR-10"):
        CIFAR10DataModule(subset=10).setup()


def test_wrong_checksum(tmp_path, monkeypatch, data_root):
    target = tmp_path / "kriegeskorte2008" / "92_brainRDMs.mat"
    target.parent.mkdir(parents=True)
    shutil.copy(data_root / "kriegeskorte2008" / "92_brainRDMs.mat", target)
    with open(target, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00corrupt")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    with pytest.raises(ChecksumError, match="delete it"):
        load_rdms("kriegeskorte2008", "hIT")


def _user_assembly(tmp_path, ids, n_neuroids=3):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for sid in ["a", "b", "c", "d"]:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{sid}.png")
    resp = rng.normal(size=(len(ids), n_neuroids))
    np.savez(tmp_path / "assembly.npz", responses=resp, stimulus_id=np.array(ids))
    return tmp_path / "assembly.npz", folder, resp


def test_user_assembly_loads_in_stimulus_order(tmp_path):
    path, folder, resp = _user_assembly(tmp_path, ["d", "b", "a"])
    assembly, stimuli = load_recording(path, folder)
    assert list(stimuli.stimulus_ids) == ["d", "b", "a"]
    assert isinstance(load_assembly(path, folder), xr.DataArray)  # as the README says
    assert np.array_equal(assembly.values, resp)
    # netCDF round trip
    assembly.to_netcdf(tmp_path / "a.nc")
    again = load_assembly(tmp_path / "a.nc", folder)
    assert np.array_equal(again.values, resp)


def test_user_assembly_mismatched_ids(tmp_path):
    path, folder, _ = _user_assembly(tmp_path, ["a", "b", "zebra"])
    with pytest.raises(ValueError, match="zebra"):
        load_assembly(path, folder)


def test_nan_policy(tmp_path):
    data = np.arange(12, dtype=float).reshape(4, 3)
    data[1, 2] = np.nan
    a = xr.DataArray(data, dims=("presentation", "neuroid"), coords={"stimulus_id": ("presentation", list("abcd"))})
    with pytest.raises(ValueError, match="NaN"):
        validate_assembly(a)
    assert validate_assembly(a, nan_policy="drop_neuroids").shape == (4, 2)
    assert validate_assembly(a, nan_policy="drop_presentations").shape == (3, 3)
    with pytest.raises(ValueError, match="dims"):
        validate_assembly(a.T)


def test_stimulus_set_validation():
    meta = pd.DataFrame({"stimulus_id": ["a", "a"]})
    with pytest.raises(ValueError, match="unique"):
        StimulusSet("x", meta, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2 images but 1"):
        StimulusSet("x", pd.DataFrame({"stimulus_id": ["a"]}), np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(KeyError, match="unknown stimulus set"):
        load_stimuli("kriegeskorte93")


def test_image_folder_datamodule(tmp_path):
    from PIL import Image

    from workbench.data import ImageFolderDataModule

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.jpg")
    dm = ImageFolderDataModule(tmp_path, batch_size=4, num_workers=0, image_size=32, subset=4)
    dm.setup()
    assert dm.classes == ["cat", "dog"] and len(dm.train_set) == 4 and len(dm.val_set) == 8
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        ImageFolderDataModule(tmp_path / "nowhere")
