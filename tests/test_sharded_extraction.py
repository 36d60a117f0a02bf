"""Extraction split over DDP processes (Lightning ``Trainer.predict``): every rank writes its shard, rank 0 merges
them into exactly the store one process writes (issue 14)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT
from workbench.data.stimuli import StimulusSet
from workbench.features.extract import extract_activations
from workbench.features.sharded import extract_sharded, shard_rows, shards_folder
from workbench.features.store import StoreWriter, is_store, read_meta
from workbench.models import build_model

# what Lightning's launcher writes into os.environ, even for one process: a later subprocess must not inherit it
LAUNCHER_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK")
N_STIMULI = 37  # odd: two ranks cannot get equal shares, where a DistributedSampler would pad with a duplicate
LAYERS = ["conv2", "fc"]


@pytest.fixture(autouse=True)
def launcher_environment_restored():
    before = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def clean_env(**extra) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT), **extra}


def noise_stimuli(n: int = N_STIMULI) -> StimulusSet:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return StimulusSet(f"noise{n}", pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(n)]}), images)


def seeded_model():
    torch.manual_seed(0)
    return build_model({"name": "small_cnn"})


def assert_same_store(folder, reference):
    assert read_meta(folder) == read_meta(reference)  # stimulus ids, layers, shapes, projection and the cache key
    for name in read_meta(reference)["files"].values():
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_shares_are_whole_batches_without_padding():
    assert shard_rows(37, 8, 2) == [(0, 16), (16, 37)]       # 5 batches: 2 + 3, the last one short
    assert shard_rows(37, 8, 3) == [(0, 8), (8, 24), (24, 37)]
    assert shard_rows(5, 8, 2) == [(0, 0), (0, 5)]           # fewer batches than ranks: a rank with nothing
    for n, batch, world in [(37, 8, 2), (100, 7, 4), (3, 1, 5), (64, 64, 2)]:
        shares = shard_rows(n, batch, world)
        rows = [i for first, end in shares for i in range(first, end)]
        assert rows == list(range(n))                          # every stimulus once, in order
        assert all(first % batch == 0 for first, end in shares if end > first)  # the one-process batches


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_sharded_extraction import LAYERS, noise_stimuli, seeded_model
    from workbench.features.sharded import extract_sharded

    if __name__ == "__main__":
        acts = extract_sharded(seeded_model(), noise_stimuli(), sys.argv[1], LAYERS, devices=2, accelerator="cpu",
                               batch_size=8)
        print(f"rank with {len(acts.stimulus_ids)} stimuli", flush=True)
        # one batch for two ranks: rank 0 has nothing to extract, rank 1's shard is the whole store
        extract_sharded(seeded_model(), noise_stimuli(5), sys.argv[1] + "_5", LAYERS, devices=2, accelerator="cpu",
                        batch_size=8)
""")


@pytest.mark.slow
def test_two_gloo_processes_write_exactly_the_one_process_store(tmp_path):
    script = tmp_path / "sharded_probe.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "sharded"), str(ROOT / "tests")],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"rank with {N_STIMULI} stimuli") == 2  # both ranks return the merged store
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran: the same kernels, so the same bits
    try:
        for n, suffix in [(N_STIMULI, ""), (5, "_5")]:
            extract_activations(seeded_model(), noise_stimuli(n), LAYERS, batch_size=8, progress=False,
                                store=tmp_path / f"one{suffix}")
    finally:
        torch.set_num_threads(threads)
    assert_same_store(tmp_path / "sharded", tmp_path / "one")
    assert_same_store(tmp_path / "sharded_5", tmp_path / "one_5")
    assert not shards_folder(tmp_path / "sharded").exists() and not (tmp_path / "sharded.partial").exists()


def test_one_process_through_lightning_writes_the_store_and_reuses_it(tmp_path):
    model, stimuli = seeded_model(), noise_stimuli()
    extract_activations(model, stimuli, LAYERS, batch_size=8, progress=False, store=tmp_path / "one")
    stale = shards_folder(tmp_path / "sharded") / f"rows_{0:010d}_{16:010d}"
    stale.mkdir(parents=True)  # a shard an interrupted run left: cleared, never merged
    (stale / "meta.json").write_text("{}")
    acts = extract_sharded(model, stimuli, tmp_path / "sharded", LAYERS, devices=1, accelerator="cpu", batch_size=8)
    assert_same_store(tmp_path / "sharded", tmp_path / "one")
    assert not shards_folder(tmp_path / "sharded").exists() and isinstance(acts["fc"], np.memmap)
    assert not torch.distributed.is_initialized() and model.training  # its mode as it came
    assert "WORLD_SIZE" not in os.environ  # a later call with devices=2 launches its processes again
    stamp = (tmp_path / "sharded" / "layer_000.npy").stat().st_mtime_ns
    extract_sharded(model, stimuli, tmp_path / "sharded", LAYERS, devices=1, accelerator="cpu", batch_size=8)
    assert (tmp_path / "sharded" / "layer_000.npy").stat().st_mtime_ns == stamp  # same key: reused as it is


def test_an_interrupted_sharded_run_leaves_nothing_to_trust(tmp_path):
    model, stimuli = seeded_model(), noise_stimuli()
    calls = []

    def fail_on_third_batch(module, inputs, output):  # as a full disk would, halfway through
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    hook = model.conv1.register_forward_hook(fail_on_third_batch)
    try:
        with pytest.raises(OSError, match="No space left"):
            extract_sharded(model, stimuli, tmp_path / "s", LAYERS, devices=1, accelerator="cpu", batch_size=8)
    finally:
        hook.remove()
    assert sorted(tmp_path.iterdir()) == []  # no store, no .partial store, no shards
    assert not torch.distributed.is_initialized()


def test_a_shard_of_another_extraction_is_refused(tmp_path):
    from workbench.features.sharded import merge_shards

    ids = [f"s{i}" for i in range(4)]
    writer = StoreWriter(shards_folder(tmp_path / "s") / f"rows_{0:010d}_{4:010d}", ids, ["fc"], "another key")
    writer.write("fc", 0, np.zeros((4, 3), np.float32))
    writer.close({"fc": (3,)}, {"fc": None})
    with pytest.raises(RuntimeError, match="not written by this extraction"):
        merge_shards(tmp_path / "s", ids, ["fc"], "this key", [(0, 4)])
    assert not is_store(tmp_path / "s") and not (tmp_path / "s.partial").exists()


def test_bad_process_counts_are_named(tmp_path, monkeypatch):
    model, stimuli = seeded_model(), noise_stimuli(4)
    with pytest.raises(ValueError, match="devices must be a whole number >= 1"):
        extract_sharded(model, stimuli, tmp_path / "s", ["fc"], devices=0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="WORLD_SIZE=4 processes, but devices=2 x num_nodes=1"):
        extract_sharded(model, stimuli, tmp_path / "s", ["fc"], devices=2)


def test_a_bad_process_count_in_the_config_is_named():
    from conftest import TINY_OVERRIDES, compose_config
    from workbench.config import ConfigError
    from workbench.pipeline import resolve_config

    for override, message in [("extract.devices=0", "extract.devices must be >= 1, got 0"),
                              ("extract.num_nodes=two", "extract.num_nodes should be an integer, got 'two'")]:
        with pytest.raises(ConfigError, match=message):
            resolve_config(compose_config([*TINY_OVERRIDES, "stages=[extract]", override]))
