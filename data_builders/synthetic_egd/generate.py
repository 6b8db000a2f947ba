"""Writes a synthetic look-alike of the PhysioNet EGD and MIMIC-CXR-JPG trees.

The output has the real layout and formats of the PhysioNet files: verbatim 59- and
37-column headers, ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg`` paths, letter-box pads,
``X/Y_ORIGINAL`` from ``FPOGX/FPOGY`` by the official formula, reading sessions of 30 with
calibration screens (39-character ids), off-image fixations, a 60 Hz ``eye_gaze.csv``, and
quoted free text with commas, quotes and newlines. Beside the two trees,
``synthetic_truth.csv`` records what was drawn (class evidence, shortcut marker corner), and
``synthetic_readers.csv`` every simulated reader's fixations (``readers.py``) of the images that
several readers read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
import pathlib

import numpy as np
from PIL import Image

from data_builders.mimic_cxr_egd import egd_format as fmt
from data_builders.mimic_cxr_egd import egd_reader
from data_builders.synthetic_egd import anatomy
from data_builders.synthetic_egd import readers as readers_lib

# Raise whenever the same arguments would write different files: a tree on disk records the
# version that wrote it, and mimic_jax.data.prepare refuses to reuse one of another version.
GENERATOR_VERSION = 3
SESSION_SIZE = 30
CALIBRATION_EVERY = 20
GAZE_HZ = 60.0
# Typical MIMIC-CXR PA sizes (H, W); one in ten images is landscape.
PORTRAIT_SIZES = ((3056, 2544), (2992, 2500), (3050, 2539), (2880, 2304))
LANDSCAPE_SIZES = ((2544, 3056), (2500, 3000))
AGE_BINS = ('20 - 30', '30 - 40', '40 - 50', '50 - 60', '60 - 70', '70 - 80')
INDICATIONS = (
  '___F with CHF and  shortness of breath// ?Pulmonary edema',
  '___M with cough, fever, and "productive sputum"\n// ?pneumonia',
  'History: ___-year-old with chest pain, dyspnea.\nEvaluate for acute process, "r/o" PNA',
  'Preop, routine',
)


@dataclasses.dataclass
class ImageSpec:
  """What is drawn for one master-sheet row."""

  dicom_id: str
  patient_id: int
  study_id: int
  label: int
  height: int
  width: int
  split: str
  marker_corner: int | None
  n_fixations: int
  seed: int


def _hex_id(rng: np.random.Generator) -> str:
  return '-'.join(f'{int(rng.integers(0, 2**32)):08x}' for _ in range(5))


def _relpath(spec: ImageSpec, suffix: str) -> str:
  sid = str(spec.patient_id)
  return f'files/p{sid[:2]}/p{sid}/s{spec.study_id}/{spec.dicom_id}.{suffix}'


def plan_images(
  num_images: int, seed: int, scale: float, shortcut: dict[str, float | None]
) -> list[ImageSpec]:
  """Chooses ids, classes, sizes, splits and shortcut markers for every image."""
  if num_images < 3:
    raise ValueError('num_images must be at least 3 (one per class)')
  rng = np.random.default_rng(seed)
  labels = np.arange(num_images) % 3
  rng.shuffle(labels)
  specs_wo_split = []
  patient_id = None
  for i in range(num_images):
    # One patient in ~12 has a second study; image 1 always shares image 0's patient.
    if patient_id is None or not (i == 1 or rng.random() < 0.08):
      patient_id = int(rng.integers(10_000_000, 20_000_000))
    landscape = rng.random() < 0.1 or i == 2
    sizes = LANDSCAPE_SIZES if landscape else PORTRAIT_SIZES
    h, w = sizes[rng.integers(len(sizes))]
    h, w = 2 * max(16, round(h * scale / 2)), 2 * max(16, round(w * scale / 2))  # even
    n_fix = 1 if i == 3 else int(np.clip(rng.poisson(28), 4, 70))
    specs_wo_split.append(
      (
        _hex_id(rng),
        patient_id,
        int(rng.integers(50_000_000, 60_000_000)),
        int(labels[i]),
        h,
        w,
        n_fix,
      )
    )
  split_of = egd_reader.official_split([s[1] for s in specs_wo_split])
  specs = []
  for dicom_id, pid, study, label, h, w, n_fix in specs_wo_split:
    split = split_of[pid]
    p = shortcut.get(split)
    if p is None:
      corner = None
    else:
      corner = label if rng.random() < p else int(rng.integers(3))
    specs.append(
      ImageSpec(dicom_id, pid, study, label, h, w, split, corner, n_fix, int(rng.integers(2**31)))
    )
  return specs


def decoy_specs(specs: list[ImageSpec], seed: int) -> list[ImageSpec]:
  """``specs`` with every marker moved to a wrong class's corner (drawn from a generator of
  its own, so that everything else in the tree stays as it was)."""
  rng = np.random.default_rng((seed, 0xDEC0))
  return [
    dataclasses.replace(s, marker_corner=(s.label + 1 + int(rng.integers(2))) % 3) for s in specs
  ]


@dataclasses.dataclass(frozen=True)
class ReaderPlan:
  """Who reads the images: ``kind`` (``readers.READER_KINDS``), ``readers`` (realistic: one per
  reader; reader 0 is the EGD reading) and the share of images all of them read."""

  kind: str = 'realistic'
  readers: tuple[readers_lib.Reader, ...] = ()
  multi_reader_share: float = 0.0


def _write_image(spec: ImageSpec, path: pathlib.Path, plan: ReaderPlan) -> tuple[list, dict, list]:
  """Renders and saves one JPG; returns (reader 0's gaze targets (u, v), bounding boxes, every
  reader's targets if several readers read this image, else [])."""
  rng = np.random.default_rng(spec.seed)
  case = anatomy.render_case(spec.label, spec.height, spec.width, rng, spec.marker_corner)
  buf = io.BytesIO()
  Image.fromarray(case.pixels, mode='L').save(buf, format='JPEG', quality=90)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  if plan.kind == 'evidence':
    return anatomy.sample_gaze_targets(case.regions, spec.n_fixations, rng).tolist(), case.boxes, []
  targets = readers_lib.sample_targets(case.regions, spec.n_fixations, rng, plan.readers[0])
  every = []
  multi = np.random.default_rng((spec.seed, 0x3EAD))  # its own stream: reader 0 stays as it is
  if len(plan.readers) > 1 and multi.random() < plan.multi_reader_share:
    every.append(targets.tolist())
    for reader in plan.readers[1:]:
      n = int(np.clip(multi.poisson(28), 4, 70))
      every.append(readers_lib.sample_targets(case.regions, n, multi, reader).tolist())
  return targets.tolist(), case.boxes, every


def _fmt(x: float) -> str:
  return f'{x:.5f}'.rstrip('0').rstrip('.') if x != int(x) else f'{x:.1f}'


class _SessionClock:
  """Gazepoint counters of one reading session: CNT at 60 Hz, TIMETICK at 10 MHz."""

  def __init__(self, rng: np.random.Generator):
    self.cnt = int(rng.integers(20, 80))
    self.tick0 = float(rng.integers(6e11, 7e11))
    self.elapsed = 0.0
    self.fpogid = 0


def _gaze_rows(
  session: int,
  media: int,
  dicom_id: str,
  fpog: list[tuple[float, float]],
  height: int,
  width: int,
  pads: tuple[int, int, int, int],
  rng: np.random.Generator,
  clock: _SessionClock,
  raw: bool,
) -> tuple[list, list]:
  """(fixation rows, 60 Hz raw rows) of one displayed image, in the 37 GAZE_COLUMNS."""
  fix_rows, raw_rows = [], []
  t = rng.uniform(0.0, 0.05)
  prev = None
  for fx, fy in fpog:
    duration = round(float(np.clip(rng.lognormal(math.log(0.3), 0.5), 0.08, 1.5)), 5)
    start = round(t, 5)
    t = round(start + duration, 5)  # Time (in secs) of the fixation row = FPOGS + FPOGD
    clock.fpogid += 1
    x_orig, y_orig = fmt.screen_to_original(fx, fy, height, width, pads)
    px, py = fx * fmt.SCREEN_WIDTH, fy * fmt.SCREEN_HEIGHT
    if prev is None:
      mag, ang = 0.0, 0.0
    else:
      mag = math.hypot(px - prev[0], py - prev[1])
      ang = math.degrees(math.atan2(py - prev[1], px - prev[0])) % 360
    prev = (px, py)
    pupil = rng.normal(18.3, 0.3)

    def row(time_s: float, elapsed: float, cnt: int):
      bx, by = fx + rng.normal(0, 0.004), fy + rng.normal(0, 0.004)
      return [
        session,
        media,
        dicom_id,
        cnt,
        _fmt(time_s),
        _fmt(round(clock.tick0 + (clock.elapsed + time_s) * 1e7)),
        _fmt(fx),
        _fmt(fy),
        _fmt(start),
        _fmt(elapsed),
        clock.fpogid,
        1,
        _fmt(bx),
        _fmt(by),
        1,
        _fmt(0.378 + rng.normal(0, 0.002)),
        _fmt(0.594 + rng.normal(0, 0.002)),
        _fmt(pupil),
        _fmt(1.05),
        1,
        _fmt(0.638 + rng.normal(0, 0.002)),
        _fmt(0.598 + rng.normal(0, 0.002)),
        _fmt(pupil - 0.15),
        _fmt(1.06),
        1,
        0,
        '0.0',
        20,
        _fmt(pupil / 5.2),
        1,
        _fmt(pupil / 5.1),
        1,
        _fmt(mag),
        _fmt(ang),
        '0.0',
        x_orig,
        y_orig,
      ]

    if raw:
      n = max(1, int(duration * GAZE_HZ))
      for k in range(1, n + 1):
        elapsed = duration * k / n
        clock.cnt += 1
        raw_rows.append(row(start + elapsed, elapsed, clock.cnt))
    else:
      clock.cnt += max(1, int(duration * GAZE_HZ))
    fix_rows.append(row(t, duration, clock.cnt))
    t += rng.uniform(0.02, 0.08)  # saccade
    clock.cnt += 2
  clock.elapsed += t + 1.0
  return fix_rows, raw_rows


def _screen_points(
  targets: Sequence[tuple[float, float]], height: int, width: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
  """FPOGX/FPOGY (screen fractions, 5 decimals) for image-fraction targets; ~4% land off the
  displayed image (in a pad or off screen)."""
  top, bottom, left, right = fmt.letterbox_pads(height, width)
  out = []
  for u, v in targets:
    if rng.random() < 0.04:
      ex = rng.uniform(0, max(left, 2)) if left > 2 else rng.uniform(-40, 0)
      ey = rng.uniform(0, top) if top > 2 else rng.uniform(0.1, 0.9) * fmt.SCREEN_HEIGHT
    else:
      ex = left + u * (fmt.SCREEN_WIDTH - left - right)
      ey = top + v * (fmt.SCREEN_HEIGHT - top - bottom)
    out.append((round(ex / fmt.SCREEN_WIDTH, 5), round(ey / fmt.SCREEN_HEIGHT, 5)))
  return out


def _master_row(spec: ImageSpec, rng: np.random.Generator) -> list:
  pads = fmt.letterbox_pads(spec.height, spec.width)
  dx = [''] * 18
  finding = dict.fromkeys(fmt.MASTER_SHEET_COLUMNS[33:44], 0)
  chx = [''] * 14
  if spec.label == anatomy.CHF:
    dx[0:2] = ['Heart failure, unspecified', 'I50.9']
    finding['enlarged_cardiac_silhouette'] = finding['pulmonary_edema__hazy_opacity'] = 1
    chx[1], chx[3] = '1.0', '-1.0'
  elif spec.label == anatomy.PNEUMONIA:
    dx[0:2] = ['Pneumonia, unspecified organism', 'J18.9']
    finding['consolidation'] = 1
    chx[11], chx[7] = '1.0', '1.0'
  else:
    finding['normal_anatomically'] = 1
    chx[8] = '1.0'
  onehot = [int(spec.label == k) for k in range(3)]
  indication = INDICATIONS[int(rng.integers(len(INDICATIONS)))]
  return [
    spec.dicom_id,
    _relpath(spec, 'dcm'),
    spec.study_id,
    spec.patient_id,
    int(rng.integers(30_000_000, 40_000_000)),
    'FM'[int(rng.integers(2))],
    AGE_BINS[int(rng.integers(len(AGE_BINS)))],
    *pads,
    *dx,
    onehot[0],
    *onehot,
    *finding.values(),
    *chx,
    indication,
  ]


def write_tree(
  output_dir: str | os.PathLike,
  num_images: int,
  seed: int = 0,
  scale: float = 1.0,
  shortcut: dict[str, float | None] | None = None,
  raw_gaze: bool = True,
  num_workers: int | None = None,
  progress: Callable[[int, int], None] | None = None,
  decoy: bool = False,
  reader: str = 'realistic',
  num_readers: int = 5,
  multi_reader_share: float = 0.25,
) -> list[ImageSpec]:
  """Writes ``egd-cxr/1.0.0/`` and ``mimic-cxr-jpg/2.0.0/`` under ``output_dir``.

  Args:
    output_dir: the manual_dir to create.
    num_images: rows of master_sheet.csv (at least 3).
    seed: makes the whole tree reproducible.
    scale: image side relative to real MIMIC sizes (about 3000 x 2500 at 1.0).
    shortcut: per split (``train``/``validation``/``test``), the probability that the corner
      marker sits in the corner of the image's class (else a random corner); ``None`` or a
      missing split draws no marker.
    raw_gaze: also write the 60 Hz ``eye_gaze.csv``.
    num_workers: threads rendering images (default: all cores); 0: none.
    progress: optional callable ``(done, total)`` called as images are written.
    decoy: the decoy tree: the same images, fixations and rows as without it (same
      arguments), except that every image's corner marker sits in the corner of a *wrong*
      class (one of the other two, drawn at random). A model that reads the marker gets these
      images wrong; one that ignores it does not notice.
    reader: the simulated radiologist (``readers.READER_KINDS``): ``realistic``, a
      centre-biased search that dwells on the finding when it notices it, calibrated to
      REFLACX; ``evidence``, a perfect evidence mask (for known-answer tests).
    num_readers: realistic readers (reader 0 is the EGD reading in ``fixations.csv``).
    multi_reader_share: the share of images read by all ``num_readers`` readers, whose
      readings go to ``synthetic_readers.csv``.

  Returns:
    The per-image plan, in master-sheet order.
  """
  out = pathlib.Path(output_dir)
  egd = out / fmt.EGD_DIR
  jpg_root = out / fmt.JPG_DIR
  egd.mkdir(parents=True, exist_ok=True)
  jpg_root.mkdir(parents=True, exist_ok=True)
  if reader not in readers_lib.READER_KINDS:
    raise ValueError(f'reader {reader!r} is not one of {readers_lib.READER_KINDS}')
  specs = plan_images(num_images, seed, scale, shortcut or {})
  if decoy:
    specs = decoy_specs(specs, seed)
  rng = np.random.default_rng(seed + 1)
  plan = ReaderPlan(
    reader, tuple(readers_lib.make_readers(max(1, num_readers), seed)), multi_reader_share
  )

  workers = os.cpu_count() if num_workers is None else num_workers
  results = [None] * len(specs)
  if workers:
    # Threads: NumPy and Pillow release the GIL, and no process re-imports the caller's script.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      futs = {
        pool.submit(_write_image, s, jpg_root / _relpath(s, 'jpg'), plan): i
        for i, s in enumerate(specs)
      }
      for done, fut in enumerate(concurrent.futures.as_completed(futs), start=1):
        results[futs[fut]] = fut.result()
        if progress:
          progress(done, len(specs))
  else:
    for i, s in enumerate(specs):
      results[i] = _write_image(s, jpg_root / _relpath(s, 'jpg'), plan)
      if progress:
        progress(i + 1, len(specs))

  with (egd / 'master_sheet.csv').open('w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(fmt.MASTER_SHEET_COLUMNS)
    for s in specs:
      w.writerow(_master_row(s, rng))

  # Reading sessions: images shuffled together with a calibration screen every 20th image.
  shown = []
  for i in range(len(specs)):
    shown.append(i)
    if (i + 1) % CALIBRATION_EVERY == 0:
      shown.append(-1 - i)  # calibration screen named after image i
  rng.shuffle(shown)
  fix_file = (egd / 'fixations.csv').open('w', newline='')
  raw_file = (egd / 'eye_gaze.csv').open('w', newline='') if raw_gaze else None
  fix_w = csv.writer(fix_file, lineterminator='\n')
  fix_w.writerow(fmt.GAZE_COLUMNS)
  raw_w = None
  if raw_file:
    raw_w = csv.writer(raw_file, lineterminator='\n')
    raw_w.writerow(fmt.GAZE_COLUMNS)
  for start in range(0, len(shown), SESSION_SIZE):
    session = start // SESSION_SIZE + 1
    clock = _SessionClock(rng)
    for media, item in enumerate(shown[start : start + SESSION_SIZE]):
      if item >= 0:
        s = specs[item]
        targets = results[item][0]
        fpog = _screen_points(targets, s.height, s.width, rng)
        rows = _gaze_rows(
          session,
          media,
          s.dicom_id,
          fpog,
          s.height,
          s.width,
          fmt.letterbox_pads(s.height, s.width),
          rng,
          clock,
          raw_gaze,
        )
      else:  # calibration disc at the screen centre, read as a 1080 x 1920 unpadded "image"
        cal_id = specs[-1 - item].dicom_id[:-5]
        fpog = [
          (round(0.5 + rng.normal(0, 0.02), 5), round(0.5 + rng.normal(0, 0.02), 5))
          for _ in range(int(rng.integers(2, 5)))
        ] + [(0.50012, 0.49987)]
        rows = _gaze_rows(
          session,
          media,
          cal_id,
          fpog,
          fmt.SCREEN_HEIGHT,
          fmt.SCREEN_WIDTH,
          (0, 0, 0, 0),
          rng,
          clock,
          raw_gaze,
        )
      fix_w.writerows(rows[0])
      if raw_w:
        raw_w.writerows(rows[1])
  fix_file.close()
  if raw_file:
    raw_file.close()

  with (egd / 'bounding_boxes.csv').open('w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['dicom_id', 'bbox_name', 'x1', 'x2', 'y1', 'y2'])
    for s, (_, boxes, _) in zip(specs, results):
      for name, (x1, x2, y1, y2) in boxes.items():
        w.writerow([s.dicom_id, name, f'{x1:.1f}', f'{x2:.1f}', f'{y1:.1f}', f'{y2:.1f}'])
  for s in specs:
    d = egd / 'audio_segmentation_transcripts' / s.dicom_id
    d.mkdir(parents=True, exist_ok=True)
    text = [
      'no acute cardiopulmonary process',
      'cardiomegaly with pulmonary edema',
      'focal consolidation, concerning for pneumonia',
    ][s.label]
    (d / 'transcript.json').write_text(
      json.dumps(
        {
          'full_text': text,
          'time_stamped_text': [{'phrase': text, 'begin_time': 0.5, 'end_time': 3.2}],
        }
      )
    )
  with (jpg_root / 'mimic-cxr-2.0.0-metadata.csv').open('w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(
      [
        'dicom_id',
        'subject_id',
        'study_id',
        'PerformedProcedureStepDescription',
        'ViewPosition',
        'Rows',
        'Columns',
        'StudyDate',
        'StudyTime',
        'ProcedureCodeSequence_CodeMeaning',
        'ViewCodeSequence_CodeMeaning',
        'PatientOrientationCodeSequence_CodeMeaning',
      ]
    )
    for s in specs:
      w.writerow(
        [
          s.dicom_id,
          s.patient_id,
          s.study_id,
          'CHEST (PA AND LAT)',
          'PA',
          s.height,
          s.width,
          21800101,
          '120000.000',
          'CHEST (PA AND LAT)',
          'postero-anterior',
          'Erect',
        ]
      )
  with (out / readers_lib.READINGS_FILE).open('w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['dicom_id', 'reader', 'X_ORIGINAL', 'Y_ORIGINAL'])
    for s, (_, _, every) in zip(specs, results):
      for k, targets in enumerate(every):
        for u, v in targets:
          w.writerow([s.dicom_id, k, int(u * s.width), int(v * s.height)])
  with (out / 'synthetic_truth.csv').open('w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['dicom_id', 'split', 'label', 'marker_corner', 'height', 'width'])
    for s in specs:
      w.writerow(
        [
          s.dicom_id,
          s.split,
          fmt.CLASS_NAMES[s.label],
          '' if s.marker_corner is None else s.marker_corner,
          s.height,
          s.width,
        ]
      )
  return specs
