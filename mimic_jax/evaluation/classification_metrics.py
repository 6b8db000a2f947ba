"""Classification metrics of a 3-class (Normal / CHF / pneumonia) prediction, float64 NumPy.

``scores`` are ``(N, K)`` class scores (probabilities or log-probabilities: only their order
matters for AUC), ``labels`` ``(N,)`` ints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(scores, axis=1) == labels))


def roc_auc_ovr(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """``(K,)`` one-vs-rest ROC AUC per class (Mann-Whitney U with average ranks for ties;
  NaN for a class without positives or negatives)."""
  out = []
  for k in range(scores.shape[1]):
    pos = labels == k
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
      out.append(np.nan)
      continue
    ranks = stats.rankdata(scores[:, k])
    out.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
  return np.asarray(out, np.float64)


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """``(K, K)`` counts, rows = true class, columns = predicted class."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, np.argmax(scores, axis=1)), 1)
  return cm


def macro_f1(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Unweighted mean over classes of F1 (a class never predicted nor present scores 0)."""
  cm = confusion_matrix(scores, labels, num_classes)
  tp = np.diag(cm).astype(np.float64)
  denom = cm.sum(0) + cm.sum(1)
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
  return float(f1.mean())


def summary(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
  """All of the above as a JSON-ready dict."""
  k = len(class_names)
  auc = roc_auc_ovr(scores, labels)
  return {
    'accuracy': accuracy(scores, labels),
    'auc': {name: float(a) for name, a in zip(class_names, auc)},
    'mean_auc': float(np.nanmean(auc)),
    'macro_f1': macro_f1(scores, labels, k),
    'confusion_matrix': confusion_matrix(scores, labels, k).tolist(),
  }
