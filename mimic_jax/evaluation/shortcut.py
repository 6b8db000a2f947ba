"""The synthetic data's known answer: how much a model relies on the shortcut corner marker.

Every synthetic image carries a bright marker in one of three corners (``anatomy.CORNERS``, one
per class); in training and validation it sits in the class's corner 80% of the time, in test
in a random corner, and in the decoy twin of the test split always in a wrong class's corner.
A model that learned the marker loses accuracy on the decoy split (shortcut reliance: test
accuracy minus decoy accuracy, 0 for a model that ignores it; per image, the share of
predictions the move flips and the paired drop in the true class's probability), and its
explanation maps put mass on the marker's corner. ``synthetic_truth.csv`` beside the generated
tree says where each image's marker is. Real data has no marker: none of this applies to it.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import os

import numpy as np

from data_builders.synthetic_egd import anatomy

# The corner of a marker: its rectangle and a margin of this much (image fractions) around it.
MARGIN = 0.02


def marker_corners(manual_dir: str | os.PathLike, dicom_ids: Sequence[str]) -> np.ndarray:
  """``(N,)`` int: the corner index of each image's marker (``-1``: none), from the
  ``synthetic_truth.csv`` of the generated tree in ``manual_dir``."""
  path = os.path.join(manual_dir, 'synthetic_truth.csv')
  with open(path, newline='') as f:
    truth = {row['dicom_id']: row['marker_corner'] for row in csv.DictReader(f)}
  missing = [d for d in dicom_ids if d not in truth]
  if missing:
    raise KeyError(f'{path} has no row for {len(missing)} evaluated image(s), e.g. {missing[0]}')
  return np.asarray([int(truth[d]) if truth[d] != '' else -1 for d in dicom_ids])


def corner_mask(size: int, corner: int) -> np.ndarray:
  """``(size, size)`` bool: the pixels of ``corner``'s marker rectangle and its margin (pixel
  centres inside)."""
  u = (np.arange(size) + 0.5) / size
  (cu, cv), (hu, hv) = anatomy.CORNERS[corner], anatomy.MARKER_HALF_SIDES
  cols = np.abs(u - cu) <= hu + MARGIN
  rows = np.abs(u - cv) <= hv + MARGIN
  return rows[:, None] & cols[None, :]


def corner_mass(maps: np.ndarray, corners: np.ndarray) -> np.ndarray:
  """``(N,)`` the fraction of each non-negative map's mass in its image's marker corner
  (NaN for an image without a marker or an all-zero map). ``maps``: ``(N, S, S)``."""
  out = np.full(len(maps), np.nan)
  for i, (m, c) in enumerate(zip(maps, corners)):
    total = float(np.sum(m, dtype=np.float64))
    if c >= 0 and total > 0:
      out[i] = float(np.sum(m[corner_mask(m.shape[0], c)], dtype=np.float64)) / total
  return out


def prediction_changes(
  test_scores: np.ndarray, decoy_scores: np.ndarray, labels: np.ndarray
) -> dict[str, list[float]]:
  """Per image, what moving its marker to a wrong class's corner did to the prediction.

  Args:
    test_scores: ``(N, K)`` ensemble log-scores on the test images (softmax: probabilities).
    decoy_scores: ``(N, K)`` the same on their decoy twins, in the same order.
    labels: ``(N,)`` the true classes.

  Returns:
    ``flipped``: 1.0 where the predicted class changed, else 0.0; ``probability_drop``: the
    true class's probability on the test image minus on its decoy (positive: the marker
    pulled the model away from the truth).
  """
  from scipy import special

  p_test = special.softmax(np.asarray(test_scores, np.float64), axis=-1)
  p_decoy = special.softmax(np.asarray(decoy_scores, np.float64), axis=-1)
  rows = np.arange(len(labels))
  flipped = np.argmax(p_test, -1) != np.argmax(p_decoy, -1)
  drop = p_test[rows, labels] - p_decoy[rows, labels]
  return {'flipped': flipped.astype(np.float64).tolist(), 'probability_drop': drop.tolist()}
