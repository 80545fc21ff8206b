"""A backbone's weights file fetched by the harness: whole or absent, with the umask's permissions.

The "download" reads a local ``file://`` address through the same ``urllib`` call, so no
network is used.
"""
from __future__ import annotations

import os
import stat

import pytest

from harness.backbones.weights import WeightsSource, resolve_weights
from harness.errors import HarnessError


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Downloads allowed, the torch hub cache in a temporary folder."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_downloaded_weights_file_gets_the_umasks_permissions(online, tmp_path, umask):
    payload = os.urandom(3 * (1 << 20) + 17)  # more than one 1 MiB chunk
    served = tmp_path / "served.pth"
    served.write_bytes(payload)
    old = os.umask(umask)
    try:
        path = resolve_weights("test-backbone", WeightsSource("official.pth", served.as_uri()), None)
    finally:
        os.umask(old)
    assert path == online / "official.pth"
    assert path.read_bytes() == payload
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in online.iterdir()) == ["official.pth"]  # no temporary left


def test_a_failed_download_leaves_nothing(online, tmp_path):
    missing = (tmp_path / "not-served.pth").as_uri()
    with pytest.raises(HarnessError, match=r"official\.pth not found and the download from .* failed"):
        resolve_weights("test-backbone", WeightsSource("official.pth", missing), None)
    assert not online.exists() or list(online.iterdir()) == []


def test_offline_never_downloads(online, tmp_path, monkeypatch):
    served = tmp_path / "served.pth"
    served.write_bytes(b"weights")
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    with pytest.raises(HarnessError, match="downloads are off"):
        resolve_weights("test-backbone", WeightsSource("official.pth", served.as_uri()), None)
    assert not (online / "official.pth").exists()
