"""The shared array operations: one resize (two explicit families), one connected-component
labelling, one box rule."""
from __future__ import annotations

import numpy as np
import pytest

from harness.boxes import box_from_mask, mask_box
from harness.imageops import component_boxes, label_components, resize


def test_resize_without_antialias_is_opencvs():
    import cv2

    soft = np.random.default_rng(0).random((7, 11)).astype(np.float32)
    ours = resize(soft, (20, 5))
    assert ours.shape == (20, 5) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, cv2.resize(soft, (5, 20), interpolation=cv2.INTER_LINEAR))
    # half-pixel centres, no antialiasing: shrinking 1 0 1 0 ... by 2 samples between pixels
    stripes = np.tile(np.array([1, 0], np.float32), (2, 4))
    np.testing.assert_allclose(resize(stripes, (2, 4)), 0.5)
    binary = np.array([[0, 1], [1, 0]], np.uint8)
    np.testing.assert_array_equal(resize(binary, (4, 4), "nearest"), np.kron(binary, np.ones((2, 2), np.uint8)))


def test_resize_with_antialias_is_pillows():
    from PIL import Image

    image = np.random.default_rng(1).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    for name, flag in (("bilinear", Image.BILINEAR), ("lanczos", Image.LANCZOS)):
        expected = np.asarray(Image.fromarray(image).resize((13, 9), flag))
        np.testing.assert_array_equal(resize(image, (9, 13), name, antialias=True), expected)
    # the kernel widens when shrinking: 1-pixel stripes average to grey, where sampling keeps them
    stripes = np.tile(np.array([255, 0], np.uint8), (8, 8))
    grey = resize(stripes, (4, 4), "bilinear", antialias=True)
    assert grey.min() >= 110 and grey.max() <= 145
    assert (resize(stripes, (4, 4), "nearest") == 255).all()  # sampling hits one phase of the stripes


def test_resize_returns_the_input_at_its_size_and_refuses_nonsense():
    a = np.zeros((5, 6), np.float32)
    assert resize(a, (5, 6)) is a
    with pytest.raises(ValueError, match="interpolation 'area'"):
        resize(a, (2, 2), "area")
    with pytest.raises(ValueError, match="0x2"):
        resize(a, (0, 2))
    with pytest.raises(TypeError, match="float64"):
        resize(a.astype(np.float64), (2, 2), antialias=True)


def test_components_4_and_8_connected_numbered_in_raster_order():
    mask = np.array([[0, 0, 0, 0, 1, 0],
                     [1, 1, 0, 0, 0, 1],
                     [0, 0, 1, 0, 0, 0]], bool)
    labels4, count4 = label_components(mask, 4)
    assert count4 == 4
    np.testing.assert_array_equal(labels4, [[0, 0, 0, 0, 1, 0], [2, 2, 0, 0, 0, 3], [0, 0, 4, 0, 0, 0]])
    labels8, count8 = label_components(mask, 8)
    assert count8 == 2  # diagonal neighbours join
    np.testing.assert_array_equal(labels8, [[0, 0, 0, 0, 1, 0], [2, 2, 0, 0, 0, 1], [0, 0, 2, 0, 0, 0]])
    np.testing.assert_array_equal(component_boxes(labels8, count8), [[4, 0, 6, 2], [0, 1, 3, 3]])
    assert label_components(np.zeros((3, 3), bool))[1] == 0
    with pytest.raises(ValueError, match="connectivity 6"):
        label_components(mask, 6)


def test_mask_box():
    mask = np.zeros((6, 9), bool)
    mask[2:5, 3] = True
    mask[4, 7] = True
    assert mask_box(mask) == (3, 2, 8, 5)
    assert mask_box(np.zeros((3, 3), bool)) is None


def test_box_from_mask_thresholds_and_breaks_ties_in_raster_order():
    soft = np.zeros((4, 8), np.float32)
    soft[0, 5:7] = 0.9  # first in raster order
    soft[1, 0:2] = 0.7  # same box area, first pixel later in raster order (OpenCV's block scan put it first)
    soft[3, 4] = 0.5    # not above the threshold
    assert box_from_mask(soft) == (5.0, 0.0, 7.0, 1.0)
    assert box_from_mask(soft > 0.5) == (5.0, 0.0, 7.0, 1.0)
    assert box_from_mask(soft, threshold=0.8) == (5.0, 0.0, 7.0, 1.0)
    soft[2, 0] = 0.6  # joins the lower-left component by a corner: its box is now the larger
    assert box_from_mask(soft) == (0.0, 1.0, 2.0, 3.0)
    assert box_from_mask(np.zeros((4, 4), np.float32)) is None
