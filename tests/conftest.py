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


def compose_config(overrides=(), experiment: str | None = None) -> dict:
    """The resolved config of ``workbench <overrides>`` as a plain dict (Hydra's compose API, no run)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    args = list(overrides) + ([f"experiment={experiment}"] if experiment else [])
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args, return_hydra_config=False)
    return OmegaConf.to_container(cfg, resolve=True)


TINY_OVERRIDES = ("preset=tiny", "run_dir=unused", "sweep_dir=unused")


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The default study's config with preset=tiny (seconds-long settings)."""
    return compose_config(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_run(data_root, tiny_config, tmp_path_factory):
    """One full tiny run of the default study, shared by the tests that read a real run (report, headlines).
    Returns (RunDir, metrics)."""
    from workbench.pipeline import run_pipeline
    from workbench.run import RunDir

    run = RunDir(tmp_path_factory.mktemp("tiny_run"))
    metrics = run_pipeline(tiny_config, run, log=lambda _msg: None)
    return run, metrics
