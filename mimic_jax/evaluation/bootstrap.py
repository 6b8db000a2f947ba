"""Confidence intervals: bootstrap over images (percentile method) within one run, and Student's
t over runs (seeds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def mean_ci(
  values: Sequence[float] | np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
  """``(mean, low, high)`` of the mean of ``values`` (NaNs dropped)."""
  v = np.asarray(values, np.float64)
  v = v[~np.isnan(v)]
  if v.size == 0:
    return float('nan'), float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, v.size, (n_resamples, v.size))].mean(axis=1)
  lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
  return float(v.mean()), float(lo), float(hi)


def paired_relative_change_ci(
  base: Sequence[float] | np.ndarray,
  other: Sequence[float] | np.ndarray,
  n_resamples: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, float]:
  """``(change, low, high)`` of ``mean(other) / mean(base) - 1`` resampling the same images
  for both (pairs with a NaN in either are dropped)."""
  b, o = np.asarray(base, np.float64), np.asarray(other, np.float64)
  ok = ~(np.isnan(b) | np.isnan(o))
  b, o = b[ok], o[ok]
  if b.size == 0:
    return float('nan'), float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, b.size, (n_resamples, b.size))
  changes = o[idx].mean(axis=1) / b[idx].mean(axis=1) - 1
  lo, hi = np.quantile(changes, [(1 - level) / 2, (1 + level) / 2])
  return float(o.mean() / b.mean() - 1), float(lo), float(hi)


def _unpaired(
  base: Sequence[float] | np.ndarray,
  other: Sequence[float] | np.ndarray,
  combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
  n_resamples: int,
  level: float,
  seed: int,
) -> tuple[float, float, float]:
  """``combine(mean(other), mean(base))`` with its interval, resampling each set on its own."""
  b, o = (np.asarray(v, np.float64) for v in (base, other))
  b, o = b[~np.isnan(b)], o[~np.isnan(o)]
  if b.size == 0 or o.size == 0:
    return float('nan'), float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  bm = b[rng.integers(0, b.size, (n_resamples, b.size))].mean(axis=1)
  om = o[rng.integers(0, o.size, (n_resamples, o.size))].mean(axis=1)
  lo, hi = np.quantile(combine(om, bm), [(1 - level) / 2, (1 + level) / 2])
  return float(combine(o.mean(), b.mean())), float(lo), float(hi)


def unpaired_relative_change_ci(
  base: Sequence[float] | np.ndarray,
  other: Sequence[float] | np.ndarray,
  n_resamples: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, float]:
  """``(change, low, high)`` of ``mean(other) / mean(base) - 1`` resampling each set of images
  on its own (for results on different images; NaNs dropped)."""
  return _unpaired(base, other, lambda o, b: o / b - 1, n_resamples, level, seed)


def t_interval(
  values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
  """``(mean, low, high)``: the mean of ``values`` (one per run, e.g. per seed; NaNs dropped)
  with Student's t interval; the interval is NaN with fewer than two values."""
  v = np.asarray(values, np.float64)
  v = v[~np.isnan(v)]
  if v.size == 0:
    return float('nan'), float('nan'), float('nan')
  mean = float(v.mean())
  if v.size < 2:
    return mean, float('nan'), float('nan')
  half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
  return mean, mean - half, mean + half


def paired_difference_ci(
  base: Sequence[float] | np.ndarray,
  other: Sequence[float] | np.ndarray,
  n_resamples: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, float]:
  """``(difference, low, high)`` of ``mean(other) - mean(base)`` resampling the same images
  for both (pairs with a NaN in either are dropped): for metrics whose ratio means nothing,
  such as information gain, which is 0 at the prior and changes sign."""
  b, o = np.asarray(base, np.float64), np.asarray(other, np.float64)
  ok = ~(np.isnan(b) | np.isnan(o))
  d = o[ok] - b[ok]
  return mean_ci(d, n_resamples, level, seed)


def unpaired_difference_ci(
  base: Sequence[float] | np.ndarray,
  other: Sequence[float] | np.ndarray,
  n_resamples: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, float]:
  """``(difference, low, high)`` of ``mean(other) - mean(base)`` resampling each set of images
  on its own (NaNs dropped)."""
  return _unpaired(base, other, lambda o, b: o - b, n_resamples, level, seed)
