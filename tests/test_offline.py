"""Offline means no network call at all, not a fast one: with HF_HUB_OFFLINE or HARNESS_OFFLINE
set, resolving missing weights, through the API or the command line, opens no connection and no
URL (so it can never wait for a network time-out). Checked by counting calls, not by a clock."""
from __future__ import annotations

import socket
import urllib.request

import pytest

from harness.backbones.vit import DinoVitS8
from harness.cli import main
from harness.errors import HarnessError


@pytest.fixture
def network_calls(tmp_path, monkeypatch) -> list:
    """Empty weight caches; every attempt to open a URL or a socket is recorded and refused."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    calls = []

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise OSError(f"test: {name} refused")
        return call

    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return calls


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HARNESS_OFFLINE"])
def test_offline_resolution_opens_no_connection(network_calls, tmp_path, monkeypatch, capsys, variable):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(HarnessError, match=r"dino_deitsmall8_pretrain.pth not found and downloads are off"):
        DinoVitS8().weights_digest
    assert main(["run", "--method", "tokencut", "--dataset", "synthetic", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "dino_deitsmall16_pretrain.pth not found and downloads are off" in err and "Traceback" not in err
    assert network_calls == []


def test_online_the_same_resolution_does_try_the_url(network_calls, monkeypatch):
    """The premise of the test above: without the variables the download is attempted (and
    refused here), so an empty call list there means offline really skipped it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    with pytest.raises(HarnessError, match=r"the download from https://dl.fbaipublicfiles.com/dino/.* failed"):
        DinoVitS8().weights_digest
    assert network_calls == ["urlopen"]
