"""Saliency-evaluator throughput on the ECSSD masks, against PySODMetrics' Fmeasure + MAE.

Both score the same soft predictions (each ground-truth mask blurred and noised, as 8-bit
maps) in the same process; the script prints images per second for each and their ratio
(> 1: the harness is faster), then checks that the two agree on max F-beta and MAE where
their conventions coincide (see tests/test_saliency_protocol.py for the differences).

PySODMetrics pins numpy and OpenCV, so it is not a dependency: run this in a throwaway
environment that has it, with the harness on the path::

    python3 -m venv /tmp/venv-oracle && /tmp/venv-oracle/bin/pip install pysodmetrics pluggy pillow
    PYTHONPATH=. /tmp/venv-oracle/bin/python benchmarks/bench_saliency_eval.py --data ../shared/data/ECSSD

Without PySODMetrics it prints the harness's throughput alone.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from harness.api import Prediction, Sample
from harness.evaluators.saliency import SaliencyEvaluator, fbeta_curves


def load_pairs(root: Path, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(gt uint8, prediction uint8)`` per ECSSD mask: the GT blurred, noised and quantised."""
    rng = np.random.default_rng(seed)
    pairs = []
    for path in sorted((root / "ground_truth_mask").glob("*.png")):
        gt_img = Image.open(path).convert("L")
        blurred = np.asarray(gt_img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 8))), np.float32)
        pred = np.clip(blurred + rng.normal(0, 20, blurred.shape), 0, 255).round().astype(np.uint8)
        pred.flat[0], pred.flat[-1] = 0, 255  # min-max normalisation (PySODMetrics) is then the identity
        pairs.append((np.asarray(gt_img, np.uint8), pred))
    if not pairs:
        raise SystemExit(f"no masks under {root / 'ground_truth_mask'}")
    return pairs


def run_harness(pairs, preds_f32) -> tuple[float, dict, list]:
    start = time.perf_counter()
    ev = SaliencyEvaluator()
    records = [ev.process(Sample("x", None, gt), Prediction(pred))[0]  # type: ignore[arg-type]
               for (gt, _), pred in zip(pairs, preds_f32)]
    metrics = ev.aggregate(records)
    return time.perf_counter() - start, metrics, records


def run_pysod(pairs) -> tuple[float, dict]:
    import py_sod_metrics

    start = time.perf_counter()
    fm, mae = py_sod_metrics.Fmeasure(), py_sod_metrics.MAE()
    for gt, pred in pairs:
        fm.step(pred=pred, gt=gt)
        mae.step(pred=pred, gt=gt)
    curve = fm.get_results()["fm"]["curve"]
    results = {"curve": curve, "mae": float(mae.get_results()["mae"])}
    return time.perf_counter() - start, results


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "ECSSD")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the best is kept")
    args = parser.parse_args()

    pairs = load_pairs(args.data)
    # the runner hands evaluators float32 masks in [0, 1]; PySODMetrics takes the uint8 maps
    preds_f32 = [pred.astype(np.float32) / np.float32(255) for _, pred in pairs]
    pixels = sum(gt.size for gt, _ in pairs)
    print(f"{len(pairs)} ECSSD masks, {pixels / 1e6:.1f} Mpixels")

    ours = min(run_harness(pairs, preds_f32)[0] for _ in range(args.repeats))
    _, metrics, records = run_harness(pairs, preds_f32)
    print(f"harness SaliencyEvaluator (Acc, IoU, F at 255 thresholds, MAE): {len(pairs) / ours:8.1f} images/s")
    try:
        import py_sod_metrics  # noqa: F401
    except ImportError:
        print("PySODMetrics is not importable here: no ratio. Run this in an environment with it "
              "(see this file's docstring: pip install pysodmetrics in a throwaway venv).")
        return
    warnings.filterwarnings("ignore", message="This class will be removed")
    theirs = min(run_pysod(pairs)[0] for _ in range(args.repeats))
    _, reference = run_pysod(pairs)
    print(f"PySODMetrics Fmeasure + MAE:                                    {len(pairs) / theirs:8.1f} images/s")
    print(f"ratio (harness / PySODMetrics throughput): {theirs / ours:.2f}x")

    # agreement: our threshold k (p > k/255) is their "u8 >= k + 1" (curve index 254 - k)
    curves = fbeta_curves(np.stack([r.hist_fg for r in records]), np.stack([r.hist_bg for r in records]))
    ours_curve = curves.mean(axis=0)
    their_curve = reference["curve"][254 - np.arange(255)]
    print(f"max F-beta: harness {metrics['max_fbeta']:.6f}, PySODMetrics {their_curve.max():.6f}; "
          f"largest curve difference {np.abs(ours_curve - their_curve).max():.2e}")
    print(f"MAE:        harness {metrics['mae']:.6f}, PySODMetrics {reference['mae']:.6f}")


if __name__ == "__main__":
    main()
