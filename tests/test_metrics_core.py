"""Saliency and CorLoc metrics on tiny cases worked out by hand, and the built-in baseline."""
from __future__ import annotations

import numpy as np
import pytest

from harness.api import Prediction, Sample
from harness.boxes import box_from_mask, box_iou
from harness.evaluators.corloc import CorLocEvaluator
from harness.evaluators.saliency import SaliencyEvaluator
from harness.methods.center_prior import center_prior
from harness.pipeline import score


def _sample(mask, boxes=None):
    mask = np.asarray(mask, np.uint8)
    return Sample("x", np.zeros(mask.shape + (3,), np.uint8), mask, boxes)


def test_saliency_two_by_two_by_hand():
    # GT: left column is foreground. Prediction levels 255, 153, 51, 0 (1.0, 0.6, 0.2, 0.0).
    gt = [[255, 0], [255, 0]]
    pred = np.array([[1.0, 0.6], [0.2, 0.0]], np.float32)
    (row,), metrics = score(SaliencyEvaluator(), [(_sample(gt), Prediction(pred))])
    # at 0.5: TP (0,0), FP (0,1), FN (1,0), TN (1,1)
    assert row["acc"] == 0.5 and row["iou"] == pytest.approx(1 / 3)
    assert row["mae"] == pytest.approx((0 + 0.6 + 0.8 + 0) / 4)
    # F(b2=0.3): t < 51/255: P=2/3, R=1 -> 0.72222; 51..152: P=R=1/2 -> 0.5; 153..254: P=1, R=1/2 -> 0.8125
    assert metrics["max_fbeta"] == pytest.approx(0.65 / 0.8)
    assert metrics["max_fbeta_threshold"] == pytest.approx(153 / 255)


def test_empty_ground_truth_and_empty_prediction():
    rows, metrics = score(SaliencyEvaluator(), [(_sample(np.zeros((3, 3))), Prediction(np.zeros((3, 3), np.float32))),
                                                (_sample([[255, 0]]), Prediction(np.array([[0.9, 0.0]], np.float32)))])
    row = rows[0]
    assert np.isnan(row["iou"]) and row["acc"] == 1.0 and row["max_fbeta_per_image"] == 1.0  # P = R = 1
    assert metrics["iou"] == 1.0 and metrics["iou_excluded_empty_union"] == 1


def test_box_from_mask_takes_the_component_with_the_largest_box():
    fg = np.zeros((10, 12), bool)
    fg[0, 0:8] = True  # thin L: 14 pixels, box 8 x 7 = 56
    fg[0:7, 0] = True
    fg[5:9, 7:12] = True  # solid block: 20 pixels, box 5 x 4 = 20
    assert box_from_mask(fg) == (0.0, 0.0, 8.0, 7.0)
    assert box_from_mask(np.zeros((4, 4), bool)) is None


def test_box_iou_by_hand():
    iou = box_iou((0, 0, 4, 4), np.array([[2, 2, 6, 6], [0, 0, 4, 4], [10, 10, 12, 12]]))
    np.testing.assert_allclose(iou, [4 / 28, 1.0, 0.0])


def test_corloc_hit_miss_and_empty_prediction():
    ev = CorLocEvaluator()
    mask = np.zeros((20, 20), np.float32)
    mask[2:10, 2:10] = 1.0  # box (2, 2, 10, 10), area 64
    gt_hit = np.array([[2, 2, 10, 11.0]])  # IoU 64/72
    gt_miss = np.array([[2, 2, 10, 20.0]])  # IoU 64/144
    own = Prediction(np.zeros((20, 20), np.float32), box=(2, 2, 10, 11))  # a method's own box wins
    pairs = [(_sample(np.zeros((20, 20)), gt_hit), Prediction(mask)), (_sample(np.zeros((20, 20)), gt_miss), Prediction(mask)),
             (_sample(np.zeros((20, 20)), gt_hit), Prediction(np.zeros((20, 20), np.float32))),
             (_sample(np.zeros((20, 20)), gt_hit), own)]
    rows, metrics = score(ev, pairs)
    assert [row["corloc_hit"] for row in rows] == [1, 0, 0, 1]
    assert metrics == {"corloc": 50.0, "n_images": 4}
    # the evaluator keeps nothing: scoring the same pairs again gives the same numbers
    assert score(ev, pairs) == (rows, metrics) and not hasattr(ev, "records")


def test_center_prior_values():
    prior = center_prior(3, 3, 0.25)
    assert prior[1, 1] == 1.0
    # corner pixel centre at (-1/3, -1/3): exp(-(2/9) / (2 * 0.0625))
    assert prior[0, 0] == pytest.approx(np.exp(-(2 / 9) / 0.125), rel=1e-6)
    assert prior.dtype == np.float32 and np.allclose(prior, prior.T)


def test_synthetic_dataset_is_deterministic_with_exact_labels():
    from harness.datasets.synthetic import SyntheticDataset

    a, b = SyntheticDataset(count=3), SyntheticDataset(count=3)
    other_seed = SyntheticDataset(count=3, seed=1)
    for s1, s2, s3 in zip(a, b, other_seed):
        assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.mask, s2.mask)
        assert not np.array_equal(s1.image, s3.image)
        assert s1.image.shape == (192, 256, 3) and s1.image.dtype == np.uint8
        assert set(np.unique(s1.mask)) <= {0, 255}
        ys, xs = np.nonzero(s1.mask)
        union = (s1.boxes[:, 0].min(), s1.boxes[:, 1].min(), s1.boxes[:, 2].max(), s1.boxes[:, 3].max())
        assert union == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
