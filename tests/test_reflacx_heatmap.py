"""REFLACX's official heatmap and fixation filter on hand-worked cases (scipy's normal density
as the independent reference)."""

import numpy as np
import pytest
from scipy import stats

from data_builders.reflacx import heatmap


def _fixations(rows):
  """Columns of fixations.csv from ``(x, y, start, end, res_x, res_y, shown, drawn)`` rows."""
  names = ('x_position', 'y_position', 'timestamp_start_fixation', 'timestamp_end_fixation')
  names += ('angular_resolution_x_pixels_per_degree', 'angular_resolution_y_pixels_per_degree')
  out = {n: np.array([r[i] for r in rows], np.float64) for i, n in enumerate(names)}
  for where, k in (('shown_from_image', 6), ('in_screen_coordinates', 7)):
    for j, a in enumerate(('xmin', 'ymin', 'xmax', 'ymax')):
      out[f'{a}_{where}'] = np.array([r[k][j] for r in rows], np.float64)
  return out


FULL, DRAWN = (0, 0, 6, 4), (1500, 1000, 2100, 1400)  # a 6 x 4 image drawn 100x on screen


def test_two_fixations_one_zoomed_against_the_formula():
  """A at (1, 1), sigma 1 px, 0.5 s, the whole image shown; B at (4, 2), sigma (2, 1) px,
  0.25 s, zoomed so that only columns 3-5 were shown: B's Gaussian is cut at column 3 and not
  renormalised. Hand value: A alone at its own pixel is 0.5 / (2 pi)."""
  fix = _fixations(
    [
      (1, 1, 1.0, 1.5, 1, 1, FULL, DRAWN),
      (4, 2, 2.0, 2.25, 2, 1, (3, 0, 6, 4), DRAWN),
    ]
  )
  got = heatmap.heatmap(fix, 6, 4)
  rows, cols = np.mgrid[0:4, 0:6]
  a = 0.5 * stats.norm.pdf(cols, 1, 1) * stats.norm.pdf(rows, 1, 1)
  b = 0.25 * stats.norm.pdf(cols, 4, 2) * stats.norm.pdf(rows, 2, 1) * (cols >= 3)
  np.testing.assert_allclose(got, (a + b) / (a + b).sum(), rtol=1e-12)
  assert a[1, 1] == pytest.approx(0.5 / (2 * np.pi))
  assert got.sum() == pytest.approx(1.0) and got[:, :3].min() > 0
  only_a = heatmap.heatmap(_fixations([(1, 1, 1.0, 1.5, 1, 1, FULL, DRAWN)]), 6, 4)
  np.testing.assert_allclose(got[:, :3] / got[:, :3].sum(), only_a[:, :3] / only_a[:, :3].sum())


def test_off_image_fixations_add_their_tail_and_the_filter_decides_the_fixation_map():
  """Off the image at x = -3 (3 degrees away, far from the buttons): its Gaussian's tail
  counts in the heatmap, the filter drops it. At x = -0.3 (0.3 degrees): kept, and it rounds
  onto column 0. The same 0.3 degrees, drawn next to the buttons: dropped."""
  near_buttons = (300, 1100, 900, 1500)  # image (-0.3, 0.5) at screen (270, 1150): 28 px off
  fix = _fixations(
    [
      (2, 2, 0.0, 1.0, 1, 1, FULL, DRAWN),
      (-3, 1, 1.0, 2.0, 1, 1, FULL, DRAWN),
      (-0.3, 3, 2.0, 2.1, 1, 1, FULL, DRAWN),
      (-0.3, 0.5, 3.0, 3.1, 1, 1, FULL, near_buttons),
    ]
  )
  np.testing.assert_array_equal(heatmap.kept_fixations(fix), [True, False, True, False])
  expected = np.zeros((4, 6), np.uint8)
  expected[2, 2] = expected[3, 0] = 1
  np.testing.assert_array_equal(heatmap.fixation_map(fix, 6, 4), expected)
  rows, cols = np.mgrid[0:4, 0:6]
  tail = stats.norm.pdf(cols, -3, 1) * stats.norm.pdf(rows, 1, 1)
  first = stats.norm.pdf(cols, 2, 1) * stats.norm.pdf(rows, 2, 1)
  edge = (
    0.1
    * stats.norm.pdf(cols, -0.3, 1)
    * (stats.norm.pdf(rows, 3, 1) + stats.norm.pdf(rows, 0.5, 1))
  )
  total = first + tail + edge
  np.testing.assert_allclose(heatmap.heatmap(fix, 6, 4), total / total.sum(), rtol=1e-12)


def test_a_reading_with_no_mass_on_the_image_and_a_missing_column_are_named():
  far = _fixations([(-100, -100, 0.0, 1.0, 1, 1, FULL, DRAWN)])
  with pytest.raises(ValueError, match='no fixation of the 1 puts mass on the 6 x 4 image'):
    heatmap.heatmap(far, 6, 4)
  del far['angular_resolution_y_pixels_per_degree']
  with pytest.raises(KeyError, match='angular_resolution_y_pixels_per_degree'):
    heatmap.heatmap(far, 6, 4)


def test_reading_maps_from_the_tree(tmp_path):
  """A reading's maps come from main_data/<id>/fixations.csv at the image's size; a discarded
  reading has none; a missing file of a kept reading is named."""
  from data_builders.reflacx import reflacx_format

  folder = tmp_path / 'P102R000001'
  folder.mkdir()
  row = ['0.0', '0.5', '2', '1', '1.0', '1', '1', '1.0', '0.5', '0', '0', '6', '4']
  row += ['1500', '1000', '2100', '1400']
  (folder / 'fixations.csv').write_bytes(
    (','.join(reflacx_format.FIXATION_COLUMNS) + '\r\n' + ','.join(row) + '\r\n').encode()
  )
  reading = {
    'id': 'P102R000001',
    'eye_tracking_data_discarded': False,
    'image_size_x': 6,
    'image_size_y': 4,
  }
  gaze, fixations = heatmap.reading_maps(str(tmp_path), reading)
  rows, cols = np.mgrid[0:4, 0:6]
  expected = stats.norm.pdf(cols, 2, 1) * stats.norm.pdf(rows, 1, 1)
  np.testing.assert_allclose(gaze, expected / expected.sum(), rtol=1e-12)
  assert fixations.sum() == 1 and fixations[1, 2] == 1
  assert (
    heatmap.reading_maps(str(tmp_path), {**reading, 'eye_tracking_data_discarded': True}) is None
  )
  with pytest.raises(FileNotFoundError, match='P102R000002/fixations.csv is missing'):
    heatmap.reading_maps(str(tmp_path), {**reading, 'id': 'P102R000002'})
