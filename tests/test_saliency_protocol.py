"""The saliency protocol, case by case: hand-worked masks, a brute-force definition, the
PySODMetrics formulas as an independent oracle, and the size-binned IoU evaluator."""
from __future__ import annotations

import numpy as np
import pytest

from harness.api import Prediction, Sample
from harness.evaluators.saliency import SaliencyEvaluator
from harness.evaluators.size_iou import PLOT_NAME, SizeBinnedIoU, bin_label, size_bin

B2 = 0.3


def _sample(gt) -> Sample:
    gt = np.asarray(gt, np.uint8)
    return Sample("x", np.zeros(gt.shape + (3,), np.uint8), gt)


class Scored:
    """An evaluator and the records its ``process`` returned (what the runner keeps for it)."""

    def __init__(self, evaluator):
        self.evaluator, self.records = evaluator, []

    def process(self, sample, prediction) -> dict:
        record, row = self.evaluator.process(sample, prediction)
        self.records.append(record)
        return row

    def summarize(self) -> dict:
        return self.evaluator.aggregate(self.records)


def _score(pairs) -> tuple[list[dict], dict, Scored]:
    ev = Scored(SaliencyEvaluator())
    rows = [ev.process(_sample(gt), Prediction(np.asarray(p, np.float32))) for gt, p in pairs]
    return rows, ev.summarize(), ev


def _curves(ev: Scored) -> np.ndarray:
    from harness.evaluators.saliency import fbeta_curves

    return fbeta_curves(np.stack([r.hist_fg for r in ev.records]), np.stack([r.hist_bg for r in ev.records]))


# ---- hand-worked cases ---------------------------------------------------------------------
# Image A: GT [[255, 255, 0], [0, 0, 0]] (2 foreground pixels); prediction levels
# [[255, 102, 153], [51, 0, 0]] / 255 = [[1.0, 0.4, 0.6], [0.2, 0, 0]].
#   At 0.5: positives {1.0, 0.6}: TP 1, FP 1, FN 1, TN 3 -> Acc 4/6, IoU 1/3.
#   MAE = (0 + 0.6 + 0.6 + 0.2 + 0 + 0) / 6 = 1.4 / 6.
#   F (b2 = 0.3) at t = k/255, prediction > t:
#     k   0.. 50: positives {255, 102, 153, 51}: P 2/4, R 1   -> 1.3*.5/(.15+1)      = 13/23
#     k  51..101: positives {255, 102, 153}:     P 2/3, R 1   -> 1.3*(2/3)/(.2+1)    = 13/18
#     k 102..152: positives {255, 153}:          P 1/2, R 1/2 -> 1.3*.25/(.15+.5)    = 1/2
#     k 153..254: positives {255}:               P 1,   R 1/2 -> 1.3*.5/(.3+.5)      = 13/16
GT_A = [[255, 255, 0], [0, 0, 0]]
PRED_A = np.array([[255, 102, 153], [51, 0, 0]], np.float32) / 255
CURVE_A = np.repeat([13 / 23, 13 / 18, 1 / 2, 13 / 16], [51, 51, 51, 102])
# Image B: GT [255, 0, 0, 0]; prediction [0.3, 0.1, 0, 0] (between levels: 0.3 * 255 = 76.5
# and 0.1 * 255 = 25.5, so 0.3 > k/255 for k <= 76 and 0.1 > k/255 for k <= 25).
#   At 0.5 nothing is predicted: TP 0, FP 0, FN 1, TN 3 -> Acc 3/4, IoU 0.  MAE = (0.7 + 0.1) / 4.
#     k  0..25: positives {0.3, 0.1}: P 1/2, R 1 -> 13/23
#     k 26..76: positives {0.3}:      P 1,   R 1 -> 1
#     k 77..254: nothing predicted:   P 1 (by definition), R 0 -> 0
GT_B = [[255, 0, 0, 0]]
PRED_B = [[0.3, 0.1, 0.0, 0.0]]
CURVE_B = np.repeat([13 / 23, 1.0, 0.0], [26, 51, 178])


def test_hand_worked_two_images():
    rows, metrics, ev = _score([(GT_A, PRED_A), (GT_B, PRED_B)])
    assert rows[0]["acc"] == pytest.approx(4 / 6) and rows[0]["iou"] == pytest.approx(1 / 3)
    assert rows[0]["mae"] == pytest.approx(1.4 / 6, abs=1e-7)
    assert rows[1]["acc"] == 0.75 and rows[1]["iou"] == 0.0 and rows[1]["mae"] == pytest.approx(0.2, abs=1e-7)
    curves = _curves(ev)
    np.testing.assert_allclose(curves[0], CURVE_A, rtol=1e-12)
    np.testing.assert_allclose(curves[1], CURVE_B, rtol=1e-12)
    assert rows[0]["max_fbeta_per_image"] == pytest.approx(13 / 16)
    # dataset level: mean over images for each t, max over t. k 51..76: (13/18 + 1) / 2 = 31/36
    assert metrics["max_fbeta"] == pytest.approx(31 / 36)
    assert metrics["max_fbeta_threshold"] == pytest.approx(51 / 255)
    assert metrics["acc"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert metrics["iou"] == pytest.approx((1 / 3 + 0) / 2)
    assert metrics["mae"] == pytest.approx((1.4 / 6 + 0.2) / 2, abs=1e-7)


def test_empty_prediction_scores_zero_f_and_iou():
    # GT: 3 of 8 pixels. Nothing predicted: P = 1 by definition, R = 0 -> F = 0 at every t.
    gt = [[255, 255, 255, 0], [0, 0, 0, 0]]
    rows, metrics, ev = _score([(gt, np.zeros((2, 4)))])
    assert rows[0]["acc"] == 5 / 8 and rows[0]["iou"] == 0.0 and rows[0]["mae"] == 3 / 8
    assert metrics["max_fbeta"] == 0.0 and not _curves(ev).any()


def test_empty_ground_truth():
    # No GT and a constant 0.5 prediction: 0.5 > k/255 for k <= 127 (F = 0: P = 0, R = 1);
    # for k >= 128 nothing is predicted (P = 1, R = 1: F = 1). At 0.5 itself nothing is
    # predicted (0.5 > 0.5 is false): the union is empty, so IoU is left out and counted.
    rows, metrics, ev = _score([(np.zeros((2, 2)), np.full((2, 2), 0.5))])
    np.testing.assert_array_equal(_curves(ev)[0], np.repeat([0.0, 1.0], [128, 127]))
    assert np.isnan(rows[0]["iou"]) and rows[0]["acc"] == 1.0 and rows[0]["mae"] == 0.5
    assert np.isnan(metrics["iou"]) and metrics["iou_excluded_empty_union"] == 1
    # ... and with an empty GT but a confident prediction the image's IoU is 0, not left out
    rows, metrics, _ = _score([(np.zeros((2, 2)), [[1, 0], [0, 0]])])
    assert rows[0]["iou"] == 0.0 and metrics["iou_excluded_empty_union"] == 0


def test_all_foreground_prediction():
    # GT 2 of 8 pixels, prediction 1 everywhere: at every t, P = 2/8, R = 1,
    # F = 1.3 * .25 / (.3 * .25 + 1) = 0.325 / 1.075. Acc = IoU = 2/8, MAE = 6/8.
    gt = [[255, 255, 0, 0], [0, 0, 0, 0]]
    rows, metrics, ev = _score([(gt, np.ones((2, 4)))])
    np.testing.assert_allclose(_curves(ev)[0], 0.325 / 1.075)
    assert rows[0]["acc"] == 0.25 and rows[0]["iou"] == 0.25 and rows[0]["mae"] == 0.75
    assert metrics["max_fbeta"] == pytest.approx(0.325 / 1.075)


def test_soft_ground_truth_is_binarised_at_half():
    # gt / 255 > 0.5: 127 is background, 128 foreground. The soft GT itself as the prediction:
    # at 0.5, 127/255 is negative and 128/255 positive, so Acc = IoU = 1; at k = 127 the
    # positives (v > 127) are exactly the foreground, so max F = 1 at t = 127/255.
    # MAE against the *binary* GT: (0 + 127 + (255-128) + (255-200) + 0) / 255 / 5.
    gt = np.array([[0, 127, 128, 200, 255]], np.uint8)
    rows, metrics, ev = _score([(gt, gt / 255.0)])
    assert rows[0]["acc"] == 1.0 and rows[0]["iou"] == 1.0
    assert rows[0]["mae"] == pytest.approx((127 + 127 + 55) / 255 / 5, abs=1e-7)
    assert metrics["max_fbeta"] == 1.0 and metrics["max_fbeta_threshold"] == pytest.approx(127 / 255)
    assert ev.records[0].tp + ev.records[0].fn == 3


def test_prediction_is_resized_bilinearly_to_the_ground_truth():
    # a 2x2 prediction on a 4x4 GT: OpenCV bilinear (half-pixel centres) of [[1, 0], [1, 0]]
    # gives columns 1, .75, .25, 0; the left half is foreground.
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 255
    rows, _, _ = _score([(gt, [[1.0, 0.0], [1.0, 0.0]])])
    assert rows[0]["acc"] == 1.0 and rows[0]["mae"] == pytest.approx((0 + 0.25 + 0.25 + 0) / 4)


def test_records_are_fixed_size():
    ev = Scored(SaliencyEvaluator())
    for size in (8, 300):
        gt = np.zeros((size, size), np.uint8)
        gt[: size // 2] = 255
        ev.process(_sample(gt), Prediction(np.random.default_rng(0).random((size, size), np.float32)))
    small, large = ev.records
    for record in (small, large):  # two 256-bin histograms and five numbers, whatever the size
        assert record.hist_fg.shape == record.hist_bg.shape == (256,) and record.hist_fg.base is None
        assert record.hist_fg.nbytes + record.hist_bg.nbytes == 4096
    assert large.hist_fg.sum() + large.hist_bg.sum() == 300 * 300


# ---- a brute-force definition, on many random images ----------------------------------------
def _brute_force(pred: np.ndarray, fg: np.ndarray, thresholds_gt) -> np.ndarray:
    """F at every threshold straight from the definition (no histograms)."""
    out = []
    for positive in thresholds_gt(pred):
        tp, predicted, n_fg = (positive & fg).sum(), positive.sum(), fg.sum()
        p = tp / predicted if predicted else 1.0
        r = tp / n_fg if n_fg else 1.0
        out.append((1 + B2) * p * r / (B2 * p + r) if (p or r) else 0.0)
    return np.array(out)


def test_matches_the_definition_on_random_masks():
    rng = np.random.default_rng(7)
    ev = Scored(SaliencyEvaluator())
    expected = []
    for i in range(12):
        h, w = rng.integers(5, 40, size=2)
        fg = rng.random((h, w)) < rng.uniform(0, 0.6)
        if i % 2:  # quantised predictions: level v means v / 255, and v > k is "p > k/255"
            levels = rng.integers(0, 256, size=(h, w))
            pred = (levels / 255.0).astype(np.float32)
            expected.append(_brute_force(levels, fg, lambda v: [v > k for k in range(255)]))
        else:  # continuous predictions kept away from the levels (float32 round-off)
            pred = rng.random((h, w))
            frac = (pred * 255) % 1
            pred = np.where((frac < 1e-3) | (frac > 1 - 1e-3), pred + 0.5 / 255, pred).clip(0, 1)
            pred = pred.astype(np.float32)
            expected.append(_brute_force(pred.astype(np.float64), fg, lambda p: [p > k / 255 for k in range(255)]))
        ev.process(_sample(fg.astype(np.uint8) * 255), Prediction(pred))
        rec = ev.records[-1]
        positive = pred > 0.5
        assert (rec.tp, rec.fp, rec.fn) == ((positive & fg).sum(), (positive & ~fg).sum(), (~positive & fg).sum())
        assert rec.abs_error == pytest.approx(np.abs(pred.astype(np.float64) - fg).sum(), rel=1e-6)
    np.testing.assert_allclose(_curves(ev), np.stack(expected), rtol=1e-12, atol=1e-12)
    assert ev.summarize()["max_fbeta"] == pytest.approx(np.stack(expected).mean(axis=0).max())


# ---- PySODMetrics as an oracle ----------------------------------------------------------------
# PySODMetrics (Fmeasure + MAE) is not a dependency (it pins numpy and OpenCV); its formulas are
# reproduced here, and benchmarks/bench_saliency_eval.py compares with the real package. Its
# conventions differ from the protocol's in ways this test steers around:
#   - GT foreground is gt > 128 (ours gt >= 128): the GT here is 0/255, where they agree;
#   - the prediction is min-max normalised per image: predictions here span 0..255 exactly;
#   - thresholds are "u8 >= k" for k = 255..0 (ours "p > k/255", k = 0..254): with
#     predictions on the 1/255 grid, our k is their k + 1, and their extra "u8 >= 0" (every
#     pixel positive) has no counterpart;
#   - P = TP / max(TP + FP, 1) and R = TP / max(|GT|, 1) (ours: P = 1 when nothing is
#     predicted, R = 1 when the GT is empty): these agree whenever the GT is not empty,
#     because an empty prediction gives F = 0 either way.
def _pysod_fmeasure_curve(pred_u8: np.ndarray, gt_u8: np.ndarray) -> np.ndarray:
    gt = gt_u8 > 128
    pred = pred_u8 / 255
    if pred.max() != pred.min():
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    pred = (pred * 255).astype(np.uint8)
    bins = np.linspace(0, 256, 257)
    fg_hist, _ = np.histogram(pred[gt], bins=bins)
    bg_hist, _ = np.histogram(pred[~gt], bins=bins)
    tps = np.cumsum(np.flip(fg_hist))
    ps = tps + np.cumsum(np.flip(bg_hist))
    ps[ps == 0] = 1
    precision, recall = tps / ps, tps / max(np.count_nonzero(gt), 1)
    numerator = (1 + B2) * precision * recall
    return numerator / np.where(numerator == 0, 1, B2 * precision + recall)  # index i: u8 >= 255 - i


def _pysod_mae(pred_u8: np.ndarray, gt_u8: np.ndarray) -> float:
    pred = pred_u8 / 255
    if pred.max() != pred.min():
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    return float(np.mean(np.abs(pred - (gt_u8 > 128))))


def test_agrees_with_the_pysodmetrics_formulas():
    import cv2

    rng = np.random.default_rng(3)
    ev = Scored(SaliencyEvaluator())
    theirs, maes = [], []
    for _ in range(10):
        h, w = rng.integers(40, 90, size=2)
        gt = np.zeros((h, w), np.uint8)
        cv2.ellipse(gt, (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))),
                    (int(rng.integers(4, w // 2)), int(rng.integers(4, h // 2))), 0, 0, 360, 255, -1)
        soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), rng.uniform(1, 6)) + rng.normal(0, 30, (h, w))
        pred_u8 = np.clip(soft, 0, 255).round().astype(np.uint8)
        pred_u8.flat[0], pred_u8.flat[-1] = 0, 255  # so min-max normalisation is the identity
        ev.process(_sample(gt), Prediction(pred_u8 / np.float32(255)))
        theirs.append(_pysod_fmeasure_curve(pred_u8, gt))
        maes.append(_pysod_mae(pred_u8, gt))
    their_curve = np.mean(theirs, axis=0)
    ours = _curves(ev).mean(axis=0)
    # our k (p > k/255) is their "u8 >= k + 1", i.e. their index 255 - (k + 1)
    np.testing.assert_allclose(ours, their_curve[254 - np.arange(255)], rtol=1e-12)
    metrics = ev.summarize()
    assert metrics["max_fbeta"] == pytest.approx(their_curve[:255].max(), rel=1e-12)
    assert metrics["mae"] == pytest.approx(np.mean(maes), rel=1e-6)


# ---- size-binned IoU ------------------------------------------------------------------------
def test_size_bins_are_exact_at_the_edges():
    assert size_bin(0, 100) == 0 and size_bin(4, 100) == 0 and size_bin(5, 100) == 1
    assert size_bin(99, 100) == 19 and size_bin(100, 100) == 19 and size_bin(1, 3) == 6
    assert bin_label(0) == "00_05" and bin_label(19) == "95_100"


def test_size_iou_means_counts_and_plot(tmp_path):
    ev = Scored(SizeBinnedIoU())

    def image(n_fg, n_hit, n_extra):  # 10x10: n_fg GT pixels, n_hit of them predicted, + n_extra FP
        gt = np.zeros(100, np.uint8)
        gt[:n_fg] = 255
        pred = np.zeros(100, np.float32)
        pred[:n_hit] = 1.0
        pred[n_fg : n_fg + n_extra] = 0.9
        return _sample(gt.reshape(10, 10)), Prediction(pred.reshape(10, 10))

    ev.process(*image(3, 3, 0))  # 3 %: bin 0, IoU 1
    ev.process(*image(4, 2, 0))  # 4 %: bin 0, IoU 2/4
    ev.process(*image(30, 15, 15))  # 30 %: bin 6, IoU 15/45
    ev.process(*image(0, 0, 0))  # empty GT and prediction: bin 0, counted, IoU left out
    metrics = ev.summarize()
    assert metrics["size_n_00_05"] == 3 and metrics["size_iou_00_05"] == pytest.approx(0.75)
    assert metrics["size_n_30_35"] == 1 and metrics["size_iou_30_35"] == pytest.approx(1 / 3)
    assert metrics["size_n_50_55"] == 0 and metrics["size_iou_50_55"] is None
    assert len(metrics) == 40 and sum(v for k, v in metrics.items() if k.startswith("size_n_")) == 4
    (path,) = ev.evaluator.artifacts(ev.records, tmp_path)
    assert path == tmp_path / PLOT_NAME and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(path).size == (800, 450)


def test_size_iou_agrees_with_saliency_iou():
    rng = np.random.default_rng(1)
    sal, size = Scored(SaliencyEvaluator()), Scored(SizeBinnedIoU())
    for _ in range(6):
        gt = (rng.random((20, 30)) < rng.uniform(0.05, 0.9)).astype(np.uint8) * 255
        pred = Prediction(rng.random((20, 30)).astype(np.float32))
        assert sal.process(_sample(gt), pred)["iou"] == pytest.approx(size.process(_sample(gt), pred)["size_iou"])
    means, counts = SizeBinnedIoU.per_bin(size.records)
    assert counts.sum() == 6
