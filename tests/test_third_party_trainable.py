"""A third-party backbone trains and evaluates the built-in trainable methods through the public API.

``examples/third_party_trainable`` (distribution ``harness-tiny-cnn``) ships the backbone
``tiny-cnn``: three random-weight convolutions whose weights are a file in the package. Its
wheel is built and installed into a private site folder; then, through the command line only:
Sempart is trained on it (one epoch) and evaluated with ``harness run``, and SelfMask is trained
on the masks of a center-prior run (fine-tuning the backbone's network) and evaluated.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from example_dists import install_example

DATA = ["--dataset", "synthetic", "--dataset-args", "count=4,height=48,width=64"]
COMMON = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example's wheel, built and installed into a private site folder."""
    return install_example("third_party_trainable", "harness_tiny_cnn-0.1.0-*.whl",
                           tmp_path_factory.mktemp("third_party_trainable"))


def _harness(site: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_DISABLE_PLUGIN_AUTOLOAD", None)
    done = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _results(out: Path) -> dict:
    (path,) = out.glob("*/results.json")
    return json.loads(path.read_text())


def test_sempart_and_selfmask_train_and_run_on_a_third_party_backbone(site, tmp_path):
    cache = tmp_path / "cache"
    weights = site / "harness_tiny_cnn" / "tiny_cnn.pt"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    shipped = torch.load(weights, map_location="cpu", weights_only=True)

    listed = _harness(site, cache, "list", "backbones").stdout
    line = next(line for line in listed.splitlines() if line.startswith("tiny-cnn"))
    assert "harness-tiny-cnn 0.1.0" in line and line.rstrip().endswith("ok")

    # Sempart: a head on the backbone's frozen features
    _harness(site, cache, "train", "--method", "sempart", "--backbone", "tiny-cnn", *DATA, "--method-args",
             "image_size=32", "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "sempart"), *COMMON)
    ckpt = torch.load(tmp_path / "sempart" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert (ckpt["backbone"], ckpt["weights_digest"], ckpt["epoch"]) == ("tiny-cnn", digest, 1)
    assert ckpt["model"]["project.weight"].shape[1] == 16  # the head reads the backbone's 16 channels
    _harness(site, cache, "run", "--method", "sempart", "--method-args",
             f"checkpoint={tmp_path / 'sempart' / 'checkpoint_last.pt'}", *DATA, "--out", str(tmp_path / "runs1"),
             *COMMON)
    scored = _results(tmp_path / "runs1")
    assert scored["config"]["backbone"]["name"] == "tiny-cnn"  # taken from the checkpoint
    assert scored["weights_digest"] == digest and scored["counts"]["n_computed"] == 4
    assert "backbone tiny-cnn: harness-tiny-cnn 0.1.0" in scored["versions"]["plugins"]
    assert 0 <= scored["metrics"]["iou"] <= 1 and scored["metrics"]["n_images"] == 4

    # SelfMask: the backbone's network fine-tuned on a center-prior run's masks
    _harness(site, cache, "run", "--method", "center-prior", *DATA, "--out", str(tmp_path / "teacher"), *COMMON)
    (teacher,) = (tmp_path / "teacher").iterdir()
    _harness(site, cache, "train", "--method", "selfmask", "--pseudo-masks", str(teacher), "--backbone", "tiny-cnn",
             *DATA, "--method-args", "image_size=32,decoder_dim=32,heads=2,decoder_layers=2,queries=5",
             "--epochs", "1", "--batch-size", "2", "--lr", "1e-4", "--out", str(tmp_path / "selfmask"), *COMMON)
    ckpt = torch.load(tmp_path / "selfmask" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert ckpt["backbone"] == "tiny-cnn" and ckpt["pseudo_masks"]["method"] == "center-prior"
    encoder = {k[len("encoder.net."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.net.")}
    assert encoder.keys() == shipped.keys()  # the backbone's whole network, fine-tuned
    moved = max(float((encoder[k] - shipped[k]).abs().max()) for k in shipped)
    # two AdamW steps at lr 1e-4 move a weight by about 2e-4: it started from the shipped weights
    # (a fresh initialisation would be ~0.1 away) and it did train
    assert 0 < moved < 1e-3, moved
    _harness(site, cache, "run", "--method", "selfmask", "--method-args",
             f"checkpoint={tmp_path / 'selfmask' / 'checkpoint_last.pt'}", *DATA, "--out", str(tmp_path / "runs2"),
             *COMMON)
    scored = _results(tmp_path / "runs2")
    assert scored["config"]["backbone"]["name"] == "tiny-cnn" and scored["weights_digest"] == digest
    assert scored["config"]["method_token"]["display_name"] == "SelfMask w/ center-prior"
    assert 0 <= scored["metrics"]["iou"] <= 1 and scored["counts"]["n_computed"] == 4
