"""The ``bs`` post-processor against the references' bilateral solvers (goldens made by
``regenerate_bilateral_solver.py``; MOVE's, run inside its ``infer.py``, is in ``test_move.py``).

- TokenCut (``bilateral_solver_output``, sigmas 16/16/8, lambda 256): ``bs`` (preset harness)
  on the same native ECSSD image and target gives the same soft output (measured max |diff|
  2e-14) and the same > 0.5 mask. TokenCut then fills holes and keeps the largest component of
  that mask for its figures only; it scores the soft output, as the harness does.
- segmentation-tricks (``get_bf_optimized_masks``, the paper's "+ BF"): ``bs preset=segtricks`` on
  the 320 x 320 crop of ``--protocol segtricks`` gives its output (max |diff| 1e-14); the
  default preset does not (sigmas 16/16/8 on the uint8 colours).

The references compute YUV with one BLAS product; a pixel whose luma lies exactly on a cell edge
goes where that product's rounding sends it, which depends on the machine's BLAS kernel. The
goldens hold sha256 of the reference's YUV image: where this machine's product differs from it
(another BLAS), the exact checks give way to the measured effect of such pixels (per-channel sums,
the harness's former product, moved 316 pixels of 97 of the 201 ECSSD images to another cell: max
|diff| 1.2e-2, > 0.5 masks the same), and the test says so.
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.evaluators.protocol import get_protocol
from harness.methods.bilateral_solver import _RGB_TO_YUV, _YUV_OFFSET, BilateralSolver, image_yuv, imagenet_roundtrip
from harness.registry import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_common import GOLDENS, fixed_prediction  # noqa: E402

GOLDEN = GOLDENS / "bilateral-solver"
EXACT = 1e-9  # solver outputs: the references and the harness assemble the same system in another order


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def cases(reference: str) -> list[dict]:
    return json.loads((GOLDEN / reference / "cases.json").read_text())["cases"]


def pattern(shape) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows * 31 + cols * 17) % 101) / 100.0


def targets(gt_u8: np.ndarray, index: int) -> dict[str, np.ndarray]:
    pred = fixed_prediction(gt_u8, index)
    return {"soft": pred.astype(np.float32) / np.float32(255.0), "binary": (pred > 127).astype(np.float32)}


def same_blas(image: np.ndarray, case: dict) -> bool:
    """Whether this machine's colour product rounds as the reference's machine did; fails if
    the harness's own product differs while a one-call BLAS product agrees (a harness bug)."""
    if sha(image_yuv(image)) == case["yuv_sha256"]:
        return True
    rgb = image.reshape(-1, 3).astype(np.float64)
    one_call = (rgb @ _RGB_TO_YUV.T).reshape(image.shape) + _YUV_OFFSET
    assert sha(one_call) != case["yuv_sha256"], "the harness's YUV differs from the reference's BLAS product"
    warnings.warn("this machine's BLAS rounds the YUV product differently from the reference's machine; "
                  "bilateral-solver parity checked to the measured effect of cell-edge pixels only")
    return False


def compare(out: np.ndarray, golden, strict: bool) -> tuple[float, float]:
    """Check ``out`` against a stored summary; return (max |diff| at the samples, > 0.5 agreement)."""
    assert out.shape == tuple(golden["shape"])
    diff = float(np.abs(out.ravel()[golden["idx"]] - golden["values"]).max())
    above = np.unpackbits(golden["above"], count=out.size).astype(bool)
    agree = float(((out.ravel() > 0.5) == above).mean())
    if strict:
        assert diff <= EXACT
        np.testing.assert_allclose([out.sum(), (out * pattern(out.shape)).sum()], golden["moments"], rtol=0, atol=1e-8)
        assert agree == 1.0
    else:
        assert diff < 0.03 and agree > 0.999
    return diff, agree


@pytest.fixture(scope="module")
def ecssd(ecssd_root):
    return get_registry().create("dataset", "ecssd", {}, root=ecssd_root)


@pytest.mark.parametrize("case", cases("TokenCut"), ids=lambda c: f"{c['id']}-{c['target']}")
def test_bs_equals_tokencut_bilateral_solver_output(case, ecssd, ecssd_root):
    image = ecssd.load(case["id"]).image
    assert sha(image) == case["image_sha256"]
    with Image.open(ecssd_root / "ground_truth_mask" / f"{case['id']}.png") as img:
        gt = np.asarray(img.convert("L"))
    target = targets(gt, case["index"])[case["target"]]
    golden = np.load(GOLDEN / "TokenCut" / f"{case['id']}_{case['target']}.npz")
    post = BilateralSolver()
    compare(post.solve(image, target), golden, same_blas(image, case))
    # what the runner gets: clamped to [0, 1], float32
    clamped = post(image, target)
    assert clamped.dtype == np.float32 and clamped.min() >= 0 and clamped.max() <= 1
    # TokenCut's binary output, for its figures only: one connected piece of the filled > 0.5 mask
    from scipy import ndimage

    binary = np.unpackbits(golden["binary"], count=image.shape[0] * image.shape[1]).reshape(image.shape[:2]) > 0
    above = np.unpackbits(golden["above"], count=binary.size).reshape(binary.shape) > 0
    assert ndimage.label(binary)[1] == 1 and not binary[~ndimage.binary_fill_holes(above)].any()


@pytest.fixture(scope="module")
def segtricks_views(ecssd):
    protocol = get_protocol("segtricks")
    return {c["id"]: protocol.view(ecssd.load(c["id"])) for c in cases("segmentation-tricks")}


@pytest.mark.parametrize("case", cases("segmentation-tricks"), ids=lambda c: c["id"])
def test_bs_preset_segtricks_equals_get_bf_optimized_masks(case, segtricks_views):
    view = segtricks_views[case["id"]]
    assert sha(view.image) == case["crop_sha256"]  # the 320 x 320 crop the reference evaluates
    # its colours: the uint8 crop through float32 ToTensor, Normalize and back, x 255
    roundtrip = imagenet_roundtrip(view.image)
    assert case["image_dtype"] == "float32" and sha(roundtrip) == case["image_sha256"]
    assert not np.array_equal(roundtrip, view.image)  # 47.999996 is not 48: it matters at sigma_luma 4
    target = targets(view.mask, case["index"])["soft"]
    golden = np.load(GOLDEN / "segmentation-tricks" / f"{case['id']}_soft.npz")
    strict = same_blas(roundtrip, case)
    diff, agree = compare(BilateralSolver(preset="segtricks").solve(view.image, target), golden, strict)
    # explicit options override the preset: these are its values, so nothing changes
    same = BilateralSolver(preset="segtricks", sigma_spatial=24, lam=256, colour="imagenet").solve(view.image, target)
    assert np.abs(same.ravel()[golden["idx"]] - golden["values"]).max() <= max(diff, EXACT)


def test_the_default_preset_is_not_the_papers_bf(segtricks_views):
    """Before the preset, only TokenCut/MOVE's settings existed: on the same crops they give
    another answer (measured max |diff| 0.41 at the stored pixels, > 0.5 masks differ on 0.26 to
    4.3 % of the pixels). The preset's sigmas on the uint8 colours are not enough either (on 0557,
    the grey image: max |diff| 0.57 over all pixels, 0.25 % of the > 0.5 mask)."""
    worst = 0.0
    for case in cases("segmentation-tricks"):
        view = segtricks_views[case["id"]]
        target = targets(view.mask, case["index"])["soft"]
        golden = np.load(GOLDEN / "segmentation-tricks" / f"{case['id']}_soft.npz")
        out = BilateralSolver().solve(view.image, target)
        worst = max(worst, float(np.abs(out.ravel()[golden["idx"]] - golden["values"]).max()))
    assert worst > 0.05
    # and the float32 colours alone (the preset's sigmas on the uint8 image) move it too
    case = cases("segmentation-tricks")[1]
    view = segtricks_views[case["id"]]
    target = targets(view.mask, case["index"])["soft"]
    golden = np.load(GOLDEN / "segmentation-tricks" / f"{case['id']}_soft.npz")
    uint8 = BilateralSolver(preset="segtricks", colour="uint8").solve(view.image, target)
    assert np.abs(uint8.ravel()[golden["idx"]] - golden["values"]).max() > 0.01

