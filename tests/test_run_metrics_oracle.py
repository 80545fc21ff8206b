"""A finished run's numbers equal the protocol applied by hand to its own final masks: Acc and IoU
at prediction > 0.5 against ground truth >= 128 (DESIGN.md), per image and averaged; CorLoc from
the box each image was scored with (per_image.csv) and the ground-truth boxes, IoU >= 0.5.

The masks are read back through ``harness.runner.reopen`` (from the cache), so whatever method or
post-processor made them, the numbers in results.json and per_image.csv can be checked exactly,
where an end-to-end test could otherwise only say ``0 <= iou <= 1``."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.runner import RunSpec, reopen, run

SYNTHETIC = {"count": 3, "height": 96, "width": 128}


def _box_iou(box, gt) -> float:
    """IoU of two (x0, y0, x1, y1) boxes, x1/y1 exclusive."""
    iw = max(0.0, min(box[2], gt[2]) - max(box[0], gt[0]))
    ih = max(0.0, min(box[3], gt[3]) - max(box[1], gt[1]))
    inter = iw * ih
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter)


@pytest.mark.parametrize("method, method_args, posts, backbone", [
    ("center-prior", {}, ["bs"], None),
    ("center-prior", {}, ["gf"], None),
    ("tokencut", {}, [], "effnet-lite0"),
    ("tokencut", {"mode": "detection"}, [], "effnet-lite0"),
    ("lost", {}, [], "effnet-lite0"),
    ("deep-spectral", {}, [], "effnet-lite0"),
], ids=["center-prior+bs", "center-prior+gf", "tokencut", "tokencut-detection", "lost", "deep-spectral"])
def test_run_metrics_equal_the_protocol_by_hand_on_its_masks(tmp_path, method, method_args, posts, backbone):
    result = run(RunSpec(method=method, method_args=method_args, posts=posts, backbone=backbone,
                         dataset="synthetic", dataset_args=SYNTHETIC, out=tmp_path / "runs",
                         cache_dir=tmp_path / "cache", progress=False))
    frame = pd.read_csv(result.run_dir / "per_image.csv", dtype={"id": str}).set_index("id")
    masks = dict((sample.id, (sample, mask)) for sample, mask in reopen(result.run_dir).final_masks(list(frame.index)))
    accs, ious, hits = [], [], []
    for image_id, row in frame.iterrows():
        sample, mask_u8 = masks[image_id]
        predicted, truth = mask_u8.astype(np.float64) / 255 > 0.5, sample.mask >= 128
        union = np.count_nonzero(predicted | truth)
        accs.append(np.count_nonzero(predicted == truth) / truth.size)
        ious.append(np.count_nonzero(predicted & truth) / union if union else np.nan)
        box = (row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"])
        best = max(_box_iou(box, gt) for gt in sample.boxes) if np.isfinite(box).all() else 0.0
        hits.append(best >= 0.5)
        # per_image.csv holds 6 significant digits (float_format "%.6g")
        assert (row["acc"], row["iou"], row["box_iou"], row["corloc_hit"]) == pytest.approx(
            (accs[-1], ious[-1], best, int(hits[-1])), rel=5e-6, abs=1e-12, nan_ok=True), image_id
    metrics = json.loads((result.run_dir / "results.json").read_text())["metrics"]
    assert metrics["acc"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert metrics["iou"] == pytest.approx(np.nanmean(ious), abs=1e-12)
    assert metrics["corloc"] == pytest.approx(100.0 * np.mean(hits), abs=1e-12)
    assert metrics["n_images"] == 3
