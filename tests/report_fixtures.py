"""Fixture run directories for report tests: results.json plus per-image data made from a seed."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from harness.evaluators.saliency import HISTOGRAMS_FILE, fbeta_curves, measure


def _saliency_images(quality: float, n: int, seed: int):
    """Per-image statistics of ``n`` synthetic 24 x 24 predictions; ``quality`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        gt = np.zeros((24, 24), np.uint8)
        y, x = rng.integers(2, 10, size=2)
        gt[y : y + 12, x : x + 12] = 255
        sign = np.where(gt > 0, 1.0, -1.0)
        pred = np.clip(0.5 + 0.5 * quality * sign + rng.normal(0, 0.3, gt.shape), 0, 1)
        records.append(measure(np.round(pred * 255) / 255, gt))
    return records


def write_run(root: Path, name: str, method: str, dataset: str, kind: str = "saliency", quality: float = 0.5,
              posts=(), backbone=None, images: int = 10, seed: int = 0,
              created: str = "2026-01-01T00:00:00+00:00", method_config=None, post_configs=None,
              protocol=("harness-saliency-corloc", "1.0")) -> Path:
    if kind == "saliency":
        records = _saliency_images(quality, images, seed)
        n = np.array([r.tp + r.fp + r.fn + r.tn for r in records], float)
        acc = np.array([(r.tp + r.tn) for r in records]) / n
        iou = np.array([r.tp / (r.tp + r.fp + r.fn) for r in records])
        fg_ratio = np.array([(r.tp + r.fn) for r in records]) / n
        hist_fg = np.stack([r.hist_fg for r in records])
        hist_bg = np.stack([r.hist_bg for r in records])
        curves = fbeta_curves(hist_fg, hist_bg)
        metrics = {"acc": acc.mean(), "iou": iou.mean(), "max_fbeta": curves.mean(0).max(), "mae": 0.1}
        columns = {"acc": acc, "iou": iou, "fg_ratio": fg_ratio}
        f_images = list(zip(hist_fg.astype(np.uint32), hist_bg.astype(np.uint32)))
    else:
        hits = (np.random.default_rng(seed).random(images) < quality).astype(int)
        metrics = {"corloc": 100.0 * hits.mean()}
        columns, f_images = {"corloc_hit": hits}, None
    return write_values_run(root, name, method, dataset, {k: float(v) for k, v in metrics.items()}, columns,
                            f_images, backbone, posts, created, method_config=method_config,
                            post_configs=post_configs, protocol=protocol, weights_digest="ab" * 32)


def paper_like_runs(root: Path) -> None:
    """Methods with and without post-processing on ECSSD and DUTS-TE, CorLoc on VOC12, and
    Sempart rows for the ablation table."""
    write_run(root, "r1", "tokencut", "ecssd", quality=0.55, backbone="dino-vits16", seed=1)
    write_run(root, "r2", "tokencut", "ecssd", quality=0.7, posts=["bs"], backbone="dino-vits16", seed=2)
    write_run(root, "r3", "tokencut", "duts_te", quality=0.5, backbone="dino-vits16", seed=3)
    write_run(root, "r4", "center-prior", "ecssd", quality=0.2, seed=4)
    write_run(root, "r5", "tokencut", "voc12", kind="corloc", quality=0.7, backbone="dino-vits16", seed=5)
    write_run(root, "r6", "center-prior", "voc12", kind="corloc", quality=0.4, seed=6)
    write_run(root, "r7", "sempart", "ecssd", quality=0.6, backbone="dino-vits8", seed=7)
    write_run(root, "r8", "sempart-crop", "ecssd", quality=0.65, backbone="dino-vits8", seed=8)
    write_run(root, "r9", "sempart-crop", "ecssd", quality=0.68, posts=["gf"], backbone="dino-vits8", seed=9,
              method_config={"preset": "harness"})
    # the same method and post chain under the paper's code's conventions: its own row, named
    write_run(root, "r11", "sempart-crop", "ecssd", quality=0.7, posts=["gf"], backbone="dino-vits8", seed=11,
              method_config={"preset": "segtricks"}, protocol=("segtricks-320crop", "1.0"))
    write_run(root, "r12", "tokencut", "ecssd", quality=0.66, posts=["bs"], backbone="dino-vits16", seed=12,
              post_configs=[{"preset": "segtricks"}])
    # an older run of the same cell is superseded by the newer r1
    write_run(root, "r0", "tokencut", "ecssd", quality=0.1, backbone="dino-vits16", seed=10,
              created="2025-01-01T00:00:00+00:00")


def f_image(fg_on: int, fg_off: int, bg_on: int, bg_off: int) -> tuple[np.ndarray, np.ndarray]:
    """The level histograms of an image whose prediction is 1.0 on ``fg_on`` foreground and
    ``bg_on`` background pixels and 0.0 on the others: its F-beta is the same at every threshold,
    with P = fg_on / (fg_on + bg_on) and R = fg_on / (fg_on + fg_off)."""
    hist_fg, hist_bg = np.zeros(256, np.uint32), np.zeros(256, np.uint32)
    hist_fg[255], hist_fg[0], hist_bg[255], hist_bg[0] = fg_on, fg_off, bg_on, bg_off  # bin 255: 1.0, bin 0: 0.0
    return hist_fg, hist_bg


def write_values_run(root: Path, name: str, method: str, dataset: str, metrics: dict, columns: dict | None,
                     f_images=None, backbone=None, posts=(), created: str = "2026-01-01T00:00:00+00:00",
                     data_digest: str | None = None, images: int | None = None, method_config=None,
                     post_configs=None, protocol=("harness-saliency-corloc", "1.0"),
                     weights_digest: str = "cd" * 32) -> Path:
    """A run directory with the given per-image ``columns`` (name -> one value per image; ``None``:
    no per_image.csv, ``images`` images), the given ``metrics`` in results.json, and, for saliency
    runs, the level histograms of ``f_images`` (one :func:`f_image` per image). Nothing is
    computed here: a test states every number it expects and why."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    n = len(next(iter(columns.values()))) if columns else images
    if columns:
        ids = [f"{i:04d}" for i in range(n)]
        names = list(columns)
        rows = [",".join(["id", *names])] + [",".join([ids[i], *(repr(float(columns[c][i])) for c in names)])
                                             for i in range(n)]
        (run_dir / "per_image.csv").write_text("\n".join(rows) + "\n")
    if f_images is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, hist_fg=np.stack([fg for fg, _ in f_images]),
                            hist_bg=np.stack([bg for _, bg in f_images]))
        (run_dir / HISTOGRAMS_FILE).write_bytes(buffer.getvalue())
    dataset_config = {"name": dataset, "version": "1", "config": {}}
    if data_digest:
        dataset_config["data_digest"] = data_digest
    results = {
        "schema_version": 1,
        "run": name,
        "created": created,
        "config": {
            "method": {"name": method, "version": "1", "config": dict(method_config or {})},
            "backbone": {"name": backbone, "config": {}} if backbone else None,
            "posts": [{"name": p, "version": "1", "config": dict(c)}
                      for p, c in zip(posts, post_configs or [{}] * len(posts))],
            "dataset": dataset_config,
        },
        "protocol": {"name": protocol[0], "version": protocol[1]},
        "weights_digest": weights_digest if backbone else None,
        "counts": {"images": n},
        "metrics": metrics,
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir
