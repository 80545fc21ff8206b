"""The ``gf`` post-processor against segmentation-tricks' guided filter (trick 1; goldens made by
``regenerate_guided_filter.py``) on the 320 x 320 crops its evaluation uses.

What the reference does, and what the harness does the same way:
- radius 9, eps 1e-3, a grey guide: it un-normalises the ImageNet-normalised tensor
  (``std * x + mean``) and averages the channels, i.e. the mean of RGB in [0, 1], the harness's
  guide. It does not filter with the normalised tensor.
- window means divided by the count of pixels inside the image (``boxfilter(ones)``): borders
  agree to rounding.

Where it differs:
- it standardises the mask first, ``(x - m) / (s + 1e-6)`` with ``m``, ``s`` the mask's mean
  and unbiased standard deviation, and undoes it after; the filter is affine in its input, so
  the reference is exactly ``m + (q - m) * s / (s + 1e-6)`` for the harness's ``q`` (checked to
  1e-12 in float64; the raw difference is at most 2.5e-6);
- it does not clamp (its outputs reach -0.07 and 1.05 here); ``gf`` clamps to [0, 1]. Masks
  thresholded anywhere in [0, 1) are the same;
- the reference runs in float32 (its rounding: up to 4.3e-6 here); ``gf`` computes in float64
  (in float32 its prefix sums lost up to 1.3e-5): within 2.5e-6 of the reference's float64
  answer (the standardisation) and 6e-6 of its float32 one.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.evaluators.protocol import get_protocol
from harness.methods.guided_filter import GuidedFilter, guided_filter
from harness.registry import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, fixed_prediction  # noqa: E402

GOLDEN = GOLDENS / "guided-filter"
CASES = json.loads((GOLDEN / "cases.json").read_text())["cases"]


@pytest.fixture(scope="module")
def views(ecssd_root):
    dataset = get_registry().create("dataset", "ecssd", {}, root=ecssd_root)
    protocol = get_protocol("segtricks")
    return {c["id"]: protocol.view(dataset.load(c["id"])) for c in CASES}


def inputs(view, case):
    assert hashlib.sha256(np.ascontiguousarray(view.image).tobytes()).hexdigest() == case["crop_sha256"]
    pred = fixed_prediction(view.mask, case["index"]).astype(np.float32) / np.float32(255.0)
    return view.image, pred, np.load(GOLDEN / f"{case['id']}.npz")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_float64_filter_is_the_references_up_to_its_standardisation(case, views):
    image, pred, golden = inputs(views[case["id"]], case)
    guide = torch.from_numpy(image.astype(np.float64).mean(-1) / 255.0)[None, None]
    x = torch.from_numpy(pred.astype(np.float64))[None, None]
    q = guided_filter(guide, x, 9, 1e-3)[0, 0].numpy().ravel()
    mean, std = x.mean().item(), x.std().item()
    expected = golden["f64"]
    raw = np.abs(q[golden["idx"]] - expected).max()
    assert 1e-8 < raw < 5e-6  # the standardisation's + 1e-6, and nothing else:
    standardised = mean + (q - mean) * std / (std + 1e-6)
    np.testing.assert_allclose(standardised[golden["idx"]], expected, rtol=0, atol=1e-12)
    assert standardised.sum() == pytest.approx(float(golden["f64_sum"]), abs=1e-8)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_gf_post_processor_matches_the_reference_as_it_runs(case, views):
    image, pred, golden = inputs(views[case["id"]], case)
    out = GuidedFilter()(image, pred)  # float32, clamped
    assert out.dtype == np.float32 and out.shape == (320, 320)
    sample = out.ravel()[golden["idx"]].astype(np.float64)
    assert np.abs(sample - np.clip(golden["f64"], 0, 1)).max() < 3e-6
    assert np.abs(sample - np.clip(golden["f32"], 0, 1)).max() < 1e-5
    # the reference leaves values outside [0, 1] (-0.07 to 1.05 on 1000); the > 0.5 masks are the same
    above = np.unpackbits(golden["f32_above"], count=out.size).astype(bool)
    assert ((out.ravel() > 0.5) == above).all()


def test_the_reference_does_not_clamp():
    low, high = min(c["f32_range"][0] for c in CASES), max(c["f32_range"][1] for c in CASES)
    assert low < -0.05 and high > 1.04
