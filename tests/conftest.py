import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests never download: every data file comes from WORKBENCH_DATA (CI sets it to ../shared/data).
os.environ["WORKBENCH_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
if not os.environ.get("WORKBENCH_DATA") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["WORKBENCH_DATA"] = str(ROOT.parent / "shared" / "data")


def _have_data() -> bool:
    root = os.environ.get("WORKBENCH_DATA")
    return bool(root) and (Path(root) / "kriegeskorte2008").is_dir()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not _have_data():
        pytest.skip("WORKBENCH_DATA is not set to the workbench data folder (CI sets it to ../shared/data)")
    return Path(os.environ["WORKBENCH_DATA"])


@pytest.fixture(scope="session")
def k92(data_root):
    from workbench.data import load_stimuli

    return load_stimuli("kriegeskorte92")
