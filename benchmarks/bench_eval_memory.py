"""Peak memory of evaluation against the number of images (tracemalloc, one process).

The evaluators return fixed-size per-image records (about 4 KB for saliency), never masks, which
the runner's evaluate stage keeps with the per-image rows, so the
peak grows by a few KB per image while each 400 x 300 mask is 480 KB as float32. The script
runs the saliency, CorLoc and size-binned evaluators over N synthetic masks for several N and
prints the peak and the growth per image, next to the size of one mask (the reference: what a
list-of-masks evaluator would add per image).

    python benchmarks/bench_eval_memory.py [--counts 50 200 800]
"""
from __future__ import annotations

import argparse
import tracemalloc

import numpy as np

from harness.api import Prediction, Sample
from harness.evaluators.corloc import CorLocEvaluator
from harness.evaluators.saliency import SaliencyEvaluator
from harness.evaluators.size_iou import SizeBinnedIoU
from harness.pipeline import EvaluateStage


def peak_bytes(count: int, height: int = 300, width: int = 400) -> int:
    stage = EvaluateStage([SaliencyEvaluator(), CorLocEvaluator(), SizeBinnedIoU()])  # what the runner keeps
    rng = np.random.default_rng(0)
    image = np.zeros((height, width, 3), np.uint8)
    tracemalloc.start()
    for _ in range(count):
        gt = np.zeros((height, width), np.uint8)
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        gt[y : y + height // 3, x : x + width // 3] = 255
        sample = Sample("x", image, gt, np.array([[x, y, x + width / 3, y + height / 3]]))
        prediction = Prediction(rng.random((height, width), dtype=np.float32))
        stage(sample, prediction)
    stage.aggregate()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 200, 800])
    args = parser.parse_args()
    mask_bytes = 300 * 400 * 4
    peaks = {n: peak_bytes(n) for n in args.counts}
    for n, peak in peaks.items():
        print(f"{n:6d} images: peak {peak / 2**20:8.2f} MiB")
    first, last = args.counts[0], args.counts[-1]
    per_image = (peaks[last] - peaks[first]) / (last - first)
    print(f"growth per image: {per_image / 1024:.1f} KiB; one float32 mask: {mask_bytes / 1024:.0f} KiB; "
          f"ratio {per_image / mask_bytes:.4f} (a list-of-masks evaluator: >= 1)")


if __name__ == "__main__":
    main()
