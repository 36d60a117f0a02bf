"""Out-of-core alignment: blocked RDMs and Gram matrices equal the in-memory results (issue 14)."""

import numpy as np
import pytest

from workbench.alignment.blocked import compute_rdm_blocked, gram_blocked
from workbench.alignment.rsa import compute_rdm


@pytest.mark.parametrize("metric", ["correlation", "cosine", "euclidean"])
@pytest.mark.parametrize("block", [7, 64])
def test_a_blocked_rdm_equals_the_in_memory_one(metric, block, tmp_path):
    x = np.random.default_rng(1).standard_normal((50, 33)) + 2.0
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")  # as an activation store hands it over
    out = np.lib.format.open_memmap(tmp_path / "rdm.npy", mode="w+", dtype=np.float64, shape=(50, 50))
    blocked = compute_rdm_blocked(mapped, metric, block=block, out=out)
    np.testing.assert_allclose(blocked, compute_rdm(np.asarray(mapped), metric), atol=1e-12, rtol=0)
    assert np.array_equal(blocked, blocked.T) and not np.diag(blocked).any()


def test_a_blocked_rdm_refuses_what_compute_rdm_refuses():
    x = np.random.default_rng(0).standard_normal((10, 4))
    x[3] = 1.0
    with pytest.raises(ValueError, match="constant pattern"):
        compute_rdm_blocked(x, "correlation", block=4)
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_rdm_blocked(x, "euclidean", block=4)
    with pytest.raises(ValueError, match="crossnobis"):
        compute_rdm_blocked(x, "crossnobis")
    dead = np.ones((10, 4)) * 3.0 + 1e-9 * np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(ValueError, match="layer 'x'.*same to within rounding"):
        compute_rdm_blocked(dead, "euclidean", block=4, name="layer 'x'")


def test_a_gram_over_feature_blocks_equals_the_product():
    x = np.random.default_rng(2).standard_normal((30, 101))
    np.testing.assert_allclose(gram_blocked(x, feature_block=16), x @ x.T, atol=1e-10)
    train, test = np.arange(20), np.arange(20, 30)
    np.testing.assert_allclose(gram_blocked(x, 16, rows=test, other_rows=train), x[test] @ x[train].T, atol=1e-10)
