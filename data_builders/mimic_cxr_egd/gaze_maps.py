"""Static gaze heatmaps and fixation maps in the official EGD form, computed fast.

The official EGD static heatmap (``create_heatmap_images_and_or_videos.py``) puts +1 at
``(Y_ORIGINAL, X_ORIGINAL)`` for each fixation on the original H x W pixel grid and runs
``scipy.ndimage.gaussian_filter(record, sigma=150)`` (mode ``'reflect'``, truncate 4) over the
whole grid: about a second or more per 3000 x 2500 image. We want the same map resized to S x S
by area averaging and normalised to sum 1.

Both the Gaussian filter and area resizing are linear and separable, so for fixations
``(y_i, x_i)``::

    resize(filter(sum_i delta(y_i, x_i))) = sum_i (A_H g_H(y_i)) (A_W g_W(x_i))^T

where ``g_H(y)`` is the length-H 1-D reflect-mode Gaussian response to a delta at ``y`` and
``A_H`` is the S x H area-resize matrix. This is exact (up to float rounding) and costs
O(n_fixations * (H + W) * kernel) instead of O(H * W * kernel).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def area_resize_matrix(src: int, dst: int) -> np.ndarray:
  """Returns the ``(dst, src)`` float64 matrix of 1-D area (box) resizing.

  Output pixel ``j`` covers source interval ``[j * src / dst, (j + 1) * src / dst)``; each
  source pixel contributes its overlap with that interval, and rows sum to 1. This is what
  PIL's ``Image.BOX`` and OpenCV's ``INTER_AREA`` compute along one axis.
  """
  scale = src / dst
  edges = np.arange(dst + 1, dtype=np.float64) * scale
  lo, hi = edges[:-1, None], edges[1:, None]
  pix = np.arange(src, dtype=np.float64)[None, :]
  overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
  return overlap / overlap.sum(axis=1, keepdims=True)


def _filtered_deltas(positions: np.ndarray, length: int, sigma: float) -> np.ndarray:
  """Returns ``(length, n)``: column i is the 1-D Gaussian filter of a delta at positions[i]."""
  deltas = np.zeros((length, len(positions)), dtype=np.float64)
  deltas[positions, np.arange(len(positions))] = 1.0
  return ndimage.gaussian_filter1d(deltas, sigma, axis=0, mode='reflect', truncate=4.0)


def in_image_mask(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
  """True for fixations on the image grid: ``0 <= x < width`` and ``0 <= y < height``."""
  x = np.asarray(x)
  y = np.asarray(y)
  return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def static_heatmap(
  x: np.ndarray, y: np.ndarray, original_size: tuple[int, int], out_size: int, sigma: float = 150.0
) -> np.ndarray:
  """Official EGD static heatmap, area-resized to ``out_size x out_size``, summing to 1.

  Args:
    x: int column indices (``X_ORIGINAL``) of in-image fixations, original pixels.
    y: int row indices (``Y_ORIGINAL``), original pixels, same length as ``x``.
    original_size: ``(H, W)`` of the original image, pixels.
    out_size: S, the side of the output grid.
    sigma: Gaussian sigma in original pixels (official: 150).

  Returns:
    float32 ``(S, S)`` map summing to 1; all zeros if there are no fixations.
  """
  height, width = original_size
  x = np.asarray(x, dtype=np.int64)
  y = np.asarray(y, dtype=np.int64)
  if not np.all(in_image_mask(x, y, height, width)):
    raise ValueError('static_heatmap takes in-image fixations only; filter with in_image_mask')
  if x.size == 0:
    return np.zeros((out_size, out_size), np.float32)
  rows = area_resize_matrix(height, out_size) @ _filtered_deltas(y, height, sigma)  # (S, n)
  cols = area_resize_matrix(width, out_size) @ _filtered_deltas(x, width, sigma)  # (S, n)
  heat = rows @ cols.T
  return (heat / heat.sum()).astype(np.float32)


def reference_static_heatmap(
  x: np.ndarray, y: np.ndarray, original_size: tuple[int, int], out_size: int, sigma: float = 150.0
) -> np.ndarray:
  """The slow reference: full-resolution ``gaussian_filter``, area resize, sum to 1.

  Used by tests and benchmarks only (seconds per full-size image).
  """
  height, width = original_size
  record = np.zeros((height, width), np.float64)
  np.add.at(record, (np.asarray(y), np.asarray(x)), 1.0)
  full = ndimage.gaussian_filter(record, sigma)
  heat = _integral_area_resize(_integral_area_resize(full, out_size, 0), out_size, 1)
  return (heat / heat.sum()).astype(np.float32)


def _integral_area_resize(img: np.ndarray, dst: int, axis: int) -> np.ndarray:
  """Area resize along ``axis`` by integrating the piecewise-constant image exactly.

  An independent formulation (cumulative sums read at fractional edges) of what
  :func:`area_resize_matrix` computes, for the reference.
  """
  src = img.shape[axis]
  cum = np.concatenate([np.zeros_like(np.take(img, [0], axis)), np.cumsum(img, axis)], axis)
  edges = np.arange(dst + 1) * src / dst
  lo = np.floor(edges).astype(int)
  frac = edges - lo
  hi = np.minimum(lo + 1, src)
  at_edges = np.take(cum, lo, axis) * np.expand_dims(1 - frac, 1 - axis) + np.take(
    cum, hi, axis
  ) * np.expand_dims(frac, 1 - axis)
  return np.diff(at_edges, axis=axis) * dst / src


def fixation_map(
  x: np.ndarray, y: np.ndarray, original_size: tuple[int, int], out_size: int
) -> np.ndarray:
  """uint8 ``(S, S)`` binary map: 1 at the output pixel holding each in-image fixation."""
  height, width = original_size
  out = np.zeros((out_size, out_size), np.uint8)
  rows = np.minimum((np.asarray(y, np.float64) * out_size / height).astype(np.int64), out_size - 1)
  cols = np.minimum((np.asarray(x, np.float64) * out_size / width).astype(np.int64), out_size - 1)
  out[rows, cols] = 1
  return out
