"""Deep Spectral Methods against lukemelas/deep-spectral-segmentation (goldens made by
``regenerate_deep_spectral.py``): the patch mask (``eigenvector[1] > 0`` of ``extract_eigs``)
and the box of ``object-localization/main.py --eigenseg`` on VOC2012 images, with the
random-weight ViT-S/16 (the README's ``dino_vits16``), full resolution cropped to a multiple
of 16. ``HARNESS_PARITY_FULL=1`` runs every image the goldens hold."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _patch_parity import FULL, dataset, grid_output, method, parity_backbone, unpack  # noqa: E402
from parity_common import GOLDENS  # noqa: E402

GOLDEN = json.loads((GOLDENS / "deep-spectral" / "boxes.json").read_text())
IDS = sorted(GOLDEN["images"]) if FULL else GOLDEN["default_ids"]


@pytest.fixture(scope="module")
def deep_spectral(feature_cache):
    return method("deep-spectral", parity_backbone("vits16", feature_cache), feature_cache)


def reference_mask(golden: dict) -> np.ndarray:
    """The patch mask ``get_bbox_from_patch_mask`` boxes: the stored one, inverted when more
    than half (not all) of it is set, the whole image when empty (its own two rules)."""
    mask = unpack(golden["patch_mask"], golden["grid"])
    if not mask.any():
        return np.ones_like(mask)
    return ~mask if 0.5 < mask.mean() < 1.0 else mask


@pytest.mark.parametrize("image_id", IDS)
def test_patch_masks_and_boxes_equal_the_reference(image_id, voc12_root, deep_spectral):
    golden = GOLDEN["images"][image_id]
    assert GOLDEN["weights"] == ["dino_deitsmall16_pretrain.pth"]
    sample = dataset("voc12", voc12_root).load(image_id)
    mask, _, geometry = grid_output(deep_spectral, sample)
    assert list(geometry.grid) == golden["grid"]
    np.testing.assert_array_equal(mask, reference_mask(golden))
    assert list(deep_spectral.predict(sample.without_labels()).box) == golden["box"]
