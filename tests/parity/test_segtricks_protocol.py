"""``--protocol segtricks`` against segmentation-tricks' own evaluation (goldens made by
``regenerate_segtricks_protocol.py``): the same 320 x 320 image crops and soft ground truth,
and the same Acc / IoU / max F-beta from its ``token_metric`` on the same predictions."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.api import Prediction
from harness.evaluators.protocol import get_protocol
from harness.evaluators.saliency import SaliencyEvaluator
from harness.pipeline import score
from harness.registry import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, fixed_prediction  # noqa: E402

GOLDEN = GOLDENS / "segtricks-protocol"
METRICS = json.loads((GOLDEN / "metrics.json").read_text())
IDS = METRICS["ids"]


@pytest.fixture(scope="module")
def views(ecssd_root):
    dataset = get_registry().create("dataset", "ecssd", {}, root=ecssd_root)
    protocol = get_protocol("segtricks")
    return {i: protocol.view(dataset.load(i)) for i in IDS}


def test_image_and_ground_truth_crops_equal_the_reference(views):
    digests = json.loads((GOLDEN / "image_sha256.json").read_text())
    for sample_id, view in views.items():
        assert view.image.shape == (320, 320, 3)
        assert hashlib.sha256(np.ascontiguousarray(view.image).tobytes()).hexdigest() == digests[sample_id], sample_id
        with Image.open(GOLDEN / f"gt_{sample_id}.png") as img:
            np.testing.assert_array_equal(view.mask, np.asarray(img), err_msg=sample_id)
    # the resized ground truth is soft: the F-beta rule below matters
    assert any(((v.mask > 0) & (v.mask < 255)).any() for v in views.values())


def _pairs(views) -> list:
    """Each view with the fixed prediction the reference scored (mask levels / 255)."""
    return [(views[sample_id], Prediction(fixed_prediction(views[sample_id].mask, index).astype(np.float32) / 255.0))
            for index, sample_id in enumerate(IDS)]


def test_metrics_equal_token_metric_on_the_same_predictions(views):
    evaluator = SaliencyEvaluator(**get_protocol("segtricks").evaluator_args["saliency"])
    _, metrics = score(evaluator, _pairs(views))
    for key in ("acc", "iou", "max_fbeta"):  # the reference sums in float32
        assert metrics[key] == pytest.approx(METRICS[key], abs=2e-6), key


def test_the_protocols_fbeta_rule_is_what_makes_the_difference(views):
    """Under the default rule (gt/255 > 0.5) max F-beta moves away from the reference's."""
    _, metrics = score(SaliencyEvaluator(), _pairs(views))
    assert metrics["acc"] == pytest.approx(METRICS["acc"], abs=2e-6)
    assert abs(metrics["max_fbeta"] - METRICS["max_fbeta"]) > 1e-3
