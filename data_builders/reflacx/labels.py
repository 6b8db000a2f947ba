"""REFLACX's labels in one vocabulary, and the stated mapping to EGD's three classes.

REFLACX has two label vocabularies (phase 1; phases 2-3). :data:`FINDINGS` are the phase 2-3
findings that carry a 0-5 certainty (``Other`` and ``Support devices`` are not certainties);
a phase 1 reading is put into it by the crosswalk of the dataset's authors
(``../shared/specs/reflacx-format.md`` §4): a finding takes the maximum certainty of the phase 1
labels that map to it, and the two findings phase 1 did not ask about are unknown (-1).

REFLACX has no Normal / CHF / pneumonia labels. This module's mapping, so that every method
trains on REFLACX with EGD's three-class head, uses the official positive threshold
(certainty >= 3, "Possibly" or higher):

- ``CHF``: ``Enlarged cardiac silhouette`` or ``Pulmonary edema`` >= 3 and not
  ``Consolidation`` >= 3;
- ``pneumonia``: ``Consolidation`` >= 3 and neither CHF finding >= 3;
- ``Normal``: no finding >= 3;
- ``other``: anything else (a CHF and a pneumonia finding, or only other findings).

An image takes its readings' most common class; a tie between classes is ``other``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

from data_builders.reflacx import reflacx_format as fmt

FINDINGS = tuple(n for n in fmt.PHASE_2_3_LABELS if n not in ('Other', 'Support devices'))
PHASE_1_CROSSWALK = {
  'Atelectasis': 'Atelectasis',
  'Consolidation': 'Consolidation',
  'Emphysema': 'High lung volume / emphysema',
  'Enlarged cardiac silhouette': 'Enlarged cardiac silhouette',
  'Fibrosis': 'Interstitial lung disease',
  'Fracture': 'Acute fracture',
  'Groundglass opacity': 'Groundglass opacity',
  'Mass': 'Lung nodule or mass',
  'Nodule': 'Lung nodule or mass',
  'Pleural effusion': 'Pleural abnormality',
  'Pleural thickening': 'Pleural abnormality',
  'Pneumothorax': 'Pneumothorax',
  'Pulmonary edema': 'Pulmonary edema',
  'Wide mediastinum': 'Abnormal mediastinal contour',
}  # phase 1 only, no counterpart: Airway wall thickening, Quality issue
CLASS_NAMES = ('Normal', 'CHF', 'pneumonia', 'other')
NORMAL, CHF, PNEUMONIA, OTHER = range(4)
POSITIVE = 3  # the official "Possibly or higher"


def finding_names(phase: int) -> dict[str, str]:
  """Label column of ``phase`` -> the finding of :data:`FINDINGS` it counts towards."""
  if fmt.phase_labels(phase) is fmt.PHASE_1_LABELS:
    return dict(PHASE_1_CROSSWALK)
  return {n: n for n in FINDINGS}


def certainties(labels: Mapping[str, object], phase: int) -> np.ndarray:
  """int8 ``(len(FINDINGS),)``: each finding's certainty 0-5 in one reading (its metadata
  ``labels``), -1 where the reading's phase did not ask about it."""
  out = np.full(len(FINDINGS), -1, np.int8)
  for column, finding in finding_names(phase).items():
    k = FINDINGS.index(finding)
    out[k] = max(int(out[k]), int(labels[column]))
  return out


def phase_vector(labels: Mapping[str, object], phase: int, vocabulary: Sequence[str]) -> np.ndarray:
  """int8 over ``vocabulary`` (a phase's label columns): certainties as they are, Booleans as
  0/1, ``Other`` as 1 when it names anything; -1 for every column if ``phase`` uses another
  vocabulary."""
  if tuple(vocabulary) != fmt.phase_labels(phase):
    return np.full(len(vocabulary), -1, np.int8)
  return np.asarray(
    [bool(labels[n]) if n == 'Other' else int(labels[n]) for n in vocabulary], np.int8
  )


def egd_class(certainty: np.ndarray) -> int:
  """The EGD class of one reading's :func:`certainties` (module docstring)."""
  positive = {n for n, c in zip(FINDINGS, certainty) if c >= POSITIVE}
  chf = bool(positive & {'Enlarged cardiac silhouette', 'Pulmonary edema'})
  pneumonia = 'Consolidation' in positive
  if chf and not pneumonia:
    return CHF
  if pneumonia and not chf:
    return PNEUMONIA
  return NORMAL if not positive else OTHER


def image_class(reading_classes: Sequence[int]) -> int:
  """The most common class of an image's readings; ``other`` on a tie or with none."""
  counts = collections.Counter(reading_classes).most_common()
  if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
    return OTHER
  return counts[0][0]
