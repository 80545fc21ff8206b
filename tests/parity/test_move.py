"""The ``move`` adapter and the ``bs`` post-processor against MOVE's own scripts (goldens made by
``regenerate_move.py``: ``infer.py --bilateral`` with a stub network, then ``segmentation_eval.py``).

- MOVE saves ``(p * 255).astype(uint8)`` PNGs at its working size (shorter side 448) and scores
  them after ``Image.open(...).convert("L").resize(gt.size, Image.BILINEAR)`` and ``/ 255``: the
  adapter gives the same masks, value for value, and the same per-image IoU (before: OpenCV
  bilinear on floats, rounded by the runner: up to 2/255 off on 3-4 % of the pixels, 9-15 pixels
  per image on the other side of 0.5, IoU off by up to 1.8e-4; when shrinking, PIL also
  antialiases and OpenCV does not).
- MOVE's ``--bilateral`` resizes the float 448 mask to the image with ``cv2.resize`` and runs
  the solver with 16/16/8: ``bs`` on that target gives the same output (max |diff| 2e-14).
  ``harness run --method move --post bs`` instead solves on the adapter's mask (PIL-resized,
  on the 1/255 grid): a documented difference (measured max |diff| 2.6e-3, > 0.5 masks the same
  on 99.98 % of pixels or more); MOVE also truncates its saved bilateral PNG (``astype(uint8)``)
  where the harness rounds (4-86 pixels per image change side of 0.5). To score MOVE's own bilateral result exactly, point the adapter at
  its ``*_bilateral`` folder (image size: read as is).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cache import quantize_mask
from harness.methods.bilateral_solver import BilateralSolver
from harness.methods.masks import MaskFolder, MOVEMasks
from harness.registry import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS  # noqa: E402
from test_bilateral_solver import compare, same_blas  # noqa: E402

GOLDEN = GOLDENS / "move"
RECORD = json.loads((GOLDEN / "metrics.json").read_text())
IDS = RECORD["ids"]


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


@pytest.fixture(scope="module")
def samples(ecssd_root):
    dataset = get_registry().create("dataset", "ecssd", {}, root=ecssd_root)
    return {i: dataset.load(i) for i in IDS}


@pytest.fixture()
def saved(tmp_path):
    """MOVE's saved PNGs in a folder named as MOVE names them (<stem>.png)."""
    shutil.copytree(GOLDEN / "saved", tmp_path / "saved")
    return tmp_path / "saved"


def test_move_adapter_reads_masks_as_moves_evaluation(samples, saved):
    adapter = MOVEMasks(dir=saved)
    adapter.check_inputs(IDS)
    for sample_id in IDS:
        sample = samples[sample_id]
        assert min(png(saved / f"{sample_id}.png").shape) == 448
        mask = adapter.predict(sample).mask
        expected = png(GOLDEN / f"loaded_{sample_id}.png")
        assert mask.shape == expected.shape == sample.image.shape[:2]
        np.testing.assert_array_equal(mask * 255, expected)  # value for value, on the 1/255 grid
        np.testing.assert_array_equal(quantize_mask(mask), expected)  # and after the runner's uint8 step
        # the same per-image IoU as MOVE's segmentation_eval.py (threshold 0.5 on both)
        pred, gt = mask > 0.5, sample.mask > 127
        iou = (pred & gt).sum() / ((pred | gt).sum() + 1e-8)
        assert iou == pytest.approx(RECORD["metrics"]["saved"]["iou"][sample_id], abs=1e-6)


def test_generic_adapter_is_the_former_move_behaviour(samples, saved):
    """Before: the ``move`` adapter resized like ``masks`` does (OpenCV, float): 2/255 off at
    the blob edges (the generic adapter keeps that behaviour)."""
    generic = MaskFolder(dir=saved)
    worst = 0
    for sample_id in IDS:
        before = quantize_mask(generic.predict(samples[sample_id]).mask).astype(int)
        worst = max(worst, int(np.abs(before - png(GOLDEN / f"loaded_{sample_id}.png")).max()))
    assert worst >= 2


def test_move_adapter_reads_moves_bilateral_pngs_as_they_are(samples, tmp_path):
    (first,) = [p.stem for p in (GOLDEN / "bilateral").glob("*.png")]
    shutil.copytree(GOLDEN / "bilateral", tmp_path / "bilateral")
    stored = png(tmp_path / "bilateral" / f"{first}.png")
    assert sha(stored) == RECORD["images"][first]["bilateral_png_sha256"]
    assert stored.shape == samples[first].image.shape[:2]
    mask = MOVEMasks(dir=tmp_path / "bilateral").predict(samples[first]).mask
    np.testing.assert_array_equal(mask * 255, stored)


@pytest.mark.parametrize("index,sample_id", list(enumerate(IDS)))
def test_bs_equals_moves_bilateral_solver(index, sample_id, samples):
    import cv2

    sample, info = samples[sample_id], RECORD["images"][sample_id]
    assert info["bs_settings"] == {"sigma_spatial": 16, "sigma_luma": 16, "sigma_chroma": 8}
    assert sha(sample.image) == info["image_sha256"]
    height, width = sample.image.shape[:2]
    moves_target = cv2.resize(png(GOLDEN / "saved" / f"{sample_id}.png").astype(np.float32) / 255, (width, height))
    assert sha(moves_target) == info["bs_target_sha256"]  # the target MOVE's solver got
    golden = np.load(GOLDEN / f"bs_{sample_id}.npz")
    strict = same_blas(sample.image, info)
    compare(BilateralSolver().solve(sample.image, moves_target), golden, strict)
    # `--method move --post bs`: the solver gets the adapter's PIL-resized 1/255 mask instead
    adapter_mask = quantize_mask(png(GOLDEN / f"loaded_{sample_id}.png") / 255.0) / np.float32(255.0)
    chained = BilateralSolver().solve(sample.image, adapter_mask)
    diff = np.abs(chained.ravel()[golden["idx"]] - golden["values"]).max()
    above = np.unpackbits(golden["above"], count=chained.size).astype(bool)
    agree = ((chained.ravel() > 0.5) == above).mean()
    assert 1e-6 < diff < 0.01 and agree > 0.9995
