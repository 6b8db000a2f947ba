"""Saliency-map metrics of the MIT saliency benchmark (Bylinskii et al., TPAMI 2018).

Float64 NumPy implementations following the benchmark's MATLAB code
(``cvzoya/saliency/code_forMetrics``), one function per metric. :func:`kld` also takes
``jax.numpy`` arrays of any batch shape (``xp=jax.numpy``): the ``gaze`` method's training loss
is this same function.

Conventions:
- ``saliency`` is the model map, ``gaze`` the continuous gaze density, ``fixation_map`` the
  binary map of fixated pixels (a non-zero pixel counts once), ``baseline`` a baseline map.
- A saliency map of another size is first resized to the gaze grid (bilinear, pixel-centre
  aligned, edges clamped; MIT uses MATLAB's bicubic ``imresize``, which differs slightly).
- ``EPS`` is float64 machine epsilon, MATLAB's ``eps``.
- Degenerate input returns NaN as MIT does: a constant saliency map for NSS, CC, SIM, the AUCs
  and IG (0/0 in the z-score or min-max step), a constant gaze map for CC and SIM; no (or, for
  AUC-Borji and shuffled AUC, only one) fixated pixel for NSS, IG and the AUCs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import ndimage

EPS = np.finfo(np.float64).eps


def resize_to(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a 2-D map to ``shape`` (pixel centres aligned, edges clamped)."""
  saliency = np.asarray(saliency, np.float64)
  if saliency.shape == tuple(shape):
    return saliency
  zoom = (shape[0] / saliency.shape[0], shape[1] / saliency.shape[1])
  return ndimage.zoom(saliency, zoom, order=1, mode='nearest', grid_mode=True)


def _minmax(m: np.ndarray) -> np.ndarray:
  lo, hi = m.min(), m.max()
  with np.errstate(invalid='ignore', divide='ignore'):
    return (m - lo) / (hi - lo)  # NaN for a constant map, as MATLAB's 0/0


def _sum_normalise(m: Any, xp: Any):
  """``m`` divided by its sum over the last two axes; an all-zero map is left as it is."""
  total = m.sum(axis=(-2, -1), keepdims=True)
  return m / xp.where(total != 0, total, 1)


def kld(saliency: np.ndarray, gaze: np.ndarray, xp: Any = np) -> Any:
  """KL(gaze || saliency) in nats over the last two axes: ``sum G log(eps + G / (S + eps))`` on
  sum-normalised maps (an all-zero map is left as it is). Lower is better; 0 for identical
  maps. NumPy: 2-D maps in float64, the saliency map resized to the gaze grid like every
  metric here. ``xp=jax.numpy``: maps of the same shape ``(..., S, S)``, computed in their
  dtype, differentiable."""
  if xp is np:
    gaze = np.asarray(gaze, np.float64)
    saliency = resize_to(saliency, gaze.shape)
  s, g = _sum_normalise(saliency, xp), _sum_normalise(gaze, xp)
  value = xp.sum(g * xp.log(EPS + g / (s + EPS)), axis=(-2, -1))
  return float(value) if xp is np else value


def nss(saliency: np.ndarray, fixation_map: np.ndarray) -> float:
  """Normalised scanpath saliency: mean over fixated pixels (each once) of the saliency map
  z-scored with the N-1 standard deviation. 0 is chance; higher is better."""
  f = np.asarray(fixation_map) != 0
  s = resize_to(saliency, f.shape)
  if not f.any() or s.max() == s.min():  # exact test: round-off makes std of a constant > 0
    return float('nan')
  return float(((s - s.mean()) / s.std(ddof=1))[f].mean())


def cc(saliency: np.ndarray, gaze: np.ndarray) -> float:
  """Pearson correlation of the two maps (NaN if either is constant)."""
  g = np.asarray(gaze, np.float64)
  s = resize_to(saliency, g.shape)
  if s.max() == s.min() or g.max() == g.min():
    return float('nan')
  return float(np.mean((s - s.mean()) * (g - g.mean())) / (s.std() * g.std()))


def sim(saliency: np.ndarray, gaze: np.ndarray) -> float:
  """Similarity (histogram intersection) of the min-max-then-sum-normalised maps."""
  g = np.asarray(gaze, np.float64)
  s = resize_to(saliency, g.shape)
  maps = []
  for m in (s, g):
    if m.any():
      m = _minmax(m)
      m = m / m.sum()
    maps.append(m)
  return float(np.sum(np.minimum(*maps)))


def auc_judd(saliency: np.ndarray, fixation_map: np.ndarray) -> float:
  """AUC-Judd without jitter: thresholds at the fixated pixels' values, negatives the
  non-fixated pixels, trapezoid over (0, 0), ..., (1, 1)."""
  f = np.asarray(fixation_map).ravel() != 0
  s = _minmax(resize_to(saliency, np.shape(fixation_map))).ravel()
  if not f.any() or np.isnan(s).any():
    return float('nan')
  sth = np.sort(s[f])[::-1]
  n_fix, n_pix = sth.size, s.size
  s_sorted = np.sort(s)
  above = n_pix - np.searchsorted(s_sorted, sth, side='left')  # #{S >= t}
  k = np.arange(1, n_fix + 1)
  tp = np.concatenate([[0.0], k / n_fix, [1.0]])
  fp = np.concatenate([[0.0], (above - k) / (n_pix - n_fix), [1.0]])
  return float(np.trapezoid(tp, fp))


def _grid(top: float, step: float) -> np.ndarray:
  """MATLAB ``0:step:top`` (with its round-off tolerance), descending."""
  n = int(np.floor(top / step + 1e-10))
  return (np.arange(n + 1) * step)[::-1]


def _sampled_auc(sth: np.ndarray, negatives_per_split: Iterable[np.ndarray], step: float) -> float:
  scores = []
  for neg in negatives_per_split:
    th = _grid(max(sth.max(), neg.max()), step)
    tp = np.concatenate([[0.0], (sth[None, :] >= th[:, None]).mean(1), [1.0]])
    fp = np.concatenate([[0.0], (neg[None, :] >= th[:, None]).mean(1), [1.0]])
    scores.append(np.trapezoid(tp, fp))
  return float(np.mean(scores))


def auc_borji(
  saliency: np.ndarray,
  fixation_map: np.ndarray,
  n_splits: int = 100,
  step: float = 0.1,
  seed: int = 0,
) -> float:
  """AUC-Borji: per split, as many negatives as fixations drawn uniformly with replacement
  from all pixels; thresholds ``0:step:max``; mean over splits."""
  f = np.asarray(fixation_map).ravel() != 0
  s = _minmax(resize_to(saliency, np.shape(fixation_map))).ravel()
  if f.sum() <= 1 or np.isnan(s).any():
    return float('nan')
  sth = s[f]
  rng = np.random.default_rng(seed)
  negs = (s[rng.integers(0, s.size, sth.size)] for _ in range(n_splits))
  return _sampled_auc(sth, negs, step)


def auc_shuffled(
  saliency: np.ndarray,
  fixation_map: np.ndarray,
  other_fixation_map: np.ndarray,
  n_splits: int = 100,
  step: float = 0.1,
  seed: int = 0,
) -> float:
  """Shuffled AUC: negatives are pixels fixated in ``other_fixation_map`` (e.g. the union of
  other images' fixations), a random subset of ``min(n_fix, n_other)`` per split."""
  f = np.asarray(fixation_map).ravel() != 0
  other = np.asarray(other_fixation_map).ravel() != 0
  s = _minmax(resize_to(saliency, np.shape(fixation_map))).ravel()
  if f.sum() <= 1 or not other.any() or np.isnan(s).any():
    return float('nan')
  sth, s_other = s[f], s[other]
  k = min(sth.size, s_other.size)
  rng = np.random.default_rng(seed)
  negs = (s_other[rng.permutation(s_other.size)[:k]] for _ in range(n_splits))
  return _sampled_auc(sth, negs, step)


def information_gain(saliency: np.ndarray, fixation_map: np.ndarray, baseline: np.ndarray) -> float:
  """Information gain over ``baseline`` in bits per fixated pixel: both maps min-max then
  sum-normalised, ``mean log2(eps + S) - log2(eps + B)`` at the fixated pixels."""
  f = np.asarray(fixation_map) != 0
  s = _minmax(resize_to(saliency, f.shape))
  b = _minmax(resize_to(baseline, f.shape))
  if not f.any() or np.isnan(s).any() or np.isnan(b).any():
    return float('nan')
  s, b = s / s.sum(), b / b.sum()
  return float(np.mean(np.log2(EPS + s[f]) - np.log2(EPS + b[f])))


def sncc(saliency: np.ndarray, gaze: np.ndarray, prior: np.ndarray) -> float:
  """Shuffled NCC as the REFLACX saliency comparison defines it: ``cc(saliency, gaze) -
  cc(saliency, prior)``, how much better the map predicts this image's gaze than it matches the
  centre-bias ``prior``. 0 for a map no closer to the gaze than to the prior; NaN for a constant
  map."""
  return cc(saliency, gaze) - cc(saliency, prior)


def sauc(
  saliency: np.ndarray, gaze: np.ndarray, prior: np.ndarray, n: int = 1000, seed: int = 0
) -> float:
  """Shuffled AUC as the REFLACX saliency comparison computes it: ``n`` positive pixels drawn
  (with replacement) from the gaze density, ``n`` negatives from the ``prior`` density, and the
  area under the ROC curve of the saliency map's values there (ties count half). 0.5 for a map
  that separates this image's gaze no better than the prior's; NaN for an all-zero gaze or
  prior."""
  g = np.asarray(gaze, np.float64).ravel()
  b = resize_to(prior, np.shape(gaze)).ravel()
  s = resize_to(saliency, np.shape(gaze)).ravel()
  if g.sum() <= 0 or b.sum() <= 0:
    return float('nan')
  rng = np.random.default_rng(seed)
  positives = s[rng.choice(s.size, n, p=g / g.sum())]
  negatives = s[rng.choice(s.size, n, p=b / b.sum())]
  from scipy import stats

  ranks = stats.rankdata(np.concatenate([positives, negatives]))  # ties: average ranks
  return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * n))
