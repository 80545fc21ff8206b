"""``harness compare``: the paired bootstrap difference of two runs on the same images."""
from __future__ import annotations

import numpy as np

from harness.bootstrap import Interval, format_interval, paired_difference_interval, paired_max_curve_difference
from harness.errors import HarnessError
from harness.report import MISSING, RunRecord
from harness.run_files import METRIC_COLUMNS, PER_IMAGE_FILE

#: metric -> (per-image column, scale for printing, printed name)
PAIRED = {"acc": (METRIC_COLUMNS["acc"], 100.0, "Acc"), "iou": (METRIC_COLUMNS["iou"], 100.0, "IoU"),
          "max_fbeta": (None, 100.0, "max Fβ"), "corloc": (METRIC_COLUMNS["corloc"], 100.0, "CorLoc")}


def _protocol_text(run: RunRecord) -> str:
    return f"{run.protocol['name']} v{run.protocol['version']}"


def data_differences(a: RunRecord, b: RunRecord) -> list[str]:
    """What tells the two runs' scored data or scoring apart, in words (empty: the same).

    Image ids alone do not: two datasets (or two seeds of a generated one) reuse ids. When both
    runs recorded a data digest (older runs did not), it stands for the root: the same bytes
    in two folders are the same data.
    """
    data_a, data_b = a.config["dataset"], b.config["dataset"]
    digest_a, digest_b = data_a.get("data_digest"), data_b.get("data_digest")
    checks = [("dataset", data_a["name"], data_b["name"]),
              ("dataset options", data_a.get("config", {}), data_b.get("config", {}))]
    if digest_a and digest_b:
        checks.append(("data digest", digest_a, digest_b))
    else:
        checks.append(("dataset root", data_a.get("root"), data_b.get("root")))
    differences = [f"{what} {x!r} vs {y!r}" for what, x, y in checks if x != y]
    if a.protocol != b.protocol:
        differences.append(f"protocol {_protocol_text(a)} vs {_protocol_text(b)}")
    return differences


def _check_same_data(a: RunRecord, b: RunRecord) -> None:
    differences = data_differences(a, b)
    if differences:
        raise HarnessError(
            f"compare needs two runs scored on the same data under one protocol, but {a.path} and {b.path} "
            f"differ in {'; '.join(differences)}; compare runs of one dataset and protocol"
        )


def _aligned(a: RunRecord, b: RunRecord):
    """Both runs' per-image frames in the same image order; refuses different image sets."""
    for run in (a, b):
        if run.per_image is None:
            raise HarnessError(f"compare needs the per-image data of both runs, but {run.path / PER_IMAGE_FILE} "
                               f"is missing; re-run that run")
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
    """``metric -> interval of (a - b)`` for every metric both runs have.

    Raises
    ------
    HarnessError
        The runs differ in dataset, dataset root or options, data digest or protocol (see
        :func:`data_differences`), or in their image ids, or share no metric.
    """
    _check_same_data(a, b)
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
    """Lines like ``+1.2 IoU [0.8, 1.6]`` (points: x100); an undefined difference is the missing
    mark with the reason, never ``nan``."""
    lines = []
    for metric, interval in intervals.items():
        _, scale, title = PAIRED[metric]
        if not np.isfinite([interval.estimate, interval.low, interval.high]).all():
            lines.append(f"{MISSING} {title} (undefined: no image has a value in both runs)")
            continue
        lines.append(format_interval(interval, scale, digits=1, signed=True, label=title))
    return lines
