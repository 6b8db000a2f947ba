"""The fast separable heatmap against the full-resolution scipy reference."""

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

from data_builders.mimic_cxr_egd import gaze_maps


def _cc(a, b):
  return np.corrcoef(a.ravel(), b.ravel())[0, 1]


@pytest.mark.parametrize(
  'size,shape,n', [(224, (3056, 2544), 40), (128, (2544, 3056), 7), (64, (2992, 2500), 1)]
)
def test_static_heatmap_matches_full_resolution_reference(size, shape, n):
  rng = np.random.default_rng(n)
  h, w = shape
  y = rng.integers(0, h, n)
  x = rng.integers(0, w, n)
  x[0], y[0] = 0, h - 1  # a fixation on the border exercises the reflecting boundary
  fast = gaze_maps.static_heatmap(x, y, shape, size, sigma=150.0)
  record = np.zeros(shape)
  np.add.at(record, (y, x), 1.0)
  full = ndimage.gaussian_filter(record, 150.0)  # the official call, scipy defaults
  ref = np.asarray(
    Image.fromarray(full.astype(np.float32), 'F').resize((size, size), Image.Resampling.BOX),
    np.float64,
  )
  ref /= ref.sum()
  assert fast.shape == (size, size) and fast.dtype == np.float32
  assert fast.sum() == pytest.approx(1.0, abs=1e-5)
  assert _cc(fast, ref) >= 0.999
  np.testing.assert_allclose(fast, ref, atol=2e-3 * ref.max())


@pytest.mark.parametrize('src_len,dst', [(37, 10), (30, 10), (7, 3)])
def test_area_resize_matrix_averages_covered_area(src_len, dst):
  src = np.random.default_rng(0).random(src_len)
  # Independent: repeat every source pixel dst times; each output averages src_len of them.
  ref = np.repeat(src, dst).reshape(dst, src_len).mean(axis=1)
  np.testing.assert_allclose(gaze_maps.area_resize_matrix(src_len, dst) @ src, ref, rtol=1e-12)


def test_reference_heatmap_agrees_with_fast_one_exactly_on_small_grid():
  x, y = np.array([3, 40, 40, 77]), np.array([0, 50, 51, 89])
  fast = gaze_maps.static_heatmap(x, y, (90, 78), 16, sigma=6.0)
  ref = gaze_maps.reference_static_heatmap(x, y, (90, 78), 16, sigma=6.0)
  np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-9)


def test_repeated_fixations_count_twice():
  one = gaze_maps.static_heatmap([10, 90], [20, 50], (100, 100), 20, sigma=5)
  two = gaze_maps.static_heatmap([10, 10, 90], [20, 20, 50], (100, 100), 20, sigma=5)
  # The doubled fixation's bump carries 2/3 of the mass instead of 1/2.
  assert two[:10, :10].sum() == pytest.approx(2 / 3, abs=0.01)
  assert one[:10, :10].sum() == pytest.approx(1 / 2, abs=0.01)


def test_fixation_map_marks_the_cell_of_each_fixation():
  fm = gaze_maps.fixation_map([0, 99, 50, 50], [0, 99, 25, 26], (100, 100), 10)
  expected = np.zeros((10, 10), np.uint8)
  expected[0, 0] = expected[9, 9] = expected[2, 5] = 1
  np.testing.assert_array_equal(fm, expected)


def test_off_image_fixations_are_refused():
  with pytest.raises(ValueError, match='in-image'):
    gaze_maps.static_heatmap([-2], [5], (10, 10), 4)
  np.testing.assert_array_equal(
    gaze_maps.in_image_mask(np.array([-1, 0, 9, 10]), np.array([0, 0, 9, 0]), 10, 10),
    [False, True, True, False],
  )
