"""Saliency metrics under the harness protocol (TokenCut / MOVE conventions).

Per image the evaluator keeps fixed-size statistics only: the confusion counts at 0.5,
the absolute error sum, and two 256-bin histograms of prediction levels over foreground
and background pixels, from which every threshold's TP and FP follow at once.

The protocol (``harness.evaluators.protocol``; DESIGN.md "Evaluation protocol"):

- the soft prediction is resized (bilinear) to the ground truth's size;
- ground-truth foreground is ``gt / 255 > 0.5`` (``gt >= 128`` for 8-bit masks);
- Acc and IoU at prediction ``> 0.5``, per image, averaged over images; an image whose
  union is empty is left out of the IoU mean and counted (``iou_excluded_empty_union``);
- F-beta (beta^2 = 0.3) at t = k / 255, k = 0..254 (prediction ``> t``): per image
  P = TP / (TP + FP) (1 when nothing is predicted), R = TP / (TP + FN) (1 when the ground
  truth is empty), F = (1 + b2) P R / (b2 P + R) (0 when P = R = 0); F is averaged over
  images for each t and ``max_fbeta`` is the maximum over t;
- MAE: mean over pixels of ``|prediction - binary ground truth|``, averaged over images.

Option ``fbeta_foreground=nonzero`` counts every non-zero ground-truth pixel as foreground for
F-beta only (segmentation-tricks' convention on its soft, resized ground truth; the
``segtricks`` protocol sets it); Acc, IoU and MAE keep ``gt / 255 > 0.5``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.api import Evaluator, Option, Prediction, Sample
from harness.evaluators.protocol import BETA2, N_THRESHOLDS
from harness.imageops import resize

# 255 * p of a float32 p = v / 255 is off by up to ~2e-5; this keeps it on level v.
_LEVEL_EPS = 1e-4
_N_BINS = N_THRESHOLDS + 1
HISTOGRAMS_FILE = "saliency_histograms.npz"


@dataclass(frozen=True)
class SaliencyRecord:
    """Fixed-size per-image statistics (about 4 KB)."""

    tp: int
    fp: int
    fn: int
    tn: int
    abs_error: float
    hist_fg: np.ndarray  # (256,) int64: pixels in bin b, i.e. above the thresholds k / 255 for k < b
    hist_bg: np.ndarray  # (256,) int64


def ground_truth_foreground(mask: np.ndarray) -> np.ndarray:
    """``gt / 255 > 0.5`` for 8-bit masks, as a bool array (a bool mask is used as it is)."""
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype == np.uint8:
        return mask > 127  # v / 255 > 0.5  <=>  v >= 128, without a float copy
    return mask.astype(np.float32) / 255.0 > 0.5


def resize_to(prediction: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The protocol's resize of a ``(h, w)`` soft mask to ``shape = (H, W)``: bilinear, OpenCV
    (no antialiasing), float32; a mask of that size is used as it is."""
    if prediction.shape == tuple(shape):
        return prediction
    return resize(prediction.astype(np.float32), shape, "bilinear")


def _histogram_bins(prediction: np.ndarray) -> np.ndarray:
    """Per pixel the bin ``b`` in 0..255 such that ``p > k / 255  <=>  b > k`` (``b - 1`` is the
    pixel's level), as uint8, in float32 arithmetic (twice as fast as float64; float32
    round-off is ~2e-5 of a level, well inside ``_LEVEL_EPS``)."""
    scaled = prediction.astype(np.float32, copy=False) * np.float32(255.0)
    scaled -= np.float32(_LEVEL_EPS)
    np.ceil(scaled, out=scaled)
    np.clip(scaled, 0, N_THRESHOLDS, out=scaled)
    return scaled.astype(np.uint8)


FBETA_FOREGROUND = ("half", "nonzero")


def measure(prediction: np.ndarray, gt_mask: np.ndarray, fbeta_foreground: str = "half") -> SaliencyRecord:
    """The per-image statistics of a soft prediction against an 8-bit ground truth.

    Parameters
    ----------
    prediction : np.ndarray
        ``(h, w)`` float soft mask in [0, 1]; resized to the ground truth if needed.
    gt_mask : np.ndarray
        ``(H, W)`` uint8 ground truth, 0..255.
    fbeta_foreground : {"half", "nonzero"}
        The ground-truth foreground the F-beta histograms use: ``gt / 255 > 0.5`` (the
        protocol) or ``gt > 0`` (segmentation-tricks). The counts at 0.5 always use "half".
    """
    fg = ground_truth_foreground(gt_mask)
    pred = resize_to(prediction, fg.shape)
    if fbeta_foreground not in FBETA_FOREGROUND:
        raise ValueError(f"fbeta_foreground must be one of {FBETA_FOREGROUND}, got {fbeta_foreground!r}")
    fbeta_fg = fg if fbeta_foreground == "half" or gt_mask.dtype == np.bool_ else np.asarray(gt_mask) > 0
    # one bincount over (bin + 256 * is_foreground) gives both histograms in one pass
    index = fbeta_fg.astype(np.intp)
    index *= _N_BINS
    index += _histogram_bins(pred)
    hist = np.bincount(index.ravel(), minlength=2 * _N_BINS)
    hist_bg, hist_fg = hist[:_N_BINS].copy(), hist[_N_BINS:].copy()
    positive = pred > 0.5
    n_fg = int(hist_fg.sum()) if fbeta_fg is fg else int(np.count_nonzero(fg))
    tp = int(np.count_nonzero(positive & fg))
    fp = int(np.count_nonzero(positive)) - tp
    fn = n_fg - tp
    tn = fg.size - tp - fp - fn
    abs_error = float(np.abs(pred.astype(np.float32, copy=False) - fg).sum(dtype=np.float64))
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
    options = (
        Option("fbeta_foreground", "half", "ground-truth foreground for F-beta: half (gt/255 > 0.5, the "
               "protocol) or nonzero (gt > 0, segmentation-tricks; set by --protocol segtricks)",
               choices=FBETA_FOREGROUND),
    )
    metric_keys = ("acc", "iou", "max_fbeta", "max_fbeta_threshold", "mae", "iou_excluded_empty_union")
    row_keys = ("acc", "iou", "mae", "max_fbeta_per_image", "fg_ratio")

    def process(self, sample: Sample, prediction: Prediction) -> tuple[SaliencyRecord, dict]:
        record = measure(prediction.mask, sample.mask, self.config["fbeta_foreground"])
        n = record.tp + record.fp + record.fn + record.tn
        union = record.tp + record.fp + record.fn
        curve = fbeta_curves(record.hist_fg[None], record.hist_bg[None])[0]
        return record, {
            "acc": (record.tp + record.tn) / n,
            "iou": record.tp / union if union else float("nan"),
            "mae": record.abs_error / n,
            # this image's own best threshold: a diagnostic, not the protocol's max F-beta
            "max_fbeta_per_image": float(curve.max()),
            "fg_ratio": (record.tp + record.fn) / n,
        }

    def artifacts(self, records, run_dir) -> list:
        """``saliency_histograms.npz``: the per-image level histograms, in per_image.csv order
        (what bootstrap intervals of max F-beta and paired comparisons are computed from)."""
        import io

        from harness.storage import atomic_write_bytes

        if not records:
            return []
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            hist_fg=np.stack([x.hist_fg for x in records]).astype(np.uint32),
            hist_bg=np.stack([x.hist_bg for x in records]).astype(np.uint32),
        )
        return [atomic_write_bytes(run_dir / HISTOGRAMS_FILE, buffer.getvalue())]

    def aggregate(self, records) -> dict:
        if not records:
            return {}
        r = records
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
