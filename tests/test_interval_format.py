"""One interval formatter (harness.bootstrap.format_interval) behind every printed interval."""
from __future__ import annotations

import math

from harness.bootstrap import Interval, format_interval
from harness.compare import format_comparison


def test_format_interval():
    interval = Interval(0.81249, 0.79, 0.83351)
    assert format_interval(interval) == "0.812 [0.790, 0.834]"
    assert format_interval(interval, estimate=False) == "[0.790, 0.834]"
    assert format_interval(interval, scale=100, digits=1) == "81.2 [79.0, 83.4]"
    assert format_interval(Interval(0.012, -0.004, 0.016), 100, 1, signed=True, label="IoU") == "+1.2 IoU [-0.4, 1.6]"
    assert format_interval(Interval(-0.012, -0.02, -0.004), 100, 1, signed=True) == "-1.2 [-2.0, -0.4]"
    assert interval.format(digits=2) == format_interval(interval, digits=2) == "0.81 [0.79, 0.83]"


def test_compare_lines_use_it():
    lines = format_comparison({"iou": Interval(0.012, 0.008, 0.016), "corloc": Interval(0.5, 0.25, 0.75),
                               "acc": Interval(math.nan, math.nan, math.nan)})
    assert lines == ["+1.2 IoU [0.8, 1.6]", "+50.0 CorLoc [25.0, 75.0]",
                     "– Acc (undefined: no image has a value in both runs)"]
