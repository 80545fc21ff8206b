"""IoU by object size: the Two Tricks paper's appendix analysis.

Images fall into 20 equal bins by their ground-truth foreground ratio (bin ``b`` holds
ratios in ``[b / 20, (b + 1) / 20)``, the last bin also 1.0); per bin the evaluator reports
the mean IoU at prediction ``> 0.5`` (the saliency protocol's IoU) and the image count, as
flat metrics ``size_iou_<lo>_<hi>`` and ``size_n_<lo>_<hi>`` (percent), and draws them in
``size_iou.png`` in the run directory. An image whose union is empty (no ground truth and no
prediction) counts in its bin but not in the mean, as in the saliency IoU.

Per-image columns: ``size_fg_ratio`` (the ground-truth foreground ratio), ``size_bin`` (its
bin's label) and ``size_iou`` (the image's IoU at 0.5), named apart from the saliency
evaluator's ``fg_ratio`` and ``iou`` so that both can score one run.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness.api import Evaluator, Prediction, Sample
from harness.evaluators.protocol import N_SIZE_BINS
from harness.evaluators.saliency import ground_truth_foreground, resize_to

PLOT_NAME = "size_iou.png"


def size_bin(n_foreground: int, n_pixels: int, bins: int = N_SIZE_BINS) -> int:
    """The bin of a foreground ratio, in exact integer arithmetic (0.05 lands in bin 1)."""
    return min(bins - 1, (n_foreground * bins) // n_pixels)


def bin_label(index: int, bins: int = N_SIZE_BINS) -> str:
    """``"00_05"`` for bin 0 of 20: the bin's bounds in percent."""
    width = 100 // bins
    return f"{index * width:02d}_{(index + 1) * width:02d}"


def per_bin_means(bins: np.ndarray, ious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean IoU per size bin (NaN where no IoU is defined) and image count per bin.

    Parameters
    ----------
    bins : np.ndarray
        ``(N,)`` bin index of each image (:func:`size_bin`).
    ious : np.ndarray
        ``(N,)`` IoU of each image (NaN for an empty union).
    """
    bins = np.asarray(bins, dtype=np.int64)
    ious = np.asarray(ious, dtype=np.float64)
    counts = np.bincount(bins, minlength=N_SIZE_BINS)
    valid = np.isfinite(ious)
    sums = np.bincount(bins[valid], weights=ious[valid], minlength=N_SIZE_BINS)
    defined = np.bincount(bins[valid], minlength=N_SIZE_BINS)
    means = np.divide(sums, defined, out=np.full(N_SIZE_BINS, np.nan), where=defined > 0)
    return means, counts


class SizeBinnedIoU(Evaluator):
    name = "size-iou"
    description = "mean IoU and image count in 20 bins of ground-truth foreground ratio (+ PNG plot)"
    requires = "mask"
    metric_keys = tuple(key for b in range(N_SIZE_BINS) for key in (f"size_iou_{bin_label(b)}", f"size_n_{bin_label(b)}"))
    row_keys = ("size_fg_ratio", "size_bin", "size_iou")

    def process(self, sample: Sample, prediction: Prediction) -> tuple[tuple[int, float, float], dict]:
        fg = ground_truth_foreground(sample.mask)
        positive = resize_to(prediction.mask, fg.shape) > 0.5
        n_fg = int(np.count_nonzero(fg))
        inter = int(np.count_nonzero(positive & fg))
        union = n_fg + int(np.count_nonzero(positive)) - inter
        iou = inter / union if union else float("nan")
        index = size_bin(n_fg, fg.size)
        return (index, n_fg / fg.size, iou), {"size_fg_ratio": n_fg / fg.size, "size_bin": bin_label(index),
                                              "size_iou": iou}

    @staticmethod
    def per_bin(records) -> tuple[np.ndarray, np.ndarray]:
        """``(20,)`` mean IoU (NaN where no IoU is defined) and ``(20,)`` image counts."""
        return per_bin_means(np.array([r[0] for r in records], dtype=np.int64),
                             np.array([r[2] for r in records], dtype=np.float64))

    def aggregate(self, records) -> dict:
        if not records:
            return {}
        means, counts = self.per_bin(records)
        metrics: dict = {}
        for b in range(N_SIZE_BINS):
            label = bin_label(b)
            metrics[f"size_iou_{label}"] = float(means[b]) if np.isfinite(means[b]) else None
            metrics[f"size_n_{label}"] = int(counts[b])
        return metrics

    def artifacts(self, records, run_dir: Path) -> list[Path]:
        if not records:
            return []
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from harness.storage import atomic_write_bytes

        means, counts = self.per_bin(records)
        width = 100 / N_SIZE_BINS
        centres = (np.arange(N_SIZE_BINS) + 0.5) * width
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)  # an explicit Agg canvas: no GUI backend, no pyplot state
        ax = fig.add_subplot(1, 1, 1)
        shown = np.isfinite(means)
        ax.bar(centres[shown], means[shown], width=width * 0.9, color="tab:blue")
        for x, mean, count in zip(centres, means, counts):
            if count:
                y = mean if np.isfinite(mean) else 0.0
                ax.text(x, y + 0.01, f"n={count}", ha="center", va="bottom", fontsize=7)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.08)
        ax.set_xticks(np.arange(0, 101, 10))
        ax.set_xlabel("ground-truth foreground (% of the image)")
        ax.set_ylabel("mean IoU (prediction > 0.5)")
        ax.set_title(f"IoU by object size ({len(records)} images, {N_SIZE_BINS} bins)")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return [atomic_write_bytes(Path(run_dir) / PLOT_NAME, buffer.getvalue())]
