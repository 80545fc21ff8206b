"""Bootstrap intervals: a real coverage check, exact zeros for identical runs, the max-F statistic."""
from __future__ import annotations

import numpy as np
import pytest

from harness.bootstrap import (
    max_mean_curve_interval,
    mean_interval,
    paired_difference_interval,
    paired_max_curve_difference,
)


def test_mean_interval_covers_the_true_mean_at_about_95_percent():
    # 200 independent samples of n = 100 from N(0.6, 0.2^2); each 95% interval should contain
    # 0.6 about 95% of the time. The percentile bootstrap under-covers a little at this n
    # (~94%); with 200 trials the standard error of the rate is 1.5 points, so [0.90, 0.99]
    # fails only if the interval is really miscalibrated.
    hits = 0
    trials = 200
    for trial in range(trials):
        sample = np.random.default_rng(1000 + trial).normal(0.6, 0.2, size=100)
        interval = mean_interval(sample, resamples=1000, seed=trial)
        hits += interval.low <= 0.6 <= interval.high
    assert 0.90 <= hits / trials <= 0.99


def test_interval_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(0)
    small = mean_interval(rng.normal(size=100), resamples=2000)
    large = mean_interval(rng.normal(size=1600), resamples=2000)
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 3.0 < ratio < 5.0  # sqrt(1600 / 100) = 4


def test_nan_values_are_left_out():
    interval = mean_interval(np.array([1.0, np.nan, 1.0, 1.0]), resamples=200)
    assert interval.estimate == 1.0 and interval.low == 1.0 and interval.high == 1.0


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    values = np.random.default_rng(3).random(50)
    interval = paired_difference_interval(values, values.copy())
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    curves = np.random.default_rng(4).random((50, 255))
    diff = paired_max_curve_difference(curves, curves.copy())
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_constant_gain():
    base = np.random.default_rng(5).random(300)
    interval = paired_difference_interval(base + 0.02, base)
    assert interval.estimate == pytest.approx(0.02) and interval.low == pytest.approx(0.02)
    assert interval.format(scale=100, digits=1, signed=True) == "+2.0 [2.0, 2.0]"


def test_max_curve_interval_estimate_is_the_dataset_level_max():
    curves = np.array([[0.2, 0.9, 0.4], [0.6, 0.5, 0.9]])
    interval = max_mean_curve_interval(curves, resamples=500)
    assert interval.estimate == pytest.approx(0.7)  # means per threshold: 0.4, 0.7, 0.65
    assert 0.5 <= interval.low <= 0.7 <= interval.high <= 0.9
