"""REFLACX's abnormality ellipses as pixel masks (``../shared/specs/reflacx-format.md`` §2.5, §4).

Each row of ``anomaly_location_ellipses.csv`` is an axis-aligned ellipse inscribed in its box
``[xmin, ymin, xmax, ymax]`` (image pixels), with a certainty 1-5 and one True column per label
it marks. As the dataset's own analyses do, only ellipses of certainty > 2 (``Possibly`` or
higher) count as ground truth. A pixel ``(row, col)`` is inside when
``((col - cx) / a)^2 + ((row - cy) / b)^2 <= 1`` with the box's centre ``(cx, cy)`` and
half-sides ``a``, ``b`` (integer pixel coordinates, as the heatmap's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MIN_CERTAINTY = 3


def ellipse_mask(box: Sequence[float], width: int, height: int) -> np.ndarray:
  """``(height, width)`` bool: the pixels inside the ellipse inscribed in ``box``."""
  xmin, ymin, xmax, ymax = (float(v) for v in box)
  a, b = (xmax - xmin) / 2.0, (ymax - ymin) / 2.0
  if a <= 0 or b <= 0:
    return np.zeros((height, width), bool)
  rows, cols = np.mgrid[0:height, 0:width]
  return ((cols - (xmin + xmax) / 2.0) / a) ** 2 + ((rows - (ymin + ymax) / 2.0) / b) ** 2 <= 1.0


def label_masks(
  ellipses: Mapping[str, np.ndarray], labels: Sequence[str], width: int, height: int
) -> dict[str, np.ndarray]:
  """Per label of ``labels``, the union of the reading's ellipses of certainty > 2 that mark
  it (``ellipses``: the columns of ``reflacx_format.read_ellipses``)."""
  out = {name: np.zeros((height, width), bool) for name in labels}
  certainty = np.asarray(ellipses['certainty'])
  for i in np.flatnonzero(certainty >= MIN_CERTAINTY):
    box = [ellipses[k][i] for k in ('xmin', 'ymin', 'xmax', 'ymax')]
    mask = None
    for name in labels:
      if ellipses[name][i]:
        mask = ellipse_mask(box, width, height) if mask is None else mask
        out[name] |= mask
  return out


def ncc(a: np.ndarray, b: np.ndarray) -> float:
  """Normalised cross-correlation (Pearson) of two maps; NaN if either is constant."""
  x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if x.std() == 0 or y.std() == 0:
    return float('nan')
  return float(np.corrcoef(x, y)[0, 1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Intersection over union of two boolean masks; NaN if both are empty."""
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else float('nan')
