"""CorLoc (LOST / TokenCut): one box per image, a hit when IoU >= 0.5 with any GT box."""
from __future__ import annotations

import numpy as np

from harness.api import Evaluator, Prediction, Sample
from harness.boxes import box_from_mask, box_iou


class CorLocEvaluator(Evaluator):
    name = "corloc"
    description = "CorLoc: % of images whose one predicted box has IoU >= 0.5 with a GT box"
    requires = "boxes"
    metric_keys = ("corloc",)
    row_keys = ("corloc_hit", "box_iou", "box_x0", "box_y0", "box_x1", "box_y1")

    def process(self, sample: Sample, prediction: Prediction) -> tuple[tuple[bool, float], dict]:
        box = prediction.box if prediction.box is not None else box_from_mask(prediction.mask > 0.5)
        gt = sample.boxes if sample.boxes is not None else np.zeros((0, 4))
        best = float(box_iou(box, gt).max()) if box is not None and len(gt) else 0.0
        hit = best >= 0.5
        x0, y0, x1, y1 = box if box is not None else (np.nan,) * 4
        return (hit, best), {"corloc_hit": int(hit), "box_iou": best, "box_x0": x0, "box_y0": y0, "box_x1": x1,
                             "box_y1": y1}

    def aggregate(self, records) -> dict:
        if not records:
            return {}
        hits = np.array([hit for hit, _ in records], dtype=np.float64)
        return {"corloc": float(100.0 * hits.mean()), "n_images": len(records)}
