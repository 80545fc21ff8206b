"""Evaluation memory is flat in the number of images because each evaluator's per-image record
(what the run keeps until it aggregates) has a fixed size, whatever the mask's size: counted
exactly here, per built-in evaluator. (Peak memory in bytes, a measurement, is
benchmarks/bench_eval_memory.py's.)"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.api import Prediction, Sample
from harness.evaluators.corloc import CorLocEvaluator
from harness.evaluators.saliency import SaliencyEvaluator
from harness.evaluators.size_iou import SizeBinnedIoU


def _parts(record):
    """The leaves of a record: dataclass fields and tuple items, recursively."""
    if dataclasses.is_dataclass(record):
        for field in dataclasses.fields(record):
            yield from _parts(getattr(record, field.name))
    elif isinstance(record, (tuple, list)):
        for item in record:
            yield from _parts(item)
    else:
        yield record


def _record(evaluator, height: int, width: int):
    gt = np.zeros((height, width), np.uint8)
    gt[height // 4: height // 2, width // 4: width // 2] = 255
    sample = Sample("x", np.zeros((height, width, 3), np.uint8), gt, np.array([[0.0, 0.0, width / 2, height / 2]]))
    prediction = Prediction(np.random.default_rng(0).random((height, width), dtype=np.float32))
    record, _ = evaluator.process(sample, prediction)
    return record


# (evaluator, bytes of arrays in one record, number of leaves): saliency keeps two 256-bin int64
# level histograms (2 x 256 x 8 bytes) and five numbers; CorLoc a hit and an IoU; size-iou a
# bin, a ratio and an IoU
@pytest.mark.parametrize("evaluator, array_bytes, leaves", [
    (SaliencyEvaluator, 2 * 256 * 8, 7), (CorLocEvaluator, 0, 2), (SizeBinnedIoU, 0, 3)],
    ids=["saliency", "corloc", "size-iou"])
def test_a_record_has_the_same_fixed_size_for_any_mask(evaluator, array_bytes, leaves):
    for height, width in [(30, 40), (300, 400), (601, 203)]:
        parts = list(_parts(_record(evaluator(), height, width)))
        arrays = [p for p in parts if isinstance(p, np.ndarray)]
        assert len(parts) == leaves and sum(a.nbytes for a in arrays) == array_bytes, (height, width)
        assert all(isinstance(p, (np.ndarray, bool, int, float, np.bool_, np.integer, np.floating))
                   for p in parts)  # numbers and fixed-size arrays: no mask, no image
