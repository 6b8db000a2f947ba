"""Bootstrap confidence intervals over images (percentile method)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
