"""The REFLACX files' columns and a strict reader of their CSVs
(``../shared/specs/reflacx-format.md`` §2).

Every CSV has a header row and CRLF line endings (pandas ``to_csv`` into a file opened with
``newline='\\r\\n'``); booleans are ``True``/``False``; an empty field is NaN. :func:`read_csv`
checks the header against the expected columns and names the file, line and column of any
value it cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import os

import numpy as np

FIXATION_COLUMNS = (
  'timestamp_start_fixation',
  'timestamp_end_fixation',
  'x_position',
  'y_position',
  'pupil_area_normalized',
  'angular_resolution_x_pixels_per_degree',
  'angular_resolution_y_pixels_per_degree',
  'window_width',
  'window_level',
  'xmin_shown_from_image',
  'ymin_shown_from_image',
  'xmax_shown_from_image',
  'ymax_shown_from_image',
  'xmin_in_screen_coordinates',
  'ymin_in_screen_coordinates',
  'xmax_in_screen_coordinates',
  'ymax_in_screen_coordinates',
)
CHEST_BOX_COLUMNS = ('xmin', 'ymin', 'xmax', 'ymax')
ELLIPSE_COORDINATES = ('xmin', 'ymin', 'xmax', 'ymax', 'certainty')
METADATA_FIXED = (
  'id',
  'split',
  'eye_tracking_data_discarded',
  'image',
  'dicom_id',
  'subject_id',
  'image_size_x',
  'image_size_y',
)
PHASE_1_LABELS = (
  'Airway wall thickening',
  'Atelectasis',
  'Consolidation',
  'Emphysema',
  'Enlarged cardiac silhouette',
  'Fibrosis',
  'Fracture',
  'Groundglass opacity',
  'Mass',
  'Nodule',
  'Other',
  'Pleural effusion',
  'Pleural thickening',
  'Pneumothorax',
  'Pulmonary edema',
  'Quality issue',
  'Support devices',
  'Wide mediastinum',
)
PHASE_2_3_LABELS = (
  'Abnormal mediastinal contour',
  'Acute fracture',
  'Atelectasis',
  'Consolidation',
  'Enlarged cardiac silhouette',
  'Enlarged hilum',
  'Groundglass opacity',
  'Hiatal hernia',
  'High lung volume / emphysema',
  'Interstitial lung disease',
  'Lung nodule or mass',
  'Other',
  'Pleural abnormality',
  'Pneumothorax',
  'Pulmonary edema',
  'Support devices',
)


def phase_labels(phase: int) -> tuple[str, ...]:
  """The label columns of a phase (1, 2 or 3), in the files' (sorted) order."""
  if phase not in (1, 2, 3):
    raise ValueError(f'REFLACX has phases 1, 2 and 3, not {phase!r}')
  return PHASE_1_LABELS if phase == 1 else PHASE_2_3_LABELS


class FormatError(ValueError):
  """A REFLACX file does not have the published format; the message names the file and line."""


def _value(text: str, path: str | os.PathLike, line: int, column: str) -> float:
  if text == '':
    return float('nan')
  if text in ('True', 'False'):
    return float(text == 'True')
  try:
    return float(text)
  except ValueError:
    raise FormatError(f'{path}, line {line}, column {column!r}: {text!r} is not a number') from None


def read_csv(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, np.ndarray]:
  """The numeric columns ``columns`` of the CSV at ``path`` as float64 arrays (a header-only
  file: empty arrays). The header must hold exactly ``columns``, in order."""
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows:
    raise FormatError(f'{path} is empty (expected the header {",".join(columns)})')
  header = [h.strip() for h in rows[0]]
  if header != list(columns):
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns]
    raise FormatError(
      f'{path}, line 1: the header differs from REFLACX 1.0.0 (missing {missing}, unexpected '
      f'{extra}{", order differs" if not missing and not extra else ""})'
    )
  out = {c: [] for c in columns}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != len(columns):
      raise FormatError(f'{path}, line {line}: {len(row)} fields, expected {len(columns)}')
    for c, text in zip(columns, row):
      out[c].append(_value(text.strip(), path, line, c))
  return {c: np.asarray(v, np.float64) for c, v in out.items()}


def read_fixations(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """``main_data/<id>/fixations.csv``."""
  return read_csv(path, FIXATION_COLUMNS)


def read_ellipses(path: str | os.PathLike, phase: int) -> dict[str, np.ndarray]:
  """``main_data/<id>/anomaly_location_ellipses.csv``: box, certainty and one 0/1 column per
  label of the phase (zero rows for a normal image)."""
  return read_csv(path, ELLIPSE_COORDINATES + phase_labels(phase))


# Label columns that hold a Boolean (selected without an ellipse) rather than a 0-5 certainty.
BOOLEAN_LABELS = ('Support devices', 'Quality issue')


def read_metadata(path: str | os.PathLike, phase: int) -> list[dict]:
  """The readings of ``main_data/metadata_phase_{phase}.csv``, one dict per row: ``id``,
  ``split``, ``dicom_id``, ``image`` (the MIMIC-CXR DICOM path) as text;
  ``eye_tracking_data_discarded`` a bool; ``subject_id``, ``study_id`` (from the image path),
  ``image_size_x``, ``image_size_y`` ints; ``labels``: each finding's certainty 0-5 (int),
  ``Support devices``/``Quality issue`` as bools, ``Other`` as text. Errors name the file,
  line and column."""
  labels = phase_labels(phase)
  columns = METADATA_FIXED + labels
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows or [h.strip() for h in rows[0]] != list(columns):
    got = [h.strip() for h in rows[0]] if rows else []
    raise FormatError(
      f'{path}, line 1: the header differs from REFLACX 1.0.0 phase {phase} (missing '
      f'{[c for c in columns if c not in got]}, unexpected {[c for c in got if c not in columns]})'
    )
  out = []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != len(columns):
      raise FormatError(f'{path}, line {line}: {len(row)} fields, expected {len(columns)}')
    rec = dict(zip(columns, (v.strip() for v in row)))

    def number(column: str, rec: dict = rec, line: int = line) -> int:
      value = _value(rec[column], path, line, column)
      if not np.isfinite(value) or value != int(value):
        raise FormatError(
          f'{path}, line {line}, column {column!r}: {rec[column]!r} is not an integer'
        )
      return int(value)

    if rec['eye_tracking_data_discarded'] not in ('True', 'False'):
      raise FormatError(
        f"{path}, line {line}, column 'eye_tracking_data_discarded': "
        f'{rec["eye_tracking_data_discarded"]!r} is not True or False'
      )
    parts = rec['image'].split('/')
    if len(parts) < 3 or not parts[-2].startswith('s') or not parts[-3].startswith('p'):
      raise FormatError(
        f"{path}, line {line}, column 'image': {rec['image']!r} is not a MIMIC-CXR path"
      )
    values = {}
    for name in labels:
      if name == 'Other':
        values[name] = rec[name]
      elif name in BOOLEAN_LABELS:
        values[name] = rec[name] == 'True'
      else:
        values[name] = number(name)
        if not 0 <= values[name] <= 5:
          raise FormatError(
            f'{path}, line {line}, column {name!r}: certainty {values[name]} not in 0-5'
          )
    out.append(
      {
        'id': rec['id'],
        'split': rec['split'],
        'eye_tracking_data_discarded': rec['eye_tracking_data_discarded'] == 'True',
        'image': rec['image'],
        'dicom_id': rec['dicom_id'],
        'subject_id': number('subject_id'),
        'study_id': int(parts[-2][1:]),
        'image_size_x': number('image_size_x'),
        'image_size_y': number('image_size_y'),
        'labels': values,
      }
    )
  return out


def readings_by_image(readings: Sequence[dict]) -> dict[str, list[dict]]:
  """The readings with eye tracking grouped by ``dicom_id`` (phases 1-2: up to five readers of
  one image; phase 3: one), in the order given."""
  groups: dict[str, list[dict]] = {}
  for r in readings:
    if not r['eye_tracking_data_discarded']:
      groups.setdefault(r['dicom_id'], []).append(r)
  return groups
