"""The sha256 a run records for downloaded weights (``weights_digest``; it keys the caches) is the
digest of the bytes served, the downloaded file answers the next resolution without a second
download, and the digest cache (by path, size and modification time) never returns the digest
of bytes that changed. Permissions of a download: tests/test_weights_download.py. No network:
a file:// URL stands for the official address."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness.backbones.vit import DinoVitS16
from harness.backbones.weights import WeightsSource, file_digest, resolve_weights

NAME = "dino_deitsmall16_pretrain.pth"


@pytest.fixture
def online(tmp_path, monkeypatch) -> Path:
    """Downloads allowed, empty torch hub and Hugging Face caches; returns the hub checkpoints folder."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _served(tmp_path: Path) -> tuple[Path, str]:
    data = hashlib.sha256(b"weights").digest() * (5 * 2**20 // 64)  # 2.5 MiB: several 1 MiB reads
    path = tmp_path / "server" / NAME
    path.parent.mkdir()
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_the_recorded_digest_is_the_sha256_of_the_bytes_served(tmp_path, online, monkeypatch):
    served, digest = _served(tmp_path)
    monkeypatch.setattr(DinoVitS16, "source", WeightsSource(NAME, served.as_uri(), None))
    backbone = DinoVitS16()
    assert backbone.weights_path() == online / NAME
    assert backbone.weights_digest == digest


def test_the_next_resolution_reads_the_downloaded_file(tmp_path, online):
    served, digest = _served(tmp_path)
    source = WeightsSource(NAME, served.as_uri(), None)
    first = resolve_weights("dino-vits16", source, None)
    served.unlink()  # the "server" is gone: only the downloaded file can answer
    assert resolve_weights("dino-vits16", source, None) == first == online / NAME
    assert file_digest(first, tmp_path / "cache") == digest


def test_the_digest_cache_follows_the_bytes(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"a" * 1000)
    cache = tmp_path / "cache"
    assert file_digest(path, cache) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list((cache / "digests").iterdir())) == 1  # recorded once
    path.write_bytes(b"b" * 1000)  # same size, another modification time
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_digest(path, cache) == hashlib.sha256(b"b" * 1000).hexdigest()
