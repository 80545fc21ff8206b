"""The mask adapters (`masks`, `move`) and end-to-end scores on the real data: predictions
equal to the ground truth score 1, and boxes shifted by a known offset give the implied CorLoc."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.api import Sample
from harness.errors import DataError, PluginError
from harness.methods.masks import MaskFolder, MOVEMasks, same_aspect
from harness.runner import RunSpec, run


def _sample(sample_id: str, h: int = 6, w: int = 8) -> Sample:
    return Sample(sample_id, np.zeros((h, w, 3), np.uint8))


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _run(tmp_path: Path, **kw):
    spec = RunSpec(out=tmp_path / "runs", progress=False, **kw)
    return run(spec)


# ---- the generic adapter --------------------------------------------------------------------
def test_reads_png_and_npy_by_stem_and_resizes_bilinearly(tmp_path):
    _png(tmp_path / "a.png", np.array([[255, 0], [255, 0]], np.uint8))
    np.save(tmp_path / "b.npy", np.array([[0.25, 0.75]], np.float32))
    method = MaskFolder(dir=tmp_path)
    method.check_inputs(["a", "b"])
    a = method.predict(_sample("a", 4, 4)).mask
    # OpenCV bilinear with half-pixel centres: columns 1, .75, .25, 0
    np.testing.assert_allclose(a[0], [1, 0.75, 0.25, 0], atol=1e-6)
    b = method.predict(_sample("b", 1, 2)).mask
    np.testing.assert_allclose(b, [[0.25, 0.75]])


def test_pattern_and_subdir(tmp_path):
    _png(tmp_path / "ecssd" / "x_pred.png", np.full((6, 8), 128, np.uint8))
    method = MaskFolder(dir=tmp_path, subdir="ecssd", pattern="{id}_pred.png")
    method.check_inputs(["x"])
    assert method.predict(_sample("x")).mask[0, 0] == pytest.approx(128 / 255)
    with pytest.raises(PluginError, match=r"must contain \{id\}"):
        MaskFolder(dir=tmp_path, pattern="pred.png")


def test_missing_predictions_are_listed_before_any_work(tmp_path):
    for i in (0, 3):
        _png(tmp_path / f"{i:04d}.png", np.zeros((6, 8), np.uint8))
    method = MaskFolder(dir=tmp_path)
    ids = [f"{i:04d}" for i in range(9)]
    with pytest.raises(DataError, match=r"7 of 9 images have no prediction \(expected .*<id>.png or "
                                        r".*<id>.npy\): 0001, 0002, 0004, 0005, 0006 and 2 more"):
        method.check_inputs(ids)


def test_required_folder_and_clear_errors(tmp_path):
    with pytest.raises(PluginError, match=r"needs the predictions' folder: --method-args dir=FOLDER"):
        MaskFolder()
    with pytest.raises(DataError, match=r"predictions folder .*nowhere does not exist"):
        MaskFolder(dir=tmp_path / "nowhere")
    _png(tmp_path / "a.png", np.zeros((6, 8), np.uint8))
    np.save(tmp_path / "a.npy", np.zeros((6, 8), np.float32))
    with pytest.raises(DataError, match=r"both a.png and a.npy exist"):
        MaskFolder(dir=tmp_path).check_inputs(["a"])


def test_wrong_aspect_ratio_is_an_error_unless_allowed(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))  # square, for a 6x8 image
    with pytest.raises(DataError, match=r"a.png is 8x8 \(WxH\) but image 'a' is 8x6: not the same aspect"):
        MaskFolder(dir=tmp_path).predict(_sample("a"))
    assert MaskFolder(dir=tmp_path, allow_aspect_change=True).predict(_sample("a")).mask.shape == (6, 8)
    # rounding of a scaled copy is fine: 400x300 at shorter side 448 is 597x448 (or 598x448)
    assert same_aspect((448, 597), (300, 400)) and same_aspect((448, 598), (300, 400))
    assert same_aspect((18, 25), (300, 400))  # a stride-16 patch grid, floored
    assert not same_aspect((448, 448), (300, 400))


@pytest.mark.parametrize("array, message", [
    (np.full((6, 8), 2.0, np.float32), r"values from 2 to 2; soft masks must lie in \[0, 1\]"),
    (np.zeros((2, 6, 8), np.float32), r"shape \(2, 6, 8\)"),
    (np.full((6, 8), np.nan, np.float32), r"NaN"),
    (np.zeros((6, 8), np.complex64), r"dtype complex64"),
    (np.full((6, 8), 70000, np.int64), r"values from 70000 to 70000; integer masks must lie in 0..255"),
    (np.zeros((0, 0), np.float32), r"shape \(0, 0\); save one non-empty"),
])
def test_bad_npy_predictions(tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(DataError, match=message):
        MaskFolder(dir=tmp_path).predict(_sample("a"))


def test_npy_variants_and_16bit_png(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((1, 6, 8), bool))
    np.save(tmp_path / "b.npy", np.full((6, 8), 51, np.uint8))
    Image.fromarray(np.full((6, 8), 65535 // 5, np.uint16)).save(tmp_path / "c.png")
    method = MaskFolder(dir=tmp_path)
    assert method.predict(_sample("a")).mask.min() == 1.0
    assert method.predict(_sample("b")).mask[0, 0] == pytest.approx(0.2)
    assert method.predict(_sample("c")).mask[0, 0] == pytest.approx(0.2)


def test_move_preset_reads_its_pngs_at_448(tmp_path, caplog):
    # MOVE saves probability x 255 at its working resolution (shorter side 448)
    _png(tmp_path / "0001.png", np.full((448, 597), 204, np.uint8))
    method = MOVEMasks(dir=tmp_path)
    method.check_inputs(["0001"])
    mask = method.predict(_sample("0001", 300, 400)).mask
    assert mask.shape == (300, 400) and mask[150, 200] == pytest.approx(0.8)
    assert "working resolution" not in caplog.text
    np.save(tmp_path / "0002.npy", np.zeros((6, 8), np.float32))
    with pytest.raises(DataError, match=r"1 of 1 images have no prediction \(expected .*<id>.png\)"):
        method.check_inputs(["0002"])  # MOVE writes PNGs only
    with pytest.raises(PluginError, match="has no option 'pattern'"):
        MOVEMasks(dir=tmp_path, pattern="{id}.npy")



def test_move_resizes_like_its_evaluation_and_masks_like_opencv(tmp_path):
    """``move``: PIL bilinear on the 8-bit PNG (antialiased when shrinking, rounded to 1/255);
    ``masks``: OpenCV bilinear on the float values (no antialiasing)."""
    import cv2

    stripes = np.tile(np.array([0, 255, 0, 0, 255, 255, 0, 255], np.uint8), (8, 56))  # 8 x 448, fine stripes
    ramp = np.repeat((np.arange(448) * 255 // 447).astype(np.uint8)[None, :], 8, 0)
    pattern = np.vstack([stripes, ramp])  # 16 x 448
    _png(tmp_path / "move" / "0001.png", pattern)
    _png(tmp_path / "masks" / "0001.png", pattern)
    sample = _sample("0001", 5, 140)  # the same aspect, shrunk 3.2 times
    move, generic = MOVEMasks(dir=tmp_path / "move"), MaskFolder(dir=tmp_path / "masks")
    got = move.predict(sample).mask
    expected = np.asarray(Image.fromarray(pattern).resize((140, 5), Image.BILINEAR), np.float32) / 255
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.rint(got * 255), got * 255)  # on the 1/255 grid
    opencv = cv2.resize(pattern.astype(np.float32) / 255, (140, 5), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(generic.predict(sample).mask, np.clip(opencv, 0, 1), atol=1e-7)
    assert np.abs(got - opencv).max() > 0.2  # antialiasing: the stripes average out in PIL only


def test_move_refuses_16_bit_pngs(tmp_path):
    _png(tmp_path / "0001.png", np.full((448, 597), 1000, np.uint16))
    with pytest.raises(DataError, match="not one of MOVE's 8-bit PNGs"):
        MOVEMasks(dir=tmp_path).predict(_sample("0001", 300, 400))

def test_masks_method_is_not_cached_and_changed_files_change_its_token(tmp_path):
    path = _png(tmp_path / "a.png", np.zeros((6, 8), np.uint8))
    method = MaskFolder(dir=tmp_path)
    assert method.cacheable is False
    method.check_inputs(["a"])
    before = method.cache_token()
    _png(path, np.full((6, 8), 255, np.uint8))
    import os

    os.utime(path, ns=(1, 1))
    method.check_inputs(["a"])
    assert method.cache_token() != before  # post-processed masks of stale files are not re-used


# ---- end to end on the real data --------------------------------------------------------------
def test_ecssd_ground_truth_as_predictions_scores_one(tmp_path, ecssd_root):
    result = _run(tmp_path, method="masks", method_args={"dir": str(ecssd_root / "ground_truth_mask")},
                  dataset="ecssd", data_root=str(ecssd_root), evaluators=["saliency", "size-iou"])
    m = result.metrics
    assert m["n_images"] == 201 and m["acc"] == 1.0 and m["iou"] == 1.0 and m["max_fbeta"] == 1.0
    assert m["mae"] == 0.0 and sum(v for k, v in m.items() if k.startswith("size_n_")) == 201
    assert all(v == 1.0 for k, v in m.items() if k.startswith("size_iou_") and v is not None)
    assert (result.run_dir / "size_iou.png").is_file()
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["protocol"]["name"] == "harness-saliency-corloc" and results["protocol"]["version"]
    lines = (result.run_dir / "per_image.csv").read_text().splitlines()
    assert len(lines) == 202 and lines[0].startswith("id,acc,iou,mae")


def test_ecssd_missing_prediction_fails_before_scoring(tmp_path, ecssd_root):
    preds = tmp_path / "preds"
    preds.mkdir()
    for path in sorted((ecssd_root / "ground_truth_mask").iterdir())[:-2]:
        (preds / path.name).symlink_to(path)
    with pytest.raises(DataError, match=r"2 of 201 images have no prediction .*: 0995, 1000"):
        _run(tmp_path, method="masks", method_args={"dir": str(preds)}, dataset="ecssd", data_root=str(ecssd_root))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _box_masks(voc12_root: Path, folder: Path, shift: float) -> dict[str, float]:
    """Write one mask per image: its largest GT box moved right (or left, towards the centre)
    by ``shift`` x its width. Return the best IoU with any GT box, computed independently."""
    from harness.datasets.voc import VOC12

    ds = VOC12(voc12_root)
    folder.mkdir(parents=True, exist_ok=True)
    best = {}
    for sample_id in ds.ids():
        sample = ds.load(sample_id)
        h, w = sample.image.shape[:2]
        boxes = sample.boxes.astype(int)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        x0, y0, x1, y1 = boxes[int(np.argmax(areas))]
        dx = int(round(shift * (x1 - x0))) * (1 if (x0 + x1) / 2 < w / 2 else -1)
        px0, px1 = max(0, x0 + dx), min(w, x1 + dx)  # the mask is clipped by the image
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, px0:px1] = 255
        _png(folder / f"{sample_id}.png", mask)
        ious = []
        for gx0, gy0, gx1, gy1 in sample.boxes:
            iw = max(0.0, min(px1, gx1) - max(px0, gx0))
            ih = max(0.0, min(y1, gy1) - max(y0, gy0))
            inter = iw * ih
            ious.append(inter / ((px1 - px0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - inter))
        best[sample_id] = max(ious)
    return best


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5])
def test_voc12_corloc_of_boxes_shifted_by_a_known_offset(tmp_path, voc12_root, shift):
    best = _box_masks(voc12_root, tmp_path / "preds", shift)
    result = _run(tmp_path, method="masks", method_args={"dir": str(tmp_path / "preds")},
                  dataset="voc12", data_root=str(voc12_root), evaluators=["corloc"])
    expected = 100.0 * np.mean([iou >= 0.5 for iou in best.values()])
    assert result.metrics["corloc"] == pytest.approx(expected) and result.metrics["n_images"] == 50
    if shift == 0.0:
        assert expected == 100.0  # the ground truth's own box
    elif shift == 0.25:
        # own-box IoU >= (w - w/4) / (w + w/4) = 0.6 for every image (clipping only shrinks the union)
        assert expected == 100.0
    else:
        # own-box IoU (w/2) / (3w/2) = 1/3: a miss, unless clipping or another GT box saves it
        assert expected == 8.0  # 4 of the 50 images
    rows = (result.run_dir / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("id,corloc_hit,box_iou")
