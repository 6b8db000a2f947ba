"""REFLACX ellipses as masks, by hand: which pixels an inscribed ellipse covers, which
ellipses count (certainty > 2), and NCC / IoU against hand-computed values."""

import numpy as np
import pytest

from data_builders.reflacx import ellipses


def test_an_inscribed_ellipse_by_hand():
  """Box [0, 0, 4, 2]: centre (2, 1), half-sides 2 and 1. Row 1 holds columns 0-4 (the
  ends touch the box); rows 0 and 2 only the centre column."""
  expected = np.zeros((3, 5), bool)
  expected[1, :] = True
  expected[0, 2] = expected[2, 2] = True
  np.testing.assert_array_equal(ellipses.ellipse_mask((0, 0, 4, 2), 5, 3), expected)
  assert not ellipses.ellipse_mask((2, 2, 2, 5), 5, 3).any()  # degenerate box


def test_only_certain_ellipses_count_per_label():
  """Three ellipses: certainty 4 marking A and B, certainty 2 marking A (dropped), certainty 3
  marking B elsewhere."""
  rows = {
    'xmin': np.array([0.0, 0.0, 4.0]),
    'ymin': np.array([0.0, 0.0, 0.0]),
    'xmax': np.array([2.0, 6.0, 6.0]),
    'ymax': np.array([2.0, 2.0, 2.0]),
    'certainty': np.array([4.0, 2.0, 3.0]),
    'A': np.array([1.0, 1.0, 0.0]),
    'B': np.array([1.0, 0.0, 1.0]),
  }
  masks = ellipses.label_masks(rows, ['A', 'B'], 7, 3)
  first = ellipses.ellipse_mask((0, 0, 2, 2), 7, 3)
  third = ellipses.ellipse_mask((4, 0, 6, 2), 7, 3)
  np.testing.assert_array_equal(masks['A'], first)
  np.testing.assert_array_equal(masks['B'], first | third)


def test_ncc_and_iou_by_hand():
  a = np.array([[1.0, 0.0], [0.0, 0.0]])
  b = np.array([[1.0, 1.0], [0.0, 0.0]])
  # deviations from the means (1/4, 1/2): products sum to 0.5, squares to 3/4 and 1
  assert ellipses.ncc(a, b) == pytest.approx(0.5 / np.sqrt(0.75 * 1.0))
  assert ellipses.iou(a > 0, b > 0) == pytest.approx(0.5)
  assert np.isnan(ellipses.ncc(a, np.ones((2, 2))))
  assert np.isnan(ellipses.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
