"""Boxes: from masks, and their overlap. Boxes are ``(x0, y0, x1, y1)`` in pixel-edge
coordinates (``x1``, ``y1`` exclusive), so a box's area is ``(x1 - x0) * (y1 - y0)``."""
from __future__ import annotations

import numpy as np

from harness.imageops import component_boxes, label_components


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the true pixels of a boolean
    ``(H, W)`` mask, in the mask's own pixels (image or patch grid); ``None`` when none is true."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_from_mask(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """The Two Tricks paper's box of a mask, for CorLoc: the pixels above ``threshold``, split
    into 8-connected components, and the bounding box of the component whose bounding box is
    largest (on a tie, the component met first in raster order).

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` soft mask in [0, 1] (or bool: true pixels are above any threshold < 1).

    Returns
    -------
    tuple or None
        ``(x0, y0, x1, y1)``, or ``None`` when nothing is foreground.
    """
    labels, count = label_components(np.asarray(mask) > threshold, connectivity=8)
    if count == 0:
        return None
    boxes = component_boxes(labels, count)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    x0, y0, x1, y1 = boxes[int(np.argmax(areas))]
    return float(x0), float(y0), float(x1), float(y1)


def box_iou(box: tuple | np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box ``(4,)`` against ``(K, 4)`` boxes; returns ``(K,)``."""
    box = np.asarray(box, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
