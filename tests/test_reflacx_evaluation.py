"""Scoring explanations on REFLACX: the reader ceiling and the other rows on a hand-worked
case, the prior that leaves the image out, and the command on trained runs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mimic_jax.evaluation import reflacx_eval


def _reading(maps, discarded=None, ellipses=None):
  maps = np.asarray(maps, np.float64)
  fix = (maps == maps.max(axis=(1, 2), keepdims=True)).astype(np.uint8)
  return {
    'gaze': maps,
    'fixation_map': fix,
    'discarded': np.zeros(len(maps), bool) if discarded is None else np.asarray(discarded),
    'ellipse_union': np.zeros(maps.shape, bool) if ellipses is None else np.asarray(ellipses),
  }


def test_the_ceiling_and_the_model_rows_on_a_hand_worked_case():
  """Three readers of one 2 x 2 image: r0 = r1 = top-left, r2 = bottom-right. Pearson of two
  one-hot 4-vectors at different places is -1/3; of a one-hot with a two-hot holding it,
  1/sqrt(3). Reader ceiling: (1/sqrt(3) + 1/sqrt(3) - 1/3) / 3. A model that says top-left:
  against each reader (1 + 1 - 1/3) / 3; against the other readers (1/sqrt(3) * 2 + 1) / 3."""
  tl, br = [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]
  ellipse = np.zeros((3, 2, 2), bool)
  ellipse[0, 0, 0] = True  # reader 0 drew an ellipse on the top-left pixel
  readings = [_reading([tl, tl, br], ellipses=ellipse)]
  model = np.asarray([tl])
  prior = np.full((1, 2, 2), 0.25)
  summaries, per_image = reflacx_eval.score_tables(
    {'model': model}, readings, prior, readings[0]['fixation_map'][:1]
  )
  r3 = 1 / math.sqrt(3)
  assert per_image['ceiling']['reader']['cc'][0] == pytest.approx((2 * r3 - 1 / 3) / 3)
  assert per_image['ceiling']['model']['cc'][0] == pytest.approx((2 * r3 + 1) / 3)
  assert per_image['readers']['model']['cc'][0] == pytest.approx((2 - 1 / 3) / 3)
  # NSS standardises with the sample standard deviation (0.5 here): 1.5 top-left, -0.5 elsewhere.
  assert per_image['readers']['model']['nss'][0] == pytest.approx((1.5 + 1.5 - 0.5) / 3)
  assert per_image['ellipses']['model']['ncc'][0] == pytest.approx(1.0)
  assert per_image['ellipses']['model']['iou'][0] == pytest.approx(1.0)
  assert per_image['ellipses']['reader']['ncc'][0] == pytest.approx(1.0)  # reader 0's own gaze
  assert 'uniform' not in per_image['ellipses']
  assert np.isnan(per_image['readers']['uniform']['cc'][0])  # a constant map has no correlation
  assert summaries['ceiling']['reader']['cc']['n'] == 1


def test_a_discarded_reading_is_skipped_and_the_ceiling_needs_every_reader():
  tl, br = [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]
  zero = [[0.0, 0.0], [0.0, 0.0]]
  readings = [_reading([tl, br, zero], discarded=[False, False, True])]
  _, per_image = reflacx_eval.score_tables(
    {'model': np.asarray([tl])}, readings, np.full((1, 2, 2), 0.25), np.zeros((1, 2, 2))
  )
  assert per_image['readers']['model']['cc'][0] == pytest.approx((1 - 1 / 3) / 2)
  assert per_image['ceiling'] == {}


def test_the_prior_leaves_the_scored_image_out():
  a, b, c = (np.eye(2)[None] * k for k in (1.0, 2.0, 4.0))
  every = [_reading(a), _reading(np.concatenate([b, c])), _reading(c)]
  prior = reflacx_eval.prior_excluding(every, every[:2])
  np.testing.assert_allclose(prior[0], (b[0] + c[0] + c[0]) / 3)
  np.testing.assert_allclose(prior[1], (a[0] + c[0]) / 2)


def test_top_area_mask_takes_the_highest_pixels():
  saliency = np.asarray([[0.1, 0.9], [0.5, 0.3]])
  np.testing.assert_array_equal(
    reflacx_eval.top_area_mask(saliency, 2), [[False, True], [True, False]]
  )


def test_training_on_reflacx_and_the_command_on_its_run(tiny_reflacx, tmp_path):
  """gaze trains on the tiny synthetic REFLACX tree through main.py; the documented command
  scores it on every split, leaving out the images it trained on, with the prior and
  ceiling rows."""
  data_dir, manual_dir = tiny_reflacx
  workdir = tmp_path / 'gaze_reflacx'
  common = [f'--config.data.data_dir={data_dir}', f'--config.data.manual_dir={manual_dir}']
  out = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--config=configs/test.py:gaze,reflacx',
      f'--workdir={workdir}',
      '--mode=train_and_evaluate',
      *common,
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert (workdir / 'eval' / 'test' / 'metrics.json').exists()
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'mimic_jax.evaluate_reflacx',
      f'--workdir={workdir}',
      '--splits=train,validation,test',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((workdir / 'eval_reflacx' / 'metrics.json').read_text())
  import tensorflow_datasets as tfds

  train = tfds.data_source('reflacx/64', split='train', data_dir=data_dir)
  assert results['left_out_trained_images'] == len(train)
  assert results['num_images'] == sum(
    len(tfds.data_source('reflacx/64', split=s, data_dir=data_dir)) for s in ('validation', 'test')
  )
  for row in ('| grad_cam |', '| prior |', '| uniform |'):
    assert row in out.stdout


def test_the_report_says_when_the_runs_training_images_are_unknown():
  entry = {'mean': 0.5, 'ci95': [0.4, 0.6], 'n': 3, 'nan': 0}
  scores = {m: entry for m in reflacx_eval.SHOWN_METRICS}
  results = {
    'workdir': 'RUN',
    'checkpoint': None,
    'trained_on': 'mimic_cxr_egd (gs://elsewhere)',
    'reflacx': {'build': 'reflacx/64/1.0.0'},
    'splits': ['test'],
    'num_images': 3,
    'images_every_reader_read': 0,
    'left_out_trained_images': 0,
    'training_images_known': False,
    'tables': {'readers': {'grad_cam': scores, 'prior': scores}, 'ceiling': {}, 'ellipses': {}},
  }
  text = reflacx_eval.markdown_report(results)
  assert 'training images are unknown here, so none was left out' in text
  assert '| grad_cam | 0.500 [0.400, 0.600] |' in text and 'No image qualifies.' in text
