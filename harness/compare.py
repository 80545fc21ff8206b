"""``harness compare``: the paired bootstrap difference of two runs on the same images."""
from __future__ import annotations

import numpy as np

from harness.bootstrap import Interval, paired_difference_interval, paired_max_curve_difference
from harness.errors import HarnessError
from harness.report import RunRecord

#: metric -> (per-image column, scale for printing, printed name)
PAIRED = {"acc": ("acc", 100.0, "Acc"), "iou": ("iou", 100.0, "IoU"), "max_fbeta": (None, 100.0, "max Fβ"),
          "corloc": ("corloc_hit", 100.0, "CorLoc")}


def _aligned(a: RunRecord, b: RunRecord):
    """Both runs' per-image frames in the same image order; refuses different image sets."""
    if a.per_image is None or b.per_image is None:
        raise HarnessError("compare needs the per_image.csv of both runs")
    ids_a, ids_b = set(a.per_image["id"]), set(b.per_image["id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b)[:5], sorted(ids_b - ids_a)[:5]
        raise HarnessError(
            f"compare needs two runs on the same images: {len(ids_a - ids_b)} only in {a.path.name} {only_a}, "
            f"{len(ids_b - ids_a)} only in {b.path.name} {only_b}"
        )
    order_b = b.per_image.set_index("id").loc[a.per_image["id"]].reset_index()
    return a.per_image, order_b, b.per_image.set_index("id").index.get_indexer(a.per_image["id"])


def compare_runs(a: RunRecord, b: RunRecord, resamples: int = 4000, seed: int = 0) -> dict[str, Interval]:
    """``metric -> interval of (a - b)`` for every metric both runs have."""
    frame_a, frame_b, b_index = _aligned(a, b)
    out = {}
    for metric, (column, _, _) in PAIRED.items():
        if metric not in a.metrics or metric not in b.metrics:
            continue
        if column is None:
            curves_a, curves_b = a.fbeta_curves, b.fbeta_curves
            if curves_a is None or curves_b is None:
                continue
            out[metric] = paired_max_curve_difference(curves_a, curves_b[b_index], resamples=resamples, seed=seed)
        else:
            out[metric] = paired_difference_interval(frame_a[column].to_numpy(np.float64),
                                                     frame_b[column].to_numpy(np.float64), resamples=resamples, seed=seed)
    if not out:
        raise HarnessError(f"{a.path.name} and {b.path.name} share no metric to compare")
    return out


def format_comparison(intervals: dict[str, Interval]) -> list[str]:
    """Lines like ``+1.2 IoU [0.8, 1.6]`` (points: x100)."""
    lines = []
    for metric, interval in intervals.items():
        _, scale, title = PAIRED[metric]
        e, lo, hi = interval.estimate * scale, interval.low * scale, interval.high * scale
        lines.append(f"{e:+.1f} {title} [{lo:.1f}, {hi:.1f}]")
    return lines
