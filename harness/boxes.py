"""Boxes: from masks, and their overlap. Boxes are ``(x0, y0, x1, y1)`` in pixel-edge
coordinates (``x1``, ``y1`` exclusive), so a box's area is ``(x1 - x0) * (y1 - y0)``."""
from __future__ import annotations

import numpy as np


def box_from_mask(foreground: np.ndarray) -> tuple[float, float, float, float] | None:
    """The bounding box of the 8-connected component with the largest bounding box.

    This is the Two Tricks paper's rule for CorLoc (threshold first, then call this).

    Parameters
    ----------
    foreground : np.ndarray
        ``(H, W)`` bool.

    Returns
    -------
    tuple or None
        ``(x0, y0, x1, y1)``, or ``None`` when nothing is foreground.
    """
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return None
    stats = stats[1:]  # row 0 is the background
    box_areas = stats[:, cv2.CC_STAT_WIDTH].astype(np.int64) * stats[:, cv2.CC_STAT_HEIGHT]
    x, y, w, h = stats[int(np.argmax(box_areas)), :4]
    return float(x), float(y), float(x + w), float(y + h)


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
