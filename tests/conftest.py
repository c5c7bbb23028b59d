"""Shared test fixtures.

Real data files live outside the repository (licences forbid committing them): tests find
them through ``TD3_SHARED_DATASETS`` (default ``<repo>/../shared/datasets``) and skip with
a clear reason when they are absent. Tests never touch the user's ``~/.cache``: the data
fixtures point ``TD3_DATA_DIR`` at a temporary directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One torch thread per test process: the suite runs on as many workers as there are cores
# (pytest -n), and OpenMP threads of two processes sharing a core wait on each other
# (a TD3 outer step went from 2 s to minutes that way). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:          # run without installing the package
    sys.path.insert(0, str(REPO_ROOT))

# On a GPU machine, tests that run learners in this process (device=auto) start cuBLAS
# before any run's own setup could ask for its deterministic workspace: ask now, before CUDA
# starts (td3/device.py). Subprocesses inherit it.
from td3.device import prepare_cuda  # noqa: E402

prepare_cuda()

NO_GPU = "no CUDA device: torch.cuda.is_available() is False (the cuda tests run where a GPU is visible; docs/gpu.md)"


def shared_datasets_dir() -> Path:
    configured = os.environ.get("TD3_SHARED_DATASETS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The directory of real data files (skips the test when it is missing)."""
    root = shared_datasets_dir()
    if not (root / "ml-100k" / "ml-100k.inter").is_file():
        pytest.skip(f"real datasets not found at {root} (set TD3_SHARED_DATASETS to the "
                    f"folder described in shared/datasets/README.md)")
    return root


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data directory in TD3_DATA_DIR, with no mirror configured."""
    directory = tmp_path / "td3-data"
    monkeypatch.setenv("TD3_DATA_DIR", str(directory))
    monkeypatch.delenv("TD3_DATA_MIRROR", raising=False)
    return directory


@pytest.fixture
def mirror_data_dir(data_dir, shared_datasets, monkeypatch) -> Path:
    """An empty data directory whose files come from the shared real-data mirror."""
    monkeypatch.setenv("TD3_DATA_MIRROR", str(shared_datasets))
    return data_dir


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Every test that uses the local SLURM runs on one xdist worker: one cluster, one port.
    Tests marked ``cuda`` share one worker too (one GPU), and skip, saying why, without one."""
    gpu = None
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        if item.get_closest_marker("cuda") is not None:
            if gpu is None:
                import torch
                gpu = torch.cuda.is_available()
            item.add_marker(pytest.mark.xdist_group("cuda") if gpu else pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(scope="session")
def slurm_session():
    """The project's local SLURM (slurm/local-cluster.sh), started once for the session.
    Skips where it cannot run (not root, or the Debian packages missing); CI installs them."""
    import slurm_cluster

    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    env = slurm_cluster.start()
    yield env
    slurm_cluster.stop()


@pytest.fixture
def slurm(slurm_session):
    """The environment variables a SLURM client needs; each test starts on an empty queue and
    a usable node, and what a test left broken is reported as a warning, then repaired."""
    import warnings

    import slurm_cluster

    repaired = slurm_cluster.reset(slurm_session)
    if repaired:
        warnings.warn(f"local SLURM repaired before the test: {repaired}")
    yield slurm_session
    repaired = slurm_cluster.reset(slurm_session)
    if repaired:
        warnings.warn(f"local SLURM repaired after the test: {repaired}")
