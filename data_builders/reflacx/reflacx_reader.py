"""Reads and validates a PhysioNet REFLACX + MIMIC-CXR(-JPG) tree into per-image records.

The validation pass reads every metadata row and every reading's files (ellipses, chest box,
fixations unless the reading's eye tracking was discarded) and looks for every image (its size
must equal the metadata's ``image_size_x``/``image_size_y``), collecting *every* problem with
its file, line and reading before anything is built. :func:`read_tree` then raises one
:class:`ReflacxValidationError` listing them all or, with ``skip_invalid_rows=True``, drops the
images concerned and reports their ids.
"""

from __future__ import annotations

import dataclasses
import os

from etils import epath
from PIL import Image

from data_builders.mimic_cxr_egd.egd_reader import Problem
from data_builders.mimic_cxr_egd.egd_reader import TreeValidationError
from data_builders.reflacx import heatmap as heatmap_lib
from data_builders.reflacx import reflacx_format as fmt

REFLACX_DIR = ('reflacx-xray-localization', '1.0.0')
JPG_DIR = ('mimic-cxr-jpg', '2.0.0')
DICOM_DIR = ('mimic-cxr', '2.0.0')
# MIMIC-CXR's split names -> TFDS split names.
SPLIT_NAMES = {'train': 'train', 'validate': 'validation', 'test': 'test'}


class ReflacxValidationError(TreeValidationError):
  """Every problem of a REFLACX + MIMIC-CXR(-JPG) tree."""

  TREE = 'REFLACX/MIMIC-CXR'


@dataclasses.dataclass
class Reading:
  """One reading (a metadata row) and its files."""

  id: str
  phase: int
  discarded: bool
  labels: dict
  folder: epath.Path  # main_data/<id>
  fixations: dict | None = None  # columns of fixations.csv; None when discarded
  ellipses: dict | None = None  # columns of anomaly_location_ellipses.csv
  chest_box: tuple[float, float, float, float] | None = None  # image pixels


@dataclasses.dataclass
class ImageRecord:
  """One MIMIC-CXR image and all its readings."""

  dicom_id: str
  study_id: int
  patient_id: int
  split: str  # train / validation / test
  width: int
  height: int
  image_path: epath.Path
  readings: list[Reading] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ReflacxTree:
  """What :func:`read_tree` found."""

  images: list[ImageRecord]
  skipped_ids: list[str]
  problems: list[Problem]
  image_format: str  # 'jpg' or 'dicom'
  discarded_readings: int = 0


def reflacx_root(manual_dir: str | os.PathLike) -> epath.Path:
  """``<manual_dir>/reflacx-xray-localization/1.0.0``; raises ``FileNotFoundError`` naming
  what is missing."""
  root = epath.Path(manual_dir).joinpath(*REFLACX_DIR)
  if not (root / 'main_data' / 'metadata_phase_1.csv').exists():
    raise FileNotFoundError(
      f'{root / "main_data" / "metadata_phase_1.csv"} does not exist: put the PhysioNet '
      'download of reflacx-xray-localization 1.0.0 (main_data/ and gaze_data/) there'
    )
  return root


def _image_path(manual_dir: epath.Path, image: str) -> tuple[epath.Path, str]:
  """(path, 'jpg' | 'dicom') of a metadata ``image`` (the DICOM path on PhysioNet): the
  MIMIC-CXR-JPG file when present, else the DICOM."""
  rel = image.split('/2.0.0/', 1)[-1]  # files/pXX/p<subject>/s<study>/<dicom_id>.dcm
  jpg = manual_dir.joinpath(*JPG_DIR) / (rel[: -len('.dcm')] + '.jpg')
  if jpg.exists():
    return jpg, 'jpg'
  return manual_dir.joinpath(*DICOM_DIR) / rel, 'dicom'


def _image_size(path: epath.Path) -> tuple[int, int]:
  """``(width, height)`` from the file's header."""
  if path.suffix.lower() == '.dcm':
    import pydicom

    with path.open('rb') as f:
      ds = pydicom.dcmread(f, stop_before_pixels=True)
    return int(ds.Columns), int(ds.Rows)
  with path.open('rb') as f:
    return Image.open(f).size


def _read_reading(reading: Reading, problems: list[Problem], dicom_id: str) -> None:
  """Reads a reading's files into it; each problem is appended, naming the file."""

  def note(path: epath.Path, message: str) -> None:
    problems.append(Problem(str(path), f'reading {reading.id}', message, dicom_id))

  if not reading.folder.is_dir():
    note(reading.folder, 'the reading folder is missing')
    return
  try:
    reading.ellipses = fmt.read_ellipses(
      reading.folder / 'anomaly_location_ellipses.csv', reading.phase
    )
  except (OSError, fmt.FormatError) as e:
    note(reading.folder / 'anomaly_location_ellipses.csv', str(e))
  try:
    box = fmt.read_csv(reading.folder / 'chest_bounding_box.csv', fmt.CHEST_BOX_COLUMNS)
    if len(box['xmin']) != 1:
      note(reading.folder / 'chest_bounding_box.csv', f'{len(box["xmin"])} rows, expected 1')
    else:
      reading.chest_box = tuple(float(box[c][0]) for c in fmt.CHEST_BOX_COLUMNS)
  except (OSError, fmt.FormatError) as e:
    note(reading.folder / 'chest_bounding_box.csv', str(e))
  if reading.discarded:
    return
  path = reading.folder / 'fixations.csv'
  try:
    reading.fixations = fmt.read_fixations(path)
  except FileNotFoundError:
    note(path, 'missing, and the reading is not marked eye_tracking_data_discarded')
    return
  except (OSError, fmt.FormatError) as e:
    note(path, str(e))
    return
  if not len(reading.fixations['x_position']):
    note(path, 'no fixations')


def read_tree(manual_dir: str | os.PathLike, skip_invalid_rows: bool = False) -> ReflacxTree:
  """Validates and reads the tree in ``manual_dir`` (module docstring)."""
  manual = epath.Path(manual_dir)
  main_data = reflacx_root(manual) / 'main_data'
  problems: list[Problem] = []
  images: dict[str, ImageRecord] = {}
  formats = set()
  discarded = 0
  for phase in (1, 2, 3):
    path = main_data / f'metadata_phase_{phase}.csv'
    try:
      rows = fmt.read_metadata(path, phase)
    except FileNotFoundError:
      raise FileNotFoundError(f'{path} is missing from the REFLACX download') from None
    for line, row in enumerate(rows, start=2):
      split = SPLIT_NAMES.get(row['split'])
      if split is None:
        problems.append(
          Problem(
            str(path),
            f'line {line}',
            f'split {row["split"]!r} is not one of {sorted(SPLIT_NAMES)}',
            row['dicom_id'],
          )
        )
        continue
      rec = images.get(row['dicom_id'])
      if rec is None:
        image_path, kind = _image_path(manual, row['image'])
        rec = ImageRecord(
          dicom_id=row['dicom_id'],
          study_id=row['study_id'],
          patient_id=row['subject_id'],
          split=split,
          width=row['image_size_x'],
          height=row['image_size_y'],
          image_path=image_path,
        )
        images[rec.dicom_id] = rec
        formats.add(kind)
      elif (rec.split, rec.width, rec.height) != (split, row['image_size_x'], row['image_size_y']):
        problems.append(
          Problem(
            str(path),
            f'line {line}',
            f'reading {row["id"]} gives image {rec.dicom_id} split/size '
            f'{(split, row["image_size_x"], row["image_size_y"])}, an earlier reading '
            f'{(rec.split, rec.width, rec.height)}',
            rec.dicom_id,
          )
        )
        continue
      reading = Reading(
        id=row['id'],
        phase=phase,
        discarded=row['eye_tracking_data_discarded'],
        labels=row['labels'],
        folder=main_data / row['id'],
      )
      discarded += reading.discarded
      _read_reading(reading, problems, rec.dicom_id)
      rec.readings.append(reading)
  for rec in images.values():
    if not rec.image_path.exists():
      problems.append(
        Problem(
          str(rec.image_path), 'image', 'missing (neither the JPG nor the DICOM)', rec.dicom_id
        )
      )
      continue
    try:
      size = _image_size(rec.image_path)
    except Exception as e:  # noqa: BLE001 - any decoder error names the file
      problems.append(Problem(str(rec.image_path), 'image', f'unreadable: {e}', rec.dicom_id))
      continue
    if size != (rec.width, rec.height):
      problems.append(
        Problem(
          str(rec.image_path),
          'image',
          f'is {size[0]} x {size[1]} pixels, the metadata says {rec.width} x {rec.height}',
          rec.dicom_id,
        )
      )
  for rec in images.values():
    for reading in rec.readings:
      if reading.fixations is not None:
        try:
          heatmap_lib.resized_heatmap(reading.fixations, rec.width, rec.height, 8)
        except ValueError as e:
          where = f'reading {reading.id}'
          path = str(reading.folder / 'fixations.csv')
          problems.append(Problem(path, where, str(e), rec.dicom_id))
  bad = {p.dicom_id for p in problems}
  if problems and (not skip_invalid_rows or None in bad):
    raise ReflacxValidationError(problems)
  kept = [rec for rec in images.values() if rec.dicom_id not in bad]
  return ReflacxTree(
    images=kept,
    skipped_ids=sorted(bad - {None}),
    problems=problems,
    image_format='dicom' if formats == {'dicom'} else 'jpg',
    discarded_readings=discarded,
  )
