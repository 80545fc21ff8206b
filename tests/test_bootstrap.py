"""Bootstrap intervals: equal to a plain numpy percentile bootstrap, intervals worked out by hand
for two-valued data, exact zeros for identical runs, the max-F statistic."""
from __future__ import annotations

import numpy as np
import pytest

from harness.bootstrap import (
    max_mean_curve_interval,
    mean_interval,
    paired_difference_interval,
    paired_max_curve_difference,
)


def _numpy_percentile_bootstrap(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The documented method written out plainly: ``resamples`` resamples of the n images as
    multinomial counts (n draws, each image 1/n) from ``default_rng(seed)``; the mean of each
    resample as the average of its repeated values; the 2.5 and 97.5 percentiles."""
    n = len(values)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = [np.repeat(values, row).mean() for row in counts]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@pytest.mark.parametrize("n, resamples, seed", [(7, 300, 0), (100, 1000, 3), (1600, 500, 11)])
def test_mean_interval_is_the_numpy_percentile_bootstrap(n, resamples, seed):
    values = np.random.default_rng(1000 + n).normal(0.6, 0.2, size=n)
    interval = mean_interval(values, resamples=resamples, seed=seed)
    low, high = _numpy_percentile_bootstrap(values, resamples, seed)
    assert interval.estimate == pytest.approx(values.sum() / n, abs=1e-15)
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_two_valued_data_gives_the_two_values_as_the_interval(seed):
    """Two images: a resample is (a, a), (a, b) or (b, b) with probabilities 1/4, 1/2, 1/4, so
    a quarter of the resampled means equal a and a quarter b: the 2.5 and 97.5 percentiles are a
    and b exactly, and the estimate is (a + b) / 2."""
    interval = mean_interval(np.array([0.25, 0.75]), resamples=200, seed=seed)
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.25, 0.75)


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


def test_max_curve_interval_of_two_images_by_hand():
    """Means per threshold 0.4, 0.7, 0.65: the dataset-level max is 0.7. A resample holds image 0
    twice (max of its curve: 0.9), image 1 twice (0.9) or each once (0.7), each half the time,
    so the 2.5 and 97.5 percentiles are 0.7 and 0.9."""
    curves = np.array([[0.2, 0.9, 0.4], [0.6, 0.5, 0.9]])
    interval = max_mean_curve_interval(curves, resamples=500)
    assert interval.estimate == pytest.approx(0.7, abs=1e-15)
    assert (interval.low, interval.high) == pytest.approx((0.7, 0.9), abs=1e-15)
