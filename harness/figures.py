"""Report figures: a qualitative grid and size-binned IoU curves of several runs.

The grid is composed as an array and saved with Pillow, so its pixel size is exact:
``width = columns * (tile + gap) - gap`` and ``height = header + rows * (tile + gap) - gap``.
"""
from __future__ import annotations

import io
import logging
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.storage import atomic_write_bytes

if TYPE_CHECKING:
    from harness.report import RunRecord

log = logging.getLogger(__name__)

TILE = 128
GAP = 4
HEADER = 30  # two lines of column title


def _tile(array: np.ndarray, size: int) -> np.ndarray:
    """Letterbox an (H, W) or (H, W, 3) uint8 array into a ``size x size`` RGB tile."""
    from PIL import Image

    rgb = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    img = Image.fromarray(rgb)
    img.thumbnail((size, size), Image.BILINEAR)
    tile = np.full((size, size, 3), 255, np.uint8)
    w, h = img.size
    top, left = (size - h) // 2, (size - w) // 2
    tile[top : top + h, left : left + w] = np.asarray(img)
    return tile


def grid_size(rows: int, columns: int, tile: int = TILE) -> tuple[int, int]:
    """``(width, height)`` in pixels of a grid with this many rows and columns."""
    return columns * (tile + GAP) - GAP, HEADER + rows * (tile + GAP) - GAP


def qualitative_grid(rows: list[list[np.ndarray]], titles: list[str], path: str | Path, tile: int = TILE) -> Path:
    """Save a grid: one row per image, one column per entry (image, ground truth, masks...).

    Parameters
    ----------
    rows : list of lists of arrays
        Each inner list holds the column arrays of one image ((H, W, 3) or (H, W) uint8).
    titles : list of str
        One title per column, drawn in the header.
    """
    from PIL import Image, ImageDraw

    width, height = grid_size(len(rows), len(titles), tile)
    canvas = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, array in enumerate(row):
            y, x = HEADER + r * (tile + GAP), c * (tile + GAP)
            canvas[y : y + tile, x : x + tile] = _tile(array, tile)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for c, title in enumerate(titles):
        lines = textwrap.wrap(title, width=tile // 6)[:2]
        draw.multiline_text((c * (tile + GAP) + 2, 2), "\n".join(lines), fill=(0, 0, 0), spacing=2)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_size_binned(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """One line per run: mean IoU per ground-truth size bin (bins in percent of the image)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness.evaluators.protocol import N_SIZE_BINS

    centres = (np.arange(N_SIZE_BINS) + 0.5) * 100 / N_SIZE_BINS
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (means, _) in curves.items():
        ax.plot(centres, means, marker="o", markersize=3, label=label)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel("ground-truth foreground (% of the image)")
    ax.set_ylabel("mean IoU (prediction > 0.5)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def size_curves(runs: list["RunRecord"], out_dir: Path) -> list[tuple[str, Path]]:
    """One size-binned IoU plot per dataset, a line per run with per-image IoU and size."""
    from harness.evaluators.protocol import N_SIZE_BINS
    from harness.evaluators.size_iou import per_bin_means
    from harness.report import dataset_title

    made = []
    for dataset in sorted({r.dataset for r in runs}):
        curves = {}
        for run in sorted((r for r in runs if r.dataset == dataset), key=lambda r: r.row_label):
            frame = run.per_image
            # the saliency evaluator's columns, else the size-iou evaluator's
            columns = next((pair for pair in (("fg_ratio", "iou"), ("size_fg_ratio", "size_iou"))
                            if frame is not None and set(pair) <= set(frame.columns)), None)
            if columns is None:
                continue
            ratio, iou = columns
            bins = np.minimum((frame[ratio].to_numpy() * N_SIZE_BINS).astype(np.int64), N_SIZE_BINS - 1)
            curves[run.row_label] = per_bin_means(bins, frame[iou].to_numpy())
        if curves:
            path = plot_size_binned(curves, out_dir / f"size_iou_{dataset}.png",
                                    f"IoU by object size, {dataset_title(dataset)}")
            made.append((f"IoU by object size, {dataset_title(dataset)}", path))
    return made


def pick_images(run: "RunRecord", ids: list[str] | None) -> list[tuple[str, str]]:
    """``(label, id)`` rows: the given ids, else the run's best, median and worst IoU."""
    if ids:
        return [(i, i) for i in ids]
    frame = run.per_image
    if frame is None or "iou" not in frame:
        raise ValueError(f"run {run.path.name} has no per-image IoU to rank images by")
    ranked = frame.dropna(subset=["iou"]).sort_values(["iou", "id"], ascending=[False, True])
    if ranked.empty:
        raise ValueError(f"run {run.path.name} has no image with a defined IoU")
    picks = [("best", 0), ("median", len(ranked) // 2), ("worst", len(ranked) - 1)]
    return [(f"{label} ({ranked.iloc[i]['iou']:.2f})", str(ranked.iloc[i]["id"])) for label, i in picks]


def _run_masks(run: "RunRecord", ids: list[str]) -> dict[str, tuple]:
    """The run's final masks for some images, from its reopened runner (cache first)."""
    from harness.runner import reopen

    return {sample.id: (sample, mask) for sample, mask in reopen(run.path).final_masks(ids)}


def qualitative_figures(runs: list["RunRecord"], out_dir: Path, pick: str | None = None,
                        ids: list[str] | None = None) -> tuple[list[tuple[str, Path]], list[str]]:
    """One grid per dataset (image | ground truth | one column per run).

    Returns the figures made and a note for each dataset skipped (and why).
    """
    from harness.errors import HarnessError
    from harness.report import dataset_title

    made, skipped = [], []
    for dataset in sorted({r.dataset for r in runs}):
        members = sorted((r for r in runs if r.dataset == dataset and "iou" in r.metrics), key=lambda r: r.row_label)
        if not members:
            continue
        chosen = next((r for r in members if pick in (r.path.name, r.row_label)), members[0])
        try:
            rows = pick_images(chosen, ids)
            masks = [_run_masks(run, [i for _, i in rows]) for run in members]
        except (ValueError, HarnessError, OSError) as exc:
            skipped.append(f"qualitative grid for {dataset_title(dataset)} skipped: {exc}")
            continue
        grid_rows = []
        for _, image_id in rows:
            sample, _ = masks[0][image_id]
            grid_rows.append([sample.image, sample.mask if sample.mask is not None else np.zeros(sample.image.shape[:2], np.uint8)]
                             + [m[image_id][1] for m in masks])
        titles = ["image", "ground truth"] + [r.row_label for r in members]
        path = qualitative_grid(grid_rows, titles, out_dir / f"qualitative_{dataset}.png")
        caption = f"{dataset_title(dataset)}: " + ", ".join(label for label, _ in rows) + f" (ranked by {chosen.row_label})"
        made.append((caption, path))
    return made, skipped
