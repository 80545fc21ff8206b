"""Evaluation protocols: the segtricks view (resize + centre crop of image and ground truth),
its F-beta foreground rule, and how a run records and separates protocols."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.api import Prediction, Sample
from harness.errors import HarnessError
from harness.evaluators.protocol import center_crop, get_protocol, resize_shorter_side
from harness.evaluators.saliency import SaliencyEvaluator, measure
from harness.runner import RunSpec, run


def test_resize_follows_torchvisions_size_rule_and_crop_its_offsets():
    image = np.zeros((300, 401, 3), np.uint8)
    assert resize_shorter_side(image, 335).shape == (335, int(335 * 401 / 300), 3)  # 447, truncated
    tall = np.zeros((500, 333), np.uint8)
    assert resize_shorter_side(tall, 335).shape == (int(335 * 500 / 333), 335)  # 502
    # torchvision: top = round((h - 320) / 2); (335 - 320) / 2 = 7.5 rounds to 8 (half to even)
    ramp = np.arange(335)[:, None].repeat(447, axis=1).astype(np.int32)
    crop = center_crop(ramp, 320)
    assert crop.shape == (320, 320) and crop[0, 0] == 8
    with pytest.raises(ValueError):
        center_crop(np.zeros((300, 400)), 320)


def test_fbeta_nonzero_rule_on_a_hand_worked_image():
    # ground truth: 2 solid pixels (255), 2 soft edge pixels (40), 4 background (0)
    gt = np.array([[255, 255, 40, 40], [0, 0, 0, 0]], np.uint8)
    pred = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    half, nonzero = measure(pred, gt, "half"), measure(pred, gt, "nonzero")
    # counts at 0.5 ignore the rule: TP 2, FP 1 (a soft pixel is background), FN 0
    assert (half.tp, half.fp, half.fn) == (nonzero.tp, nonzero.fp, nonzero.fn) == (2, 1, 0)
    # F at t = 0.5: "half": P = 2/3, R = 1; "nonzero": P = 1, R = 3/4
    from harness.evaluators.saliency import fbeta_curves

    f_half = fbeta_curves(half.hist_fg[None], half.hist_bg[None])[0, 127]
    f_nonzero = fbeta_curves(nonzero.hist_fg[None], nonzero.hist_bg[None])[0, 127]
    assert f_half == pytest.approx(1.3 * (2 / 3) / (0.3 * (2 / 3) + 1))
    assert f_nonzero == pytest.approx(1.3 * 0.75 / (0.3 + 0.75))


def test_default_protocol_leaves_samples_alone():
    sample = Sample("a", np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12), np.uint8))
    assert get_protocol("harness").view(sample) is sample


def test_segtricks_run_records_its_protocol_and_scores_the_crop(ecssd_root, tmp_path):
    common = dict(method="center-prior", dataset="ecssd", data_root=str(ecssd_root), limit=3,
                  out=tmp_path, progress=False)
    default = run(RunSpec(**common))
    crop = run(RunSpec(**common, protocol="segtricks"))
    assert crop.run_dir != default.run_dir  # two protocols never share a run directory
    results = json.loads((crop.run_dir / "results.json").read_text())
    assert results["protocol"] == {"name": "segtricks-320crop", "version": "1.0"}
    assert results["config"]["protocol"] == results["protocol"]
    assert results["config"]["evaluators"][0]["config"]["fbeta_foreground"] == "nonzero"
    assert "protocol" not in default.results["config"]  # earlier runs keep their names
    # the same metrics by hand: centre prior on each 320 x 320 view
    from harness.cache import quantize_mask
    from harness.methods.center_prior import CenterPrior
    from harness.registry import get_registry
    from harness.runner import validate_prediction

    dataset = get_registry().create("dataset", "ecssd", {}, root=ecssd_root)
    protocol, method = get_protocol("segtricks"), CenterPrior()
    evaluator = SaliencyEvaluator(fbeta_foreground="nonzero")
    records = []
    for sample_id in dataset.ids()[:3]:
        view = protocol.view(dataset.load(sample_id))
        mask = quantize_mask(validate_prediction(method.predict(view), view, "m").mask).astype(np.float32) / 255
        records.append(evaluator.process(view, Prediction(mask))[0])
    expected = evaluator.aggregate(records)
    for key in ("acc", "iou", "max_fbeta"):
        assert crop.metrics[key] == pytest.approx(expected[key], abs=1e-9), key


def test_segtricks_refuses_box_evaluators_and_unknown_protocols(tmp_path):
    with pytest.raises(HarnessError, match="corloc need boxes"):
        run(RunSpec(method="center-prior", dataset="synthetic", protocol="segtricks", out=tmp_path))
    with pytest.raises(HarnessError, match="choose one of harness, segtricks"):
        run(RunSpec(method="center-prior", dataset="synthetic", protocol="320", out=tmp_path))
    assert not any(tmp_path.iterdir())
