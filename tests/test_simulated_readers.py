"""The simulated radiologists: the realistic reader's calibration against REFLACX's published
numbers, the perfect evidence reader kept for known-answer tests, and the several readers'
readings that the reader ceiling scores."""

import csv

from etils import epath
import numpy as np
import pytest

from data_builders.mimic_cxr_egd import gaze_maps
from data_builders.synthetic_egd import anatomy
from data_builders.synthetic_egd import generate
from data_builders.synthetic_egd import readers


def test_the_realistic_reader_is_calibrated_to_reflacx():
  """On a fixed seed, each calibration number within 0.05 of REFLACX's: a reader's heatmap
  against the finding's ellipse (0.380), the centre-bias map against it (0.326), one reader
  against the mean of the others (0.632); and the reader above the centre bias."""
  measured = readers.calibration(num_images=60, seed=0)
  for key, target in readers.TARGETS.items():
    assert measured[key] == pytest.approx(target, abs=0.05), (key, measured)
  assert measured['reader_vs_evidence'] > measured['prior_vs_evidence']


def _share_on_consolidation(reader, n_images=40):
  rng = np.random.default_rng(5)
  shares = []
  for _ in range(n_images):
    case = anatomy.render_case(anatomy.PNEUMONIA, 300, 250, rng, marker_corner=None)
    (cons,) = [r for r in case.regions if r.name == 'consolidation']
    uv = readers.sample_targets(case.regions, 200, rng, reader)
    inside = ((uv[:, 0] - cons.u) / (2 * cons.su)) ** 2 + ((uv[:, 1] - cons.v) / (2 * cons.sv)) ** 2
    shares.append(np.mean(inside <= 1))
  return float(np.mean(shares))


def test_the_evidence_reader_fixates_the_finding_more_than_the_realistic_one():
  """Share of a pneumonia image's fixations within 2 SD of its consolidation (measured: 0.61
  for the perfect reader, whose weights give 5 / 8.6 = 0.58 of the picks to the consolidation
  plus lung fixations that land on it; 0.49 for the realistic reader, which dwells on it only
  when it notices it and otherwise searches the lungs and the centre)."""
  perfect = _share_on_consolidation(None)
  realistic = _share_on_consolidation(readers.make_readers(1, 0)[0])
  assert 0.55 <= perfect <= 0.8
  assert realistic < perfect - 0.08


def test_the_marker_is_never_a_region_of_either_reader():
  rng = np.random.default_rng(0)
  case = anatomy.render_case(anatomy.CHF, 300, 250, rng, marker_corner=1)
  mu, mv = anatomy.CORNERS[1]
  hu, hv = anatomy.MARKER_HALF_SIDES
  for reader in (None, readers.make_readers(1, 0)[0]):
    uv = readers.sample_targets(case.regions, 2000, rng, reader)
    on_marker = (np.abs(uv[:, 0] - mu) < hu) & (np.abs(uv[:, 1] - mv) < hv)
    assert on_marker.mean() < 0.01


def test_several_readers_read_a_share_of_the_images(tmp_path):
  """Reader 0 of synthetic_readers.csv is the EGD reading's targets; the maps of the reader
  ceiling are the builder's heatmaps of each reader's fixations."""
  specs = generate.write_tree(
    tmp_path, 30, seed=2, scale=0.2, raw_gaze=False, num_workers=0, multi_reader_share=0.5
  )
  with open(tmp_path / readers.READINGS_FILE, newline='') as f:
    rows = list(csv.DictReader(f))
  per_image = {}
  for r in rows:
    per_image.setdefault(r['dicom_id'], set()).add(int(r['reader']))
  assert 8 <= len(per_image) <= 22  # about half of 30
  assert all(found == set(range(5)) for found in per_image.values())
  ids = [s.dicom_id for s in specs]
  index, heat, fix = readers.reader_maps(tmp_path, ids, 16, 30.0)
  assert sorted(ids[i] for i in index) == sorted(per_image)
  assert heat.shape == (len(per_image), 5, 16, 16) and fix.shape == heat.shape
  first = ids[index[0]]
  spec = specs[index[0]]
  xy = np.array(
    [
      (int(r['X_ORIGINAL']), int(r['Y_ORIGINAL']))
      for r in rows
      if r['dicom_id'] == first and r['reader'] == '2'
    ]
  )
  expected = gaze_maps.static_heatmap(xy[:, 0], xy[:, 1], (spec.height, spec.width), 16, 30.0)
  np.testing.assert_allclose(heat[0, 2], expected, rtol=1e-6)
  # The evidence reader writes no several-reader readings.
  generate.write_tree(
    tmp_path / 'e', 6, seed=2, scale=0.2, raw_gaze=False, num_workers=0, reader='evidence'
  )
  assert epath.Path(tmp_path / 'e' / readers.READINGS_FILE).read_text().count('\n') == 1
