"""Evaluation memory stays flat in the number of images: records are fixed-size, masks are not kept."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_eval_memory.py"


def test_peak_memory_grows_by_records_not_by_masks():
    spec = importlib.util.spec_from_file_location("bench_eval_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small, large = bench.peak_bytes(20), bench.peak_bytes(200)
    per_image = (large - small) / 180
    mask_bytes = 300 * 400 * 4
    # keeping each mask would add >= 469 KiB per image; fixed-size records plus the vectorised
    # summary add ~20 KiB (measured); 10% of a mask leaves room without hiding a regression
    assert per_image < 0.1 * mask_bytes, per_image
