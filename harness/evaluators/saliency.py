"""Saliency metrics under the harness protocol (TokenCut / MOVE conventions).

Per image the evaluator keeps fixed-size statistics only: the confusion counts at 0.5,
the absolute error sum, and two 256-bin histograms of prediction levels over foreground
and background pixels, from which every threshold's TP and FP follow at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.api import Evaluator, Prediction, Sample
from harness.evaluators.protocol import BETA2, N_THRESHOLDS

# 255 * p of a float32 p = v / 255 is off by up to ~2e-5; this keeps it on level v.
_LEVEL_EPS = 1e-4


@dataclass(frozen=True)
class SaliencyRecord:
    """Fixed-size per-image statistics (about 4 KB)."""

    tp: int
    fp: int
    fn: int
    tn: int
    abs_error: float
    hist_fg: np.ndarray  # (256,) int64: pixels whose level is b - 1 (see threshold_levels)
    hist_bg: np.ndarray  # (256,) int64


def ground_truth_foreground(mask: np.ndarray) -> np.ndarray:
    """``gt / 255 > 0.5`` for 8-bit masks, as a bool array."""
    return mask.astype(np.float32) / 255.0 > 0.5


def resize_to(prediction: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(h, w)`` float mask to ``shape = (H, W)``."""
    if prediction.shape == tuple(shape):
        return prediction
    import cv2

    return cv2.resize(prediction.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def threshold_levels(prediction: np.ndarray) -> np.ndarray:
    """Integer level ``u`` in -1..254 per pixel such that ``p > k / 255  <=>  u >= k``."""
    scaled = prediction.astype(np.float64) * 255.0
    return (np.ceil(scaled - _LEVEL_EPS) - 1).clip(-1, N_THRESHOLDS - 1).astype(np.int64)


def measure(prediction: np.ndarray, gt_mask: np.ndarray) -> SaliencyRecord:
    """The per-image statistics of a soft prediction against an 8-bit ground truth."""
    fg = ground_truth_foreground(gt_mask)
    pred = resize_to(prediction, fg.shape)
    positive = pred > 0.5
    tp = int(np.count_nonzero(positive & fg))
    fp = int(np.count_nonzero(positive & ~fg))
    fn = int(np.count_nonzero(~positive & fg))
    tn = fg.size - tp - fp - fn
    bins = threshold_levels(pred) + 1
    hist_fg = np.bincount(bins[fg], minlength=N_THRESHOLDS + 1)
    hist_bg = np.bincount(bins[~fg], minlength=N_THRESHOLDS + 1)
    abs_error = float(np.abs(pred.astype(np.float64) - fg).sum())
    return SaliencyRecord(tp, fp, fn, tn, abs_error, hist_fg, hist_bg)


def fbeta_curves(hist_fg: np.ndarray, hist_bg: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """Per-image F-beta at every threshold.

    Parameters
    ----------
    hist_fg, hist_bg : np.ndarray
        ``(N, 256)`` level histograms over foreground and background pixels.

    Returns
    -------
    np.ndarray
        ``(N, 255)``: F at t = k / 255, k = 0 .. 254. P = 1 when nothing is predicted,
        R = 1 when the ground truth is empty, F = 0 when P = R = 0.
    """
    # predicted positives at threshold k are the pixels whose bin is >= k + 1
    tp = np.cumsum(hist_fg[:, ::-1], axis=1)[:, ::-1][:, 1:].astype(np.float64)
    fp = np.cumsum(hist_bg[:, ::-1], axis=1)[:, ::-1][:, 1:].astype(np.float64)
    n_fg = hist_fg.sum(axis=1, keepdims=True).astype(np.float64)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    recall = np.divide(tp, n_fg, out=np.ones_like(tp), where=np.broadcast_to(n_fg > 0, tp.shape))
    denom = beta2 * precision + recall
    return np.divide((1 + beta2) * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)


class SaliencyEvaluator(Evaluator):
    name = "saliency"
    description = "Acc and IoU at 0.5, dataset-level max F-beta (beta^2 = 0.3) and MAE"
    requires = "mask"

    def process(self, sample: Sample, prediction: Prediction) -> dict:
        record = measure(prediction.mask, sample.mask)
        self.records.append(record)
        n = record.tp + record.fp + record.fn + record.tn
        union = record.tp + record.fp + record.fn
        curve = fbeta_curves(record.hist_fg[None], record.hist_bg[None])[0]
        return {
            "acc": (record.tp + record.tn) / n,
            "iou": record.tp / union if union else float("nan"),
            "mae": record.abs_error / n,
            "fbeta_at_best_t": float(curve.max()),
            "fg_ratio": (record.tp + record.fn) / n,
        }

    def summarize(self) -> dict:
        if not self.records:
            return {}
        r = self.records
        tp = np.array([x.tp for x in r], dtype=np.float64)
        fp = np.array([x.fp for x in r], dtype=np.float64)
        fn = np.array([x.fn for x in r], dtype=np.float64)
        tn = np.array([x.tn for x in r], dtype=np.float64)
        n = tp + fp + fn + tn
        union = tp + fp + fn
        curves = fbeta_curves(np.stack([x.hist_fg for x in r]), np.stack([x.hist_bg for x in r]))
        mean_curve = curves.mean(axis=0)
        best = int(np.argmax(mean_curve))
        return {
            "acc": float(np.mean((tp + tn) / n)),
            "iou": float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else float("nan"),
            "max_fbeta": float(mean_curve[best]),
            "max_fbeta_threshold": best / 255.0,
            "mae": float(np.mean(np.array([x.abs_error for x in r]) / n)),
            "n_images": len(r),
            "iou_excluded_empty_union": int((union == 0).sum()),
        }
