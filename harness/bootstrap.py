"""Bootstrap confidence intervals over images, vectorised.

Resamples are drawn as multinomial counts (how often each image appears in a resample), in
chunks, so memory stays at ``chunk x n`` whatever the number of resamples. Intervals are the
percentile intervals of the resampled statistic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_RESAMPLES = 4000
DEFAULT_LEVEL = 0.95
_CHUNK = 256


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    estimate: float
    low: float
    high: float

    def format(self, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
        """See :func:`format_interval`."""
        return format_interval(self, scale, digits, signed)


def format_interval(interval: Interval, scale: float = 1.0, digits: int = 3, signed: bool = False,
                    estimate: bool = True, label: str = "") -> str:
    """How every table and line of the harness prints an interval: ``0.812 [0.790, 0.833]``.

    Parameters
    ----------
    scale : float
        Multiplies the three numbers (100 for points or percent).
    digits : int
        Decimals of each number.
    signed : bool
        A ``+`` before a positive estimate (differences).
    estimate : bool
        ``False``: the brackets alone (``[0.790, 0.833]``), for a cell whose estimate is
        written separately (e.g. in bold).
    label : str
        Written between the estimate and the brackets (``+1.2 IoU [0.8, 1.6]``).
    """
    lo, hi = interval.low * scale, interval.high * scale
    brackets = f"[{lo:.{digits}f}, {hi:.{digits}f}]"
    if not estimate:
        return brackets
    text = f"{interval.estimate * scale:{'+' if signed else ''}.{digits}f}"
    return f"{text} {label} {brackets}" if label else f"{text} {brackets}"


def resample_counts(n: int, resamples: int, seed: int):
    """Yield ``(chunk, n)`` float arrays of multinomial counts, ``resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        rows = min(_CHUNK, resamples - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=rows).astype(np.float64)
        done += rows


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    estimate: float,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile interval of ``statistic(counts)``, which maps ``(chunk, n)`` counts to ``(chunk,)``."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    values = np.concatenate([statistic(counts) for counts in resample_counts(n, resamples, seed)])
    values = values[np.isfinite(values)]
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high))


def mean_interval(values: np.ndarray, **kw) -> Interval:
    """Interval of the mean of per-image values; NaN entries (e.g. IoU of an empty union) are left out."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0)

    def statistic(counts: np.ndarray) -> np.ndarray:
        weight = counts @ valid
        return np.divide(counts @ filled, weight, out=np.full(len(counts), np.nan), where=weight > 0)

    estimate = float(filled[valid].mean()) if valid.any() else float("nan")
    return bootstrap(statistic, len(values), estimate, **kw)


def max_mean_curve_interval(curves: np.ndarray, **kw) -> Interval:
    """Interval of ``max_t mean_images curve[i, t]`` (dataset-level max F-beta).

    Parameters
    ----------
    curves : np.ndarray
        ``(n_images, n_thresholds)`` per-image F at every threshold.
    """
    curves = np.asarray(curves, dtype=np.float64)
    n = len(curves)

    def statistic(counts: np.ndarray) -> np.ndarray:
        return (counts @ curves).max(axis=1) / n

    estimate = float(curves.mean(axis=0).max()) if n else float("nan")
    return bootstrap(statistic, n, estimate, **kw)


def paired_difference_interval(a: np.ndarray, b: np.ndarray, **kw) -> Interval:
    """Interval of ``mean(a) - mean(b)`` over the same images, resampled together.

    Images where either value is NaN are left out of both means.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same images: {a.shape} vs {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    return mean_interval(np.where(valid, a - b, np.nan), **kw)


def paired_max_curve_difference(curves_a: np.ndarray, curves_b: np.ndarray, **kw) -> Interval:
    """Interval of the difference of dataset-level max F between two runs on the same images."""
    curves_a, curves_b = np.asarray(curves_a, np.float64), np.asarray(curves_b, np.float64)
    n = len(curves_a)

    def statistic(counts: np.ndarray) -> np.ndarray:
        return ((counts @ curves_a).max(axis=1) - (counts @ curves_b).max(axis=1)) / n

    estimate = float(curves_a.mean(0).max() - curves_b.mean(0).max()) if n else float("nan")
    return bootstrap(statistic, n, estimate, **kw)
