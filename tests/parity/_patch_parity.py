"""Helpers of the TokenCut, LOST and Deep Spectral parity tests: the random-weight backbones of
``parity_common``, the shared-data samples, and a method set up on them (features through a
shared temporary feature cache, so the methods read each image's features once)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.api import RunContext
from harness.backbones.vit import DinoVitS8Ep300, DinoVitS16
from harness.registry import get_registry

#: HARNESS_PARITY_FULL=1 compares every image the goldens hold (all 201 ECSSD and 50 VOC
#: images; minutes), otherwise the few images each golden file names as its default
FULL = os.environ.get("HARNESS_PARITY_FULL", "").strip().lower() in ("1", "true", "yes", "on")
BACKBONES = {"vits16": DinoVitS16, "vits8": DinoVitS8Ep300}


def parity_backbone(arch: str, folder: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from parity_common import parity_checkpoint

    backbone = BACKBONES[arch](weights=parity_checkpoint(arch, folder))
    backbone.load("cpu")
    return backbone


def dataset(name: str, root: Path):
    return get_registry().create("dataset", name, {}, root=root)


def method(name: str, backbone, cache_dir: Path, **config):
    plugin = get_registry().create("method", name, {k: str(v) for k, v in config.items()})
    plugin.setup(RunContext(backbone=backbone, cache_dir=cache_dir))
    return plugin


def grid_output(plugin, sample):
    """``(grid mask, grid box, geometry)`` of a patch-feature method for one sample."""
    features, geometry = plugin.patch_features([sample.without_labels()])[0]
    mask, box = plugin.segment(features, geometry, sample.without_labels())
    return np.asarray(mask, bool), box, geometry


def unpack(text: str, shape) -> np.ndarray:
    """A boolean grid from hex of its packed bits (row-major)."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))
    return bits[: int(np.prod(shape))].reshape(shape).astype(bool)
