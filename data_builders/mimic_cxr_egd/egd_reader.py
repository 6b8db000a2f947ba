"""Reads and validates a PhysioNet EGD + MIMIC-CXR(-JPG) tree into per-image records.

The validation pass reads everything first and collects *every* problem (file, line and
record; an image that does not decode, or whose size disagrees with the ``Rows``/``Columns`` of
MIMIC-CXR-JPG's metadata) before anything is built; :func:`read_tree` then either raises one
:class:`EgdValidationError` listing them all, or, with ``skip_invalid_rows=True``, drops the
offending images and reports their ids.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
import csv
import dataclasses
import io
import logging
import random

from etils import epath

from data_builders.mimic_cxr_egd import egd_format as fmt

# The real master sheet has long quoted free text; the csv module's default limit is 128 KiB.
csv.field_size_limit(1 << 24)


@dataclasses.dataclass(frozen=True)
class Problem:
  """One bad-input finding: the file, where in it, and what is wrong."""

  file: str
  where: str
  message: str
  dicom_id: str | None = None

  def __str__(self) -> str:
    return f'{self.file} {self.where}: {self.message}'


class TreeValidationError(ValueError):
  """Raised with every problem found in a PhysioNet tree (``TREE`` names it), one per line."""

  TREE = 'PhysioNet'

  def __init__(self, problems: Sequence[Problem]):
    self.problems = list(problems)
    lines = '\n'.join(f'  - {p}' for p in self.problems)
    super().__init__(
      f'{len(self.problems)} problem(s) in the {self.TREE} tree:\n{lines}\n'
      'Fix the files, or build with skip_invalid_rows=True (build.py --skip_invalid_rows) to '
      'drop the affected images; their ids are then listed in the dataset metadata.'
    )


class EgdValidationError(TreeValidationError):
  """Every problem of an EGD + MIMIC-CXR(-JPG) tree."""

  TREE = 'EGD/MIMIC-CXR'


@dataclasses.dataclass
class Fixations:
  """Fixations of one image in file (temporal) order; pixels of the original image."""

  x: list[int] = dataclasses.field(default_factory=list)
  y: list[int] = dataclasses.field(default_factory=list)
  start_s: list[float] = dataclasses.field(default_factory=list)
  duration_s: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EgdRecord:
  """One master-sheet row joined with its fixations and image file."""

  dicom_id: str
  study_id: int
  patient_id: int
  label: int
  image_path: epath.Path
  record: int  # 1-based data record of master_sheet.csv
  line: int  # line of master_sheet.csv where the record starts
  fixations: Fixations = dataclasses.field(default_factory=Fixations)


@dataclasses.dataclass
class EgdTree:
  """What :func:`read_tree` found: records by split and the bookkeeping for metadata."""

  splits: dict[str, list[EgdRecord]]
  skipped_ids: list[str]
  problems: list[Problem]
  calibration_rows: int
  image_format: str  # 'jpg' or 'dicom'
  duplicate_fixations: int = 0  # rows repeating an earlier row, dropped (skip_invalid_rows)


def official_split(patient_ids: Iterable[int], seed: int = 42) -> dict[int, str]:
  """The official EGD patient split (``Experiments/utils/dataset.py::split_dataset``).

  Unique patient ids in order of first appearance are shuffled by Python's ``random`` seeded
  with ``seed``; the first ``round(0.8 n)`` are train, and the rest is halved by ``round``
  into validation and test (Python's ``round``: halves go to the even number).
  """
  pids = list(dict.fromkeys(patient_ids))
  random.seed(seed)
  random.shuffle(pids)
  n_train = round(0.8 * len(pids))
  rest = pids[n_train:]
  n_val = round(0.5 * len(rest))
  split = {pid: 'train' for pid in pids[:n_train]}
  split.update({pid: 'validation' for pid in rest[:n_val]})
  split.update({pid: 'test' for pid in rest[n_val:]})
  return split


def _check_header(
  name: str, header: Sequence[str], verbatim: Sequence[str], required: Sequence[str]
) -> list[Problem]:
  missing = [c for c in required if c not in header]
  if missing:
    return [
      Problem(
        name,
        'line 1',
        f'header lacks required column(s) {missing}; '
        f'expected the verbatim {len(verbatim)}-column PhysioNet header',
      )
    ]
  if list(header) != list(verbatim):
    extra = [c for c in header if c not in verbatim]
    absent = [c for c in verbatim if c not in header]
    logging.warning(
      '%s: header differs from the verbatim PhysioNet one (unexpected %s, '
      'absent %s, or reordered); reading the required columns by name.',
      name,
      extra,
      absent,
    )
  return []


def _parse_int(value: str) -> int:
  f = float(value)
  if f != int(f):
    raise ValueError(value)
  return int(f)


def _image_decodes(path: epath.Path, is_jpg: bool) -> tuple[str | None, tuple[int, int] | None]:
  """``(None, (width, height))`` if the whole image decodes, else ``(why not, None)`` (a
  truncated file is found here, before any work, not late in the build)."""
  if not path.exists():
    return 'image file not found', None
  try:
    if is_jpg:
      from PIL import Image

      # From memory, so that no error message carries the user's path.
      with Image.open(io.BytesIO(path.read_bytes())) as img:
        size = img.size
        img.draft('L', (256, 256))  # DCT-domain downscaling still reads every block
        img.load()
    else:
      import pydicom

      pixels = pydicom.dcmread(io.BytesIO(path.read_bytes())).pixel_array
      size = (pixels.shape[1], pixels.shape[0])
  except Exception as e:
    return f'image unreadable ({type(e).__name__}: {e})', None
  return None, size


def _wrong_length(
  row: Sequence[str], header: Sequence[str], name: str, line: int, problems: list[Problem]
) -> bool:
  """Adds a problem (and returns True) if ``row`` has another field count than ``header``."""
  if len(row) == len(header):
    return False
  problems.append(
    Problem(name, f'line {line}', f'has {len(row)} fields, the header has {len(header)}')
  )
  return True


@dataclasses.dataclass(frozen=True)
class _MetadataSize:
  """An image's size as ``mimic-cxr-2.0.0-metadata.csv`` gives it, and where."""

  rows: int  # height, pixels
  columns: int  # width, pixels
  line: int


def _read_metadata_sizes(
  image_root: epath.Path, problems: list[Problem]
) -> tuple[str | None, dict[str, _MetadataSize]]:
  """``(file name, {dicom_id: size})`` from MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-metadata.csv``
  (or ``.csv.gz``, as PhysioNet serves it) in ``image_root``; ``(None, {})`` without one.
  Rows that are not numbers are added to ``problems``."""
  for name in (fmt.METADATA_FILE, fmt.METADATA_FILE + '.gz'):
    path = image_root / name
    if path.exists():
      break
  else:
    return None, {}
  shown = f'{fmt.JPG_DIR}/{name}'
  if name.endswith('.gz'):
    import gzip

    text = gzip.decompress(path.read_bytes()).decode('utf-8-sig')
  else:
    text = path.read_text(encoding='utf-8-sig')
  reader = csv.reader(io.StringIO(text))
  header = next(reader, [])
  missing = [c for c in ('dicom_id', 'Rows', 'Columns') if c not in header]
  if missing:
    problems.append(Problem(shown, 'line 1', f'header lacks column(s) {missing}'))
    return shown, {}
  col = {c: i for i, c in enumerate(header)}
  sizes = {}
  for row in reader:
    line = reader.line_num
    if _wrong_length(row, header, shown, line, problems):
      continue
    try:
      rows, columns = _parse_int(row[col['Rows']]), _parse_int(row[col['Columns']])
    except ValueError:
      problems.append(
        Problem(
          shown,
          f'line {line}',
          f'Rows/Columns not integers: {row[col["Rows"]]!r}, {row[col["Columns"]]!r}',
          row[col['dicom_id']],
        )
      )
      continue
    sizes[row[col['dicom_id']]] = _MetadataSize(rows, columns, line)
  return shown, sizes


class _Utf8Lines:
  """The lines of a UTF-8 text file (a leading byte-order mark dropped), for ``csv.reader``;
  a byte that is not UTF-8 raises :class:`EgdValidationError` naming the file and line."""

  def __init__(self, path: epath.Path, name: str):
    self._path, self._name = path, name

  def __iter__(self):
    with self._path.open('rb') as f:
      for number, raw in enumerate(f, start=1):
        try:
          line = raw.decode('utf-8-sig' if number == 1 else 'utf-8')
        except UnicodeDecodeError as e:
          raise EgdValidationError(
            [
              Problem(
                self._name,
                f'line {number}',
                f'not UTF-8 text (byte {raw[e.start]:#04x} '
                f'at column {e.start + 1}): save the file as UTF-8',
              )
            ]
          ) from None
        yield line


def _image_root(manual_dir: epath.Path) -> tuple[epath.Path, bool]:
  jpg_root = manual_dir / fmt.JPG_DIR
  dicom_root = manual_dir / fmt.DICOM_DIR
  if jpg_root.exists():
    return jpg_root, True
  if dicom_root.exists():
    return dicom_root, False
  raise FileNotFoundError(
    f'Neither {jpg_root} (MIMIC-CXR-JPG) nor {dicom_root} (MIMIC-CXR DICOM) exists under '
    f'the manual_dir {manual_dir}.'
  )


def read_tree(
  manual_dir: str | epath.PathLike, skip_invalid_rows: bool = False, split_seed: int = 42
) -> EgdTree:
  """Reads, validates and splits an EGD tree laid out as on PhysioNet.

  Args:
    manual_dir: folder holding ``egd-cxr/1.0.0/`` and ``mimic-cxr-jpg/2.0.0/`` (or
      ``mimic-cxr/2.0.0/`` with DICOMs).
    skip_invalid_rows: drop images with problems instead of raising.
    split_seed: seed of the official patient split (the official experiments use 42).

  Returns:
    An :class:`EgdTree`. Calibration-screen fixations (39-character ids) are dropped and
    counted; off-image fixations are kept here and dropped once the image size is known.

  Raises:
    FileNotFoundError: a required file or folder is missing.
    EgdValidationError: any problem, listing every one (unless ``skip_invalid_rows``; problems
      that make the whole tree unusable, like a header without required columns, always raise).
  """
  manual_dir = epath.Path(manual_dir)
  egd = manual_dir / fmt.EGD_DIR
  master_file = egd / 'master_sheet.csv'
  fixations_file = egd / 'fixations.csv'
  for f in (master_file, fixations_file):
    if not f.exists():
      raise FileNotFoundError(
        f'{f} not found. The manual_dir must hold egd-cxr/1.0.0/ as downloaded from PhysioNet.'
      )
  image_root, is_jpg = _image_root(manual_dir)
  master_name = f'{fmt.EGD_DIR}/master_sheet.csv'
  fix_name = f'{fmt.EGD_DIR}/fixations.csv'

  problems: list[Problem] = []
  metadata_name, metadata_sizes = (
    _read_metadata_sizes(image_root, problems) if is_jpg else (None, {})
  )
  if is_jpg and metadata_name is None:
    logging.warning(
      "No %s/%s(.gz): the images' sizes cannot be checked against MIMIC-CXR's metadata.",
      fmt.JPG_DIR,
      fmt.METADATA_FILE,
    )
  unlisted: list[str] = []  # images the metadata file does not list
  records: dict[str, EgdRecord] = {}
  all_pids: list[int] = []
  reader = csv.reader(_Utf8Lines(master_file, master_name))
  header = next(reader, [])
  fatal = _check_header(master_name, header, fmt.MASTER_SHEET_COLUMNS, fmt.MASTER_REQUIRED)
  if fatal:
    raise EgdValidationError(fatal)
  col = {name: i for i, name in enumerate(header)}
  line = reader.line_num + 1
  for rec_no, row in enumerate(reader, start=1):
    start_line, line = line, reader.line_num + 1
    where = f'line {start_line} (record {rec_no})'
    if len(row) != len(header):
      problems.append(
        Problem(master_name, where, f'has {len(row)} fields, the header has {len(header)}')
      )
      continue
    dicom_id = row[col['dicom_id']]
    try:
      patient_id = _parse_int(row[col['patient_id']])
      study_id = _parse_int(row[col['study_id']])
    except ValueError:
      problems.append(
        Problem(
          master_name,
          where,
          f'patient_id/study_id not integers: {row[col["patient_id"]]!r}, {row[col["study_id"]]!r}',
          dicom_id,
        )
      )
      continue
    all_pids.append(patient_id)
    try:
      onehot = [_parse_int(row[col[c]]) for c in fmt.CLASS_NAMES]
    except ValueError:
      onehot = None
    if onehot is None or sorted(onehot) != [0, 0, 1]:
      labels = {c: row[col[c]] for c in fmt.CLASS_NAMES}
      problems.append(
        Problem(
          master_name, where, f'dicom_id {dicom_id} needs exactly one label of {labels}', dicom_id
        )
      )
      continue
    if dicom_id in records:
      first = records[dicom_id]
      problems.append(
        Problem(
          master_name,
          where,
          f'duplicate dicom_id {dicom_id} (first at line {first.line}, record {first.record})',
          dicom_id,
        )
      )
      continue
    rel = fmt.image_relpath(row[col['path']], is_jpg)
    image_path = image_root / rel
    why, size = _image_decodes(image_path, is_jpg)
    shown = f'{fmt.JPG_DIR if is_jpg else fmt.DICOM_DIR}/{rel}'  # relative to manual_dir
    if why:
      problems.append(Problem(master_name, where, f'{why}: {shown}', dicom_id))
      continue
    expected = metadata_sizes.get(dicom_id)
    if metadata_name and expected is None:
      unlisted.append(dicom_id)
    elif expected and size != (expected.columns, expected.rows):
      problems.append(
        Problem(
          master_name,
          where,
          f'{shown} is {size[0]} x {size[1]} pixels (width x height), but {metadata_name} '
          f'line {expected.line} gives Columns x Rows {expected.columns} x {expected.rows}: '
          'its fixations would land on the wrong pixels',
          dicom_id,
        )
      )
      continue
    records[dicom_id] = EgdRecord(
      dicom_id=dicom_id,
      study_id=study_id,
      patient_id=patient_id,
      label=onehot.index(1),
      image_path=image_path,
      record=rec_no,
      line=start_line,
    )

  if unlisted:
    logging.warning(
      '%s does not list %d image(s) of the master sheet (%s%s): their sizes are not checked.',
      metadata_name,
      len(unlisted),
      ', '.join(unlisted[:3]),
      ' ...' if len(unlisted) > 3 else '',
    )
  bad_ids = {p.dicom_id for p in problems if p.dicom_id}
  calibration_rows = 0
  duplicates = 0
  seen_rows: dict[tuple[str, ...], int] = {}
  reader = csv.reader(_Utf8Lines(fixations_file, fix_name))
  header = next(reader, [])
  fatal = _check_header(fix_name, header, fmt.GAZE_COLUMNS, fmt.FIXATIONS_REQUIRED)
  if fatal:
    raise EgdValidationError(problems + fatal)
  col = {name: i for i, name in enumerate(header)}
  unknown: dict[str, list[int]] = collections.defaultdict(list)
  for row in reader:
    line = reader.line_num
    if _wrong_length(row, header, fix_name, line, problems):
      continue
    dicom_id = row[col['DICOM_ID']]
    rec = records.get(dicom_id)
    if rec is None:
      if dicom_id in bad_ids:
        continue
      if len(dicom_id) == fmt.CALIBRATION_ID_LENGTH:
        calibration_rows += 1
      else:
        unknown[dicom_id].append(line)
      continue
    try:
      x = _parse_int(row[col['X_ORIGINAL']])
      y = _parse_int(row[col['Y_ORIGINAL']])
      start, duration = float(row[col['FPOGS']]), float(row[col['FPOGD']])
    except ValueError:
      problems.append(
        Problem(fix_name, f'line {line}', 'X_ORIGINAL/Y_ORIGINAL/FPOGS/FPOGD not numeric', dicom_id)
      )
      continue
    first = seen_rows.setdefault(tuple(row), line)
    if first != line:  # the same fixation twice would double its count in the heatmap
      duplicates += 1
      if not skip_invalid_rows:
        problems.append(Problem(fix_name, f'line {line}', f'duplicate of line {first}'))
      continue
    fx = rec.fixations
    fx.x.append(x)
    fx.y.append(y)
    fx.start_s.append(start)
    fx.duration_s.append(duration)
  for dicom_id, lines in unknown.items():
    shown = ', '.join(map(str, lines[:5])) + (' ...' if len(lines) > 5 else '')
    problems.append(
      Problem(
        fix_name,
        f'line(s) {shown}',
        f'{len(lines)} fixation(s) for DICOM_ID {dicom_id!r}, '
        'which is neither in master_sheet.csv nor a 39-character calibration screen id',
      )
    )

  fixated = {d for d, r in records.items() if r.fixations.x}
  for dicom_id, rec in records.items():
    if dicom_id not in fixated and dicom_id not in bad_ids:
      problems.append(
        Problem(
          master_name,
          f'line {rec.line} (record {rec.record})',
          f'dicom_id {dicom_id} has no fixations in fixations.csv',
          dicom_id,
        )
      )

  skippable = all(p.dicom_id or p.file == fix_name for p in problems)
  if problems and (not skip_invalid_rows or not skippable):
    raise EgdValidationError(problems)
  skipped = {p.dicom_id for p in problems if p.dicom_id}
  for dicom_id in skipped:
    records.pop(dicom_id, None)

  split_of = official_split(all_pids, seed=split_seed)
  splits = {'train': [], 'validation': [], 'test': []}
  for rec in records.values():
    splits[split_of[rec.patient_id]].append(rec)
  return EgdTree(
    splits=splits,
    skipped_ids=sorted(skipped),
    problems=problems,
    calibration_rows=calibration_rows,
    image_format='jpg' if is_jpg else 'dicom',
    duplicate_fixations=duplicates,
  )
