"""Explanation consistency across the sub-models of an ensemble.

``maps``: ``(M, N, H, W)`` non-negative explanation maps of M sub-models for N images.
"""

from __future__ import annotations

import itertools

import numpy as np


def mean_pairwise_correlation(maps: np.ndarray) -> float:
  """Mean over images and over the M (M - 1) / 2 sub-model pairs of the Pearson correlation
  of their maps (pairs with a constant map are skipped)."""
  m = maps.shape[0]
  values = []
  for i, j in itertools.combinations(range(m), 2):
    for a, b in zip(maps[i], maps[j]):
      a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
      if a.std() > 0 and b.std() > 0:
        values.append(np.corrcoef(a, b)[0, 1])
  return float(np.mean(values)) if values else float('nan')


def cv_consistency(maps: np.ndarray) -> float:
  """The EHR-paper measure (Watson et al., Sci. Rep. 2022): ``100 - 100 * mean CV``, where the
  coefficient of variation ``std / mean`` (population std) is taken across sub-models for each
  pixel of each image with a non-zero mean; 100 means identical maps."""
  x = maps.astype(np.float64)
  mean = x.mean(axis=0)
  std = x.std(axis=0)
  ok = mean > 0
  return float(100.0 - 100.0 * np.mean(std[ok] / mean[ok]))
