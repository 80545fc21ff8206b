"""Shared fixtures: isolated caches and outputs, the real data folder, a fresh registry."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.registry import reset_registry

# --import-mode=importlib does not put tests/ on sys.path; the helper modules beside the tests need it
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _shared_data() -> Path | None:
    env = os.environ.get("HARNESS_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((path for path in candidates if (path / "ECSSD").is_dir()), None)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test gets its own cache folder, runs offline, and builds a fresh registry."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $HARNESS_TEST_DATA); tests using it skip when it is absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("real benchmark data not found: set HARNESS_TEST_DATA to shared/data")
    return path


@pytest.fixture(scope="session")
def ecssd_root(shared_data) -> Path:
    return shared_data / "ECSSD"


@pytest.fixture(scope="session")
def voc12_root(shared_data) -> Path:
    return shared_data / "VOC2012"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: two threads on two shared cores spin against the other
    jobs, and one is several times faster (use with ``pytest.mark.usefixtures``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
