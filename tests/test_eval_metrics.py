"""Classification metrics, explanation consistency and bootstrap intervals."""

import itertools

import numpy as np
import pytest

from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import classification_metrics as cm
from mimic_jax.evaluation import consistency


def _pairwise_auc(scores, positive):
  """AUC as the share of (positive, negative) pairs ranked right, ties counting 1/2."""
  pos, neg = scores[positive], scores[~positive]
  wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


def test_classification_metrics_against_hand_computation():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  scores = rng.random((60, 3)) + 0.8 * np.eye(3)[labels]
  scores[:5, 0] = 0.5  # ties
  auc = cm.roc_auc_ovr(scores, labels)
  for k in range(3):
    assert auc[k] == pytest.approx(_pairwise_auc(scores[:, k], labels == k), abs=1e-12)
  pred = scores.argmax(1)
  assert cm.accuracy(scores, labels) == pytest.approx(np.mean(pred == labels))
  conf = cm.confusion_matrix(scores, labels, 3)
  assert conf.sum() == 60
  for t in range(3):
    for p in range(3):
      assert conf[t, p] == np.sum((labels == t) & (pred == p))
  f1s = []
  for k in range(3):
    tp = np.sum((pred == k) & (labels == k))
    prec = tp / max(np.sum(pred == k), 1)
    rec = tp / max(np.sum(labels == k), 1)
    f1s.append(0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
  assert cm.macro_f1(scores, labels, 3) == pytest.approx(np.mean(f1s), abs=1e-12)
  s = cm.summary(scores, labels, ['Normal', 'CHF', 'pneumonia'])
  assert s['mean_auc'] == pytest.approx(np.mean(auc))


def test_auc_of_a_class_without_negatives_is_nan():
  assert np.isnan(cm.roc_auc_ovr(np.eye(3)[[0, 0]], np.array([0, 0]))[0])


def test_consistency_measures():
  rng = np.random.default_rng(1)
  base = rng.random((4, 8, 8)) + 0.1
  same = np.stack([base, base, base])
  assert consistency.mean_pairwise_correlation(same) == pytest.approx(1.0)
  assert consistency.cv_consistency(same) == pytest.approx(100.0)
  two = np.stack([base, 3 * base])  # per pixel: mean 2b, population std b -> CV 1/2
  assert consistency.cv_consistency(two) == pytest.approx(50.0)
  assert consistency.mean_pairwise_correlation(two) == pytest.approx(1.0)
  noisy = np.stack([base, rng.random((4, 8, 8))])
  ref = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(*noisy)])
  assert consistency.mean_pairwise_correlation(noisy) == pytest.approx(ref, abs=1e-12)


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_n():
  rng = np.random.default_rng(2)
  small = rng.normal(1.0, 1.0, 30)
  large = rng.normal(1.0, 1.0, 3000)
  m, lo, hi = bootstrap.mean_ci(small)
  assert m == pytest.approx(small.mean()) and lo < m < hi
  # The percentile interval matches the normal approximation of the standard error.
  se = small.std(ddof=1) / np.sqrt(30)
  assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
  _, lo2, hi2 = bootstrap.mean_ci(large)
  assert hi2 - lo2 < (hi - lo) / 5
  assert np.isnan(bootstrap.mean_ci([np.nan])[0])
  base = rng.random(50) + 1
  c, clo, chi = bootstrap.paired_relative_change_ci(base, base * 0.5)
  assert c == pytest.approx(-0.5) and clo == pytest.approx(-0.5) and chi == pytest.approx(-0.5)
