"""Writes a synthetic REFLACX tree in the published format (``../shared/specs/reflacx-format.md``).

The images are drawn as the synthetic EGD images are (``synthetic_egd/anatomy.py``: Normal,
CHF or pneumonia, without the shortcut marker), and read by the realistic simulated
radiologists of ``synthetic_egd/readers.py``: five readers read every phase 1-2 image (ids
sharing ``P{phase}{trial}``), one of them each phase 3 image. A reader that notices the finding
reports it, with ellipses of certainty 3-5 around it; one that does not may leave a doubtful
ellipse (certainty 1-2) or nothing. Written as on PhysioNet:

- ``reflacx-xray-localization/1.0.0/main_data/metadata_phase_{1,2,3}.csv`` and, per reading,
  ``main_data/<id>/`` (ellipses, chest box, fixations, transcript) and ``gaze_data/<id>/``
  (``gaze.csv`` at 1000 Hz with ``raw_gaze``): CRLF CSVs, the published headers;
- ``mimic-cxr-jpg/2.0.0/files/pXX/p<subject>/s<study>/<dicom_id>.jpg``;
- ``synthetic_truth.csv``: per image, the class drawn and the original size.

It holds the format's corner cases: a discarded reading (ellipses and chest box only, an empty
gaze folder), header-only ellipse files (normal images), ellipses carrying two labels, zoomed
fixations (a smaller shown rectangle, fewer image pixels per degree), fixations off the image
(on the buttons, dropped by the official filter, and just past the edge, kept), zero-length
transcript words, and a blink run in ``gaze.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
import csv
import dataclasses
import io
import pathlib

import numpy as np
from PIL import Image

from data_builders.reflacx import reflacx_format as fmt
from data_builders.synthetic_egd import anatomy
from data_builders.synthetic_egd import generate as egd_generate
from data_builders.synthetic_egd import readers as readers_lib

GENERATOR_VERSION = 1
REFLACX_DIR = ('reflacx-xray-localization', '1.0.0')
TRUTH_FILE = 'synthetic_truth.csv'
CLASS_NAMES = ('Normal', 'CHF', 'pneumonia')
SPLITS = ('train', 'validate', 'test')
SPLIT_SHARES = (0.6, 0.2, 0.2)

# Display geometry (spec section 3): a 3840 x 2160 screen, the image area x in [660, 3180].
SCREEN_CENTRE = (1920.0, 1080.0)
IMAGE_AREA = (2520.0, 2160.0)
SCREEN_PX_PER_DEGREE = 93.0
BUTTON_POINT = (330.0, 1030.0)  # inside the buttons box [10, 933, 650, 1122]

# What a reader writes for a finding it noticed: labels (phases 1-3 share these names), and
# the evidence regions their ellipses outline.
FINDING_LABELS = {
  anatomy.CHF: {'enlarged heart': ('Enlarged cardiac silhouette',), 'haze': ('Pulmonary edema',)},
  anatomy.PNEUMONIA: {'consolidation': ('Consolidation',)},
}
TRANSCRIPTS = {
  anatomy.NORMAL: 'the lungs are clear . no effusion , no pneumothorax .',
  anatomy.CHF: 'the heart is enlarged . perihilar haze , suggesting pulmonary edema .',
  anatomy.PNEUMONIA: 'focal consolidation , concerning for pneumonia .',
}
# Calibrated so that one reader against the mean of the others scores REFLACX's NCC (0.632).
FIXATIONS_PER_READING = 120
SCAN_FIXATIONS = 26
MISSED_TRANSCRIPT = 'no acute cardiopulmonary process .'


@dataclasses.dataclass
class ImagePlan:
  """One image: ids, class, size, split, and which readings read it."""

  dicom_id: str
  subject_id: int
  study_id: int
  label: int
  height: int
  width: int
  split: str
  phase: int
  trial: int
  seed: int
  reading_ids: list[str] = dataclasses.field(default_factory=list)
  readers: list[int] = dataclasses.field(default_factory=list)
  discarded: list[bool] = dataclasses.field(default_factory=list)


def plan_images(
  phase_images: tuple[int, int, int], seed: int, scale: float, num_readers: int
) -> list[ImagePlan]:
  """Chooses ids, classes, sizes, splits (per patient) and readings for every image."""
  if num_readers < 2:
    raise ValueError(f'num_readers must be at least 2, not {num_readers}')
  total = sum(phase_images)
  if total < 3:
    raise ValueError(f'the tree needs at least 3 images (one per class), not {total}')
  rng = np.random.default_rng((seed, 0x4EF1))
  used_ids: set[str] = set()

  def reading_id(prefix: str) -> str:
    while True:
      rid = f'{prefix}R{int(rng.integers(0, 1_000_000)):06}'
      if rid not in used_ids:
        used_ids.add(rid)
        return rid

  plans, split_of = [], {}
  for phase, count in enumerate(phase_images, start=1):
    # Each phase draws after the earlier ones: a tree's phases 1-2 do not depend on phase 3.
    labels = np.arange(count) % 3
    rng.shuffle(labels)
    for t in range(count):
      subject = int(rng.integers(10_000_000, 20_000_000))
      split_of[subject] = SPLITS[rng.choice(3, p=SPLIT_SHARES)]
      sizes = egd_generate.LANDSCAPE_SIZES if rng.random() < 0.1 else egd_generate.PORTRAIT_SIZES
      h, w = sizes[rng.integers(len(sizes))]
      h, w = 2 * max(16, round(h * scale / 2)), 2 * max(16, round(w * scale / 2))
      plan = ImagePlan(
        dicom_id=egd_generate._hex_id(rng),
        subject_id=subject,
        study_id=int(rng.integers(50_000_000, 60_000_000)),
        label=int(labels[t]),
        height=h,
        width=w,
        split=split_of[subject],
        phase=phase,
        trial=t + 2 if phase == 1 else t + 1,  # phase 1's trials start at 2
        seed=int(rng.integers(2**31)),
      )
      if phase < 3:
        plan.readers = list(range(num_readers))
        plan.reading_ids = [reading_id(f'P{phase}{plan.trial:02}') for _ in plan.readers]
      else:
        plan.readers = [int(rng.integers(num_readers))]
        plan.reading_ids = [reading_id('P300')]
      plan.discarded = [False] * len(plan.readers)
      plans.append(plan)
  # A few phase 1-2 readings lost their eye tracking (20 of 545 on REFLACX), at least one.
  multi = [(p, r) for p in plans if p.phase < 3 for r in range(len(p.readers))]
  if multi:
    lost = np.random.default_rng((seed, 0xD15C))
    chosen = [i for i in range(len(multi)) if lost.random() < 0.04] or [len(multi) // 2]
    for i in chosen:
      p, r = multi[i]
      p.discarded[r] = True
  return plans


def _write_csv(path: pathlib.Path, header: tuple[str, ...] | list[str], rows: list[list]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('w', newline='\r\n') as f:  # the official files' CRLF line ends
    w = csv.writer(f, lineterminator='\n')
    w.writerow(header)
    w.writerows(rows)


def _box(region: anatomy.Region, width: int, height: int, rng: np.random.Generator) -> list[int]:
  """An ellipse's box around an evidence region at 0.9-1.1 standard deviations (pixels)."""
  ru, rv = (0.9 + 0.2 * rng.random()) * region.su, (0.9 + 0.2 * rng.random()) * region.sv
  u, v = region.u + rng.normal(0, 0.1 * region.su), region.v + rng.normal(0, 0.1 * region.sv)
  return [
    int(np.clip((u - ru) * width, 0, width - 1)),
    int(np.clip((v - rv) * height, 0, height - 1)),
    int(np.clip((u + ru) * width, 1, width)),
    int(np.clip((v + rv) * height, 1, height)),
  ]


def _ellipses(
  case: anatomy.Case, label: int, noticed: bool, rng: np.random.Generator, width: int, height: int
) -> list[tuple[list[int], int, set[str]]]:
  """``[(box, certainty, labels)]`` of one reading."""
  out = []
  evidence = [r for r in case.regions if r.evidence]
  if label in FINDING_LABELS and (noticed or rng.random() < 0.5):
    for r in evidence:
      names = next(v for k, v in FINDING_LABELS[label].items() if k in r.name)
      certainty = int(rng.integers(3, 6)) if noticed else int(rng.integers(1, 3))
      tags = set(names)
      if label == anatomy.PNEUMONIA and rng.random() < 0.3:
        tags.add('Atelectasis')  # one ellipse, two labels
      out.append((_box(r, width, height, rng), certainty, tags))
  elif label == anatomy.NORMAL and rng.random() < 0.2:
    lung = next(r for r in case.regions if r.name.endswith('lung'))
    out.append((_box(lung, width, height, rng), int(rng.integers(1, 3)), {'Atelectasis'}))
  return out


def _screen(
  width: int, height: int, zoom: float = 1.0, shown: list[int] | None = None
) -> tuple[list[int], float]:
  """``(screen rect, screen px per image px)`` of the shown part of the image at ``zoom``."""
  scale = min(IMAGE_AREA[0] / width, IMAGE_AREA[1] / height) * zoom
  x0, y0, x1, y1 = shown if shown is not None else (0, 0, width, height)
  w, h = (x1 - x0) * scale, (y1 - y0) * scale
  cx, cy = SCREEN_CENTRE
  return [round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)], scale


def _fixation_rows(
  targets: np.ndarray, width: int, height: int, rng: np.random.Generator, off_image: bool
) -> list[list]:
  """The rows of ``fixations.csv`` of one reading: the targets in time order, a zoomed run in
  some readings, and (``off_image``) one fixation on the buttons and one just past the edge."""
  full = [0, 0, width, height]
  screen, scale = _screen(width, height)
  points = [(float(u * width), float(v * height), full, screen, scale) for u, v in targets]
  if len(points) >= 8 and rng.random() < 0.4:  # zoom x2 around one target for a few fixations
    start = int(rng.integers(2, len(points) - 4))
    cx, cy = points[start][0], points[start][1]
    zoom_scale = 2 * scale
    cw, ch = min(width, IMAGE_AREA[0] / zoom_scale), min(height, IMAGE_AREA[1] / zoom_scale)
    x0, y0 = int(np.clip(cx - cw / 2, 0, width - cw)), int(np.clip(cy - ch / 2, 0, height - ch))
    shown = [x0, y0, int(x0 + cw), int(y0 + ch)]
    zscreen, zscale = _screen(width, height, 2.0, shown)
    for i in range(start, start + int(rng.integers(3, 5))):
      x = float(np.clip(points[i][0], shown[0], shown[2] - 1))
      y = float(np.clip(points[i][1], shown[1], shown[3] - 1))
      points[i] = (x, y, shown, zscreen, zscale)
  if off_image:
    bx = (BUTTON_POINT[0] - screen[0]) / scale
    by = (BUTTON_POINT[1] - screen[1]) / scale
    points.insert(int(rng.integers(1, len(points))), (bx, by, full, screen, scale))
    edge = width + 0.3 * SCREEN_PX_PER_DEGREE / scale  # 0.3 degrees past the right edge
    points.insert(int(rng.integers(1, len(points))), (edge, height / 2, full, screen, scale))
  rows, t = [], 0.8 + rng.random()
  level, window = 0.5 + rng.normal(0, 0.02), 1.0 + rng.normal(0, 0.05)
  for x, y, shown, scr, s in points:
    duration = float(np.clip(rng.gamma(2.0, 0.15), 0.05, 1.0))
    res = round(SCREEN_PX_PER_DEGREE / s)
    rows.append(
      [
        f'{t:.3f}',
        f'{t + duration:.3f}',
        int(round(x)),
        int(round(y)),
        f'{rng.normal(1.0, 0.1):.3f}',
        res,
        res,
        f'{window:.5f}',
        f'{level:.5f}',
        *shown,
        *scr,
      ]
    )
    t += duration + rng.uniform(0.02, 0.06)
  return rows


def _gaze_rows(fixation_rows: list[list], rng: np.random.Generator) -> list[list]:
  """``gaze.csv`` at 1000 Hz over the fixations: on a fixation its position with jitter,
  between fixations the next one's, and one blink run with empty eye fields."""
  start, end = float(fixation_rows[0][0]), float(fixation_rows[-1][1])
  blink_at = float(fixation_rows[len(fixation_rows) // 2][1])
  rows, k = [], 0
  for ms in range(int(round((end - start) * 1000)) + 1):
    t = start + ms / 1000
    while k < len(fixation_rows) - 1 and t > float(fixation_rows[k][1]):
      k += 1
    f = fixation_rows[k]
    if blink_at <= t < blink_at + 0.12:
      rows.append([f'{t:.3f}', '', '', '', '', '', *f[7:]])
      continue
    x, y = int(f[2]) + int(rng.integers(-2, 3)), int(f[3]) + int(rng.integers(-2, 3))
    rows.append([f'{t:.3f}', x, y, f'{rng.normal(1.0, 0.1):.3f}', f[5], f[6], *f[7:]])
  return rows


def _transcript(label: int, noticed: bool) -> tuple[list[list], str]:
  """(rows of ``timestamps_transcription.csv``, ``transcription.txt``) satisfying the
  official identity ``' '.join(words) == text.replace('.', ' .').replace(',', ' ,')``."""
  words = (TRANSCRIPTS[label] if noticed or label == anatomy.NORMAL else MISSED_TRANSCRIPT).split()
  rows, t = [], 1.0
  for w in words:
    length = 0.0 if w in '.,' else 0.12 + 0.05 * len(w)  # punctuation: zero-length words
    rows.append([w, f'{t:.2f}', f'{t + length:.2f}'])
    t += length + 0.05
  text = ' '.join(words).replace(' .', '.').replace(' ,', ',')
  assert ' '.join(words) == text.replace('.', ' .').replace(',', ' ,')
  return rows, text


def _labels(
  phase: int, ellipses: list[tuple[list[int], int, set[str]]], rng: np.random.Generator
) -> list:
  """A reading's label columns: each finding's maximum certainty over its ellipses."""
  out = []
  for name in fmt.phase_labels(phase):
    if name == 'Other':
      out.append('Granuloma|Scoliosis' if rng.random() < 0.1 else '')
    elif name in fmt.BOOLEAN_LABELS:
      out.append(name == 'Support devices' and rng.random() < 0.15)
    else:
      out.append(max([c for _, c, tags in ellipses if name in tags], default=0))
  return out


def write_tree(
  output_dir: str | pathlib.Path,
  phase_images: tuple[int, int, int] = (15, 15, 470),
  seed: int = 0,
  scale: float = 0.5,
  num_readers: int = 5,
  fixations_per_reading: float = FIXATIONS_PER_READING,
  raw_gaze: bool = False,
  progress: Callable[[int, int], None] | None = None,
) -> list[ImagePlan]:
  """Writes the tree (module docstring) under ``output_dir`` and returns the plan.

  Args:
    phase_images: images in phases 1, 2 (read by all ``num_readers``) and 3 (one reader each).
    seed: everything drawn follows from it.
    scale: image size relative to MIMIC-CXR's (about 3000 x 2500 at 1).
    num_readers: the simulated radiologists (REFLACX: 5).
    fixations_per_reading: the mean (Poisson) number of fixations of a reading.
    raw_gaze: also write every ``gaze_data/<id>/gaze.csv`` (1000 rows per second of reading).
    progress: called with (images done, images) after each image.
  """
  out = pathlib.Path(output_dir)
  root = out.joinpath(*REFLACX_DIR)
  main_data, gaze_data = root / 'main_data', root / 'gaze_data'
  jpg_root = out / 'mimic-cxr-jpg' / '2.0.0'
  plans = plan_images(phase_images, seed, scale, num_readers)
  readers = readers_lib.make_readers(num_readers, seed)
  metadata: dict[int, list[list]] = {1: [], 2: [], 3: []}
  first_off_image = True
  for done, p in enumerate(plans, start=1):
    rng = np.random.default_rng(p.seed)
    case = anatomy.render_case(p.label, p.height, p.width, rng, marker_corner=None)
    sid = str(p.subject_id)
    rel = f'files/p{sid[:2]}/p{sid}/s{p.study_id}/{p.dicom_id}'
    jpg = jpg_root / f'{rel}.jpg'
    jpg.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(case.pixels, mode='L').save(buf, format='JPEG', quality=90)
    jpg.write_bytes(buf.getvalue())
    chest = [
      min(b[0] for b in case.boxes.values()),
      min(b[2] for b in case.boxes.values()),
      max(b[1] for b in case.boxes.values()),
      max(b[3] for b in case.boxes.values()),
    ]
    for rid, reader, discarded in zip(p.reading_ids, p.readers, p.discarded):
      n = int(np.clip(rng.poisson(fixations_per_reading), 4, 4 * fixations_per_reading))
      # A longer reading searches more places: one scan point per SCAN_FIXATIONS fixations.
      searcher = dataclasses.replace(readers[reader], scan_points=max(3, n // SCAN_FIXATIONS))
      targets, noticed = readers_lib.sample_reading(case.regions, n, rng, searcher)
      ellipses = _ellipses(case, p.label, noticed, rng, p.width, p.height)
      folder = main_data / rid
      _write_csv(
        folder / 'anomaly_location_ellipses.csv',
        fmt.ELLIPSE_COORDINATES + fmt.phase_labels(p.phase),
        [
          [*box, c, *(name in tags for name in fmt.phase_labels(p.phase))]
          for box, c, tags in ellipses
        ],
      )
      jitter = rng.normal(0, 0.01 * p.width, 4)
      box = [int(np.clip(v + j, 0, s)) for v, j, s in zip(chest, jitter, [p.width, p.height] * 2)]
      _write_csv(folder / 'chest_bounding_box.csv', fmt.CHEST_BOX_COLUMNS, [box])
      (gaze_data / rid).mkdir(parents=True, exist_ok=True)
      if not discarded:
        off_image = first_off_image or rng.random() < 0.3
        first_off_image = False
        rows = _fixation_rows(targets, p.width, p.height, rng, off_image)
        _write_csv(folder / 'fixations.csv', fmt.FIXATION_COLUMNS, rows)
        if raw_gaze:
          _write_csv(
            gaze_data / rid / 'gaze.csv',
            ('timestamp_sample',) + fmt.FIXATION_COLUMNS[2:],
            _gaze_rows(rows, rng),
          )
        words, text = _transcript(p.label, noticed)
        _write_csv(
          folder / 'timestamps_transcription.csv',
          ('word', 'timestamp_start_word', 'timestamp_end_word'),
          words,
        )
        (folder / 'transcription.txt').write_text(text)
      image = f'physionet.org/files/mimic-cxr/2.0.0/{rel}.dcm'
      metadata[p.phase].append(
        [
          rid,
          p.split,
          discarded,
          image,
          p.dicom_id,
          p.subject_id,
          p.width,
          p.height,
          *_labels(p.phase, ellipses, rng),
        ]
      )
    if progress:
      progress(done, len(plans))
  for phase, rows in metadata.items():
    rows.sort(key=lambda r: r[0] if phase < 3 else r[3])  # phases 1-2 by id, 3 by image
    _write_csv(
      main_data / f'metadata_phase_{phase}.csv', fmt.METADATA_FIXED + fmt.phase_labels(phase), rows
    )
  _write_csv(
    out / TRUTH_FILE,
    ('dicom_id', 'split', 'label', 'height', 'width'),
    [[p.dicom_id, p.split, CLASS_NAMES[p.label], p.height, p.width] for p in plans],
  )
  return plans
