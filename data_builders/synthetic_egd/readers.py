"""Simulated radiologists: where each reader of a synthetic image fixates.

Two kinds of reader (``data.synthetic.reader``):

- ``realistic`` (the default): a centre-biased systematic search of the lungs, plus a dwell on
  the class's finding that happens only when this reader notices it (a per-reader probability).
  Calibrated to what real readers do (``calibration``): on REFLACX, a reader's gaze heatmap
  correlates with the abnormality ellipses at NCC 0.380, barely above a centre-bias map's
  0.326, and one reader's heatmap with the mean of the four others at NCC 0.632 (Bigolin
  Lanfredi et al., Sci Data 9:350, 2022, and arXiv 2112.11716).
- ``evidence``: a perfect evidence mask for known-answer tests: every fixation lands on a region
  of interest drawn with the image, the finding weighted most (about two thirds of a pneumonia
  image's fixations land on its consolidation), never on the shortcut marker.

Reader 0 is the EGD reading (``fixations.csv``); readers 1..R-1 read a subset of the images
(``synthetic_readers.csv``), as REFLACX's five readers read 109 of its images.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import dataclasses
import os

import numpy as np

from data_builders.synthetic_egd import anatomy

READER_KINDS = ('realistic', 'evidence')
# Beside a synthetic tree: every reader's fixations (original pixels) of the images several
# readers read: ``dicom_id, reader, X_ORIGINAL, Y_ORIGINAL``.
READINGS_FILE = 'synthetic_readers.csv'


@dataclasses.dataclass(frozen=True)
class Reader:
  """One simulated radiologist (``realistic``).

  Attributes:
    notice: probability that this reader notices an image's finding and dwells on it.
    dwell_share: share of the fixations on the finding once noticed.
    lung_share: share of the other fixations that search the lungs (each lung's region); the
      rest follow the centre bias.
    centre: ``(u, v)`` centre of the centre-biased fixations, image fractions.
    centre_sd: ``(su, sv)`` their spread, image fractions.
    scan_points: how many places in the lungs one reading's search visits (drawn per reading);
      its lung fixations fall around them.
    scan_sd: the spread of the fixations around a scan point, image fractions.
  """

  notice: float
  dwell_share: float = 0.5
  lung_share: float = 0.8
  centre: tuple[float, float] = (0.5, 0.5)
  centre_sd: tuple[float, float] = (0.16, 0.17)
  scan_points: int = 3
  scan_sd: float = 0.025


# The readers' mean probability of noticing a finding, and its spread across readers.
NOTICE_MEAN, NOTICE_SD = 0.8, 0.1


def make_readers(num_readers: int, seed: int) -> list[Reader]:
  """``num_readers`` realistic readers, each noticing findings with its own probability."""
  rng = np.random.default_rng((seed, 0x5EAD))
  notice = np.clip(rng.normal(NOTICE_MEAN, NOTICE_SD, num_readers), 0.05, 0.98)
  return [Reader(notice=float(p)) for p in notice]


def _around(region: anatomy.Region, rng: np.random.Generator) -> tuple[float, float]:
  return region.u + rng.normal(0, region.su), region.v + rng.normal(0, region.sv)


def sample_targets(
  regions: Sequence[anatomy.Region],
  n: int,
  rng: np.random.Generator,
  reader: Reader | None,
) -> np.ndarray:
  """``(n, 2)`` fixation targets ``(u, v)`` in image fractions of one reading of an image
  whose regions of interest are ``regions``; ``reader=None``: the ``evidence`` reader."""
  if reader is None:
    return anatomy.sample_gaze_targets(list(regions), n, rng)
  return sample_reading(regions, n, rng, reader)[0]


def sample_reading(
  regions: Sequence[anatomy.Region], n: int, rng: np.random.Generator, reader: Reader
) -> tuple[np.ndarray, bool]:
  """``(targets (n, 2), noticed)``: :func:`sample_targets` of a realistic reader, and whether
  this reading noticed the image's finding (what the reader would then report)."""
  evidence = [r for r in regions if r.evidence]
  lungs = [r for r in regions if r.name.endswith('lung')]
  noticed = bool(evidence) and rng.random() < reader.notice
  weights = np.asarray([r.weight for r in evidence]) if evidence else None
  scan = [_around(lungs[k % len(lungs)], rng) for k in range(reader.scan_points)]
  out = np.empty((n, 2))
  for i in range(n):
    if noticed and rng.random() < reader.dwell_share:
      out[i] = _around(evidence[rng.choice(len(evidence), p=weights / weights.sum())], rng)
    elif rng.random() < reader.lung_share:
      su, sv = scan[rng.integers(len(scan))]
      out[i] = (su + rng.normal(0, reader.scan_sd), sv + rng.normal(0, reader.scan_sd))
    else:
      out[i] = (
        reader.centre[0] + rng.normal(0, reader.centre_sd[0]),
        reader.centre[1] + rng.normal(0, reader.centre_sd[1]),
      )
  return np.clip(out, 0.01, 0.99), noticed


def evidence_mask(regions: Sequence[anatomy.Region], size: int, radius: float = 0.9) -> np.ndarray:
  """``(size, size)`` bool: the image's finding as an abnormality ellipse would outline it,
  each evidence region's ellipse at ``radius`` standard deviations, on the square grid the
  heatmaps are resized to."""
  v, u = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing='ij')
  mask = np.zeros((size, size), bool)
  for r in regions:
    if r.evidence:
      mask |= ((u - r.u) / (radius * r.su)) ** 2 + ((v - r.v) / (radius * r.sv)) ** 2 <= 1
  return mask


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def calibration(
  num_images: int = 60,
  num_readers: int = 5,
  seed: int = 0,
  size: int = 64,
  scale: float = 0.5,
) -> dict[str, float]:
  """The numbers the realistic reader is calibrated to, measured on ``num_images`` abnormal
  synthetic images (half CHF, half pneumonia) read by ``num_readers`` readers, with the
  heatmaps of the builder (official EGD recipe, sigma 150 px at full size):

  - ``reader_vs_evidence``: NCC of a reader's heatmap with the evidence mask (REFLACX 0.380);
  - ``prior_vs_evidence``: NCC of the centre-bias map (the mean heatmap over all images and
    readers) with the evidence mask (REFLACX 0.326);
  - ``reader_vs_readers``: NCC of a reader's heatmap with the mean heatmap of the others
    (REFLACX 0.632).

  Each is a mean over images (and readers) as REFLACX averages per image.
  """
  from data_builders.mimic_cxr_egd import gaze_maps

  rng = np.random.default_rng(seed)
  readers = make_readers(num_readers, seed)
  height, width = 2 * round(3056 * scale / 2), 2 * round(2544 * scale / 2)
  heat, masks = [], []
  for i in range(num_images):
    label = anatomy.CHF if i % 2 == 0 else anatomy.PNEUMONIA
    case = anatomy.render_case(label, height, width, rng, marker_corner=None)
    maps = []
    for reader in readers:
      n = int(np.clip(rng.poisson(28), 4, 70))
      uv = sample_targets(case.regions, n, rng, reader)
      x, y = (uv[:, 0] * width).astype(int), (uv[:, 1] * height).astype(int)
      maps.append(gaze_maps.static_heatmap(x, y, (height, width), size, 150.0 * scale))
    heat.append(maps)
    masks.append(evidence_mask(case.regions, size).astype(np.float64))
  heat = np.asarray(heat, np.float64)  # (N, R, S, S)
  prior = heat.mean(axis=(0, 1))
  reader_vs_evidence = [
    np.mean([_ncc(h, m) for h in per_image]) for per_image, m in zip(heat, masks)
  ]
  loo = [
    np.mean(
      [_ncc(per_image[r], np.delete(per_image, r, axis=0).mean(axis=0)) for r in range(num_readers)]
    )
    for per_image in heat
  ]
  return {
    'reader_vs_evidence': float(np.mean(reader_vs_evidence)),
    'prior_vs_evidence': float(np.mean([_ncc(prior, m) for m in masks])),
    'reader_vs_readers': float(np.mean(loo)),
  }


# What ``calibration`` aims at (REFLACX, see the module docstring).
TARGETS = {'reader_vs_evidence': 0.380, 'prior_vs_evidence': 0.326, 'reader_vs_readers': 0.632}


def reader_maps(
  manual_dir: str | os.PathLike, dicom_ids: Sequence[str], size: int, sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """The readings of the images among ``dicom_ids`` that several readers read, as the builder
  makes a reading's maps (official EGD heatmap with ``sigma`` original pixels, ``size`` x
  ``size``): ``(indices into dicom_ids, heatmaps (n, R, S, S), fixation maps (n, R, S, S))``;
  ``None`` if the tree in ``manual_dir`` has no such images."""
  from data_builders.mimic_cxr_egd import gaze_maps

  path = os.path.join(manual_dir, READINGS_FILE)
  if not os.path.exists(path):
    return None
  fixations: dict[str, dict[int, list[tuple[int, int]]]] = {}
  with open(path, newline='') as f:
    for row in csv.DictReader(f):
      per_reader = fixations.setdefault(row['dicom_id'], {})
      per_reader.setdefault(int(row['reader']), []).append(
        (int(row['X_ORIGINAL']), int(row['Y_ORIGINAL']))
      )
  with open(os.path.join(manual_dir, 'synthetic_truth.csv'), newline='') as f:
    sizes = {r['dicom_id']: (int(r['height']), int(r['width'])) for r in csv.DictReader(f)}
  indices, heat, fix = [], [], []
  for i, dicom_id in enumerate(dicom_ids):
    if dicom_id not in fixations:
      continue
    shape = sizes[dicom_id]
    maps, points = [], []
    for _, xy in sorted(fixations[dicom_id].items()):
      x, y = np.asarray(xy).T
      maps.append(gaze_maps.static_heatmap(x, y, shape, size, sigma))
      points.append(gaze_maps.fixation_map(x, y, shape, size))
    indices.append(i)
    heat.append(maps)
    fix.append(points)
  if not indices:
    return None
  return np.asarray(indices), np.asarray(heat, np.float64), np.asarray(fix)
