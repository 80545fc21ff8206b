"""Fixtures the patch-method parity tests share: one feature-cache folder per module and the
random-weight DINO backbones that read it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _patch_parity import parity_backbone  # noqa: E402


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory) -> Path:
    """A feature-cache folder shared by a module's tests (each image's features computed once)."""
    return tmp_path_factory.mktemp("parity-features")


@pytest.fixture(scope="module")
def backbones(feature_cache):
    """The parity ViT-S/16 and ViT-S/8 backbones, by ``parity_common`` architecture name."""
    return {arch: parity_backbone(arch, feature_cache) for arch in ("vits16", "vits8")}
