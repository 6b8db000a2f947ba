"""Reference maps (uniform, the prior, the reader ceiling), the prior-relative metrics and the
per-image shortcut measures, against hand-worked cases and independent computations."""

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import test as test_config
from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import evaluate
from mimic_jax.evaluation import references
from mimic_jax.evaluation import saliency_metrics as sm
from mimic_jax.evaluation import shortcut


def test_the_prior_is_the_mean_of_the_training_maps_only(tiny_dataset):
  """Read independently through TFDS: equal to the training split's mean gaze map, and not to
  it with a single test map added."""
  config = test_config.get_config('baseline')
  config.data.data_dir, config.data.manual_dir = tiny_dataset
  prior = evaluate.mean_train_gaze(config)
  name = f'mimic_cxr_egd/{config.data.builder_config}_sigma75'
  train = tfds.data_source(name, split='train', data_dir=config.data.data_dir)
  test = tfds.data_source(name, split='test', data_dir=config.data.data_dir)
  train_maps = np.stack([np.asarray(train[i]['gaze'], np.float64) for i in range(len(train))])
  np.testing.assert_allclose(prior, train_maps.mean(axis=0), rtol=1e-12)
  with_one_test_map = np.concatenate([train_maps, np.asarray(test[0]['gaze'], np.float64)[None]])
  assert not np.allclose(prior, with_one_test_map.mean(axis=0), rtol=1e-6, atol=0)


def test_the_priors_information_gain_over_itself_is_zero():
  rng = np.random.default_rng(0)
  prior = rng.random((16, 16))
  fixations = rng.random((16, 16)) < 0.1
  assert sm.information_gain(prior, fixations, prior) == 0.0
  assert sm.information_gain(prior**2, fixations, prior) != 0.0


def test_sncc_hand_worked():
  """sNCC = CC(map, gaze) - CC(map, prior) on 1 x 4 maps."""
  saliency = np.array([[1.0, 0.0, 0.0, 0.0]])
  gaze = np.array([[0.5, 1.0, 0.0, 0.0]])
  prior = np.array([[1.0, 1.0, 0.0, 0.0]])
  cc_gaze = 0.125 / math.sqrt(0.75 * 0.6875)  # worked in the reader test below
  cc_prior = 0.5 / math.sqrt(0.75 * 1.0)  # deviations (.75,-.25,-.25,-.25) . (.5,.5,-.5,-.5)
  assert sm.sncc(saliency, gaze, prior) == pytest.approx(cc_gaze - cc_prior, abs=1e-12)


def test_the_reader_ceiling_reproduces_a_hand_worked_three_reader_case():
  """Readers A, B, C of one 2 x 2 image; each against the mean of the other two:
  A vs (B + C) / 2 = [.5, 1, 0, 0]: deviations (.75, -.25, -.25, -.25) and
  (.125, .625, -.375, -.375), covariance sum .125, squares .75 and .6875: CC .125 / sqrt(.75 *
  .6875); B vs [.5, .5, 0, 0]: CC 1; C, by symmetry, as A. NSS of A at B's and C's fixations
  (the top row): A z-scored with the n-1 deviation 0.5 is (1.5, -.5, -.5, -.5): mean 0.5."""
  a = [[1.0, 0.0], [0.0, 0.0]]
  b = [[1.0, 1.0], [0.0, 0.0]]
  c = [[0.0, 1.0], [0.0, 0.0]]
  readers = np.asarray([[a, b, c]])  # (N=1, R=3, 2, 2)
  fixations = readers != 0
  trials = references.leave_one_reader_out(readers, fixations)
  assert len(trials) == 3
  np.testing.assert_array_equal(trials[0].gaze[0], [[0.5, 1.0], [0.0, 0.0]])
  np.testing.assert_array_equal(trials[0].fixation_map[0], [[True, True], [False, False]])
  cc_a = 0.125 / math.sqrt(0.75 * 0.6875)
  assert sm.cc(trials[0].maps[0], trials[0].gaze[0]) == pytest.approx(cc_a, abs=1e-12)
  assert sm.nss(trials[0].maps[0], trials[0].fixation_map[0]) == pytest.approx(0.5, abs=1e-12)
  data = {
    'gaze': readers[:, 0],
    'fixation_map': fixations[:, 0],
    'reader_gaze': readers,
    'reader_fixations': fixations,
  }
  summaries, per_image = evaluate._score_references(data, np.ones((2, 2)), fixations[:, 1])
  assert per_image['reader']['cc'][0] == pytest.approx((2 * cc_a + 1) / 3, abs=1e-12)
  assert summaries['reader']['trials'] == 3
  with pytest.raises(ValueError, match='at least 2 readers'):
    references.leave_one_reader_out(readers[:, :1], fixations[:, :1])


def test_reference_rows_score_uniform_and_prior_like_a_model():
  """One reader per image (EGD): uniform and prior rows, no reader row. The prior's IG over
  itself is 0 on every image, its sNCC is CC(prior, gaze) - 1; a uniform map's CC and sNCC are
  undefined (NaN) and its KLD is the KL divergence from the gaze to the uniform density."""
  rng = np.random.default_rng(1)
  gaze = rng.random((5, 8, 8))
  fixations = rng.random((5, 8, 8)) < 0.2
  prior = rng.random((8, 8))
  data = {'gaze': gaze, 'fixation_map': fixations}
  summaries, per_image = evaluate._score_references(data, prior, np.roll(fixations, 1, axis=0))
  assert set(summaries) == {'uniform', 'prior'}
  np.testing.assert_array_equal(per_image['prior']['information_gain'], 0.0)
  for i in range(5):
    assert per_image['prior']['sncc'][i] == pytest.approx(sm.cc(prior, gaze[i]) - 1, abs=1e-12)
    g = gaze[i] / gaze[i].sum()
    expected_kld = np.sum(g * np.log(sm.EPS + g / (1 / 64 + sm.EPS)))
    assert per_image['uniform']['kld'][i] == pytest.approx(expected_kld, rel=1e-9)
  assert np.isnan(per_image['uniform']['cc']).all() and np.isnan(per_image['uniform']['sncc']).all()
  assert summaries['prior']['scores']['kld']['n'] == 5


def test_per_image_shortcut_measures_hand_worked():
  """Two images of class 0: the first keeps its prediction (probability of class 0 from
  e^2 / (e^2 + 2) to 1/3), the second flips (from 1/3 to e^0 / (e^0 + e^3 + 1))."""
  test = np.log(np.array([[math.e**2, 1.0, 1.0], [1.0, 1.0, 1.0]]))
  decoy = np.log(np.array([[1.0, 1.0, 1.0], [1.0, math.e**3, 1.0]]))
  out = shortcut.prediction_changes(test, decoy, np.array([0, 0]))
  assert out['flipped'] == [0.0, 1.0]  # a tie is argmax 0, as numpy breaks it
  p0 = math.e**2 / (math.e**2 + 2)
  assert out['probability_drop'] == pytest.approx([p0 - 1 / 3, 1 / 3 - 1 / (2 + math.e**3)])


def test_paired_difference_interval_contains_the_difference():
  base = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
  other = np.array([1.5, 2.0, 3.5, 4.0, 6.0])
  d, lo, hi = bootstrap.paired_difference_ci(base, other)
  assert d == pytest.approx(np.mean([0.5, 0.0, 0.5, 1.0]))  # the NaN pair is dropped
  assert lo <= d <= hi and lo >= 0.0 and hi <= 1.0


def test_the_share_of_the_way_to_the_ceiling_hand_worked():
  """NSS: prior 1.0, reader 2.0, model 1.5: half way. CC: the reader no better than the prior
  (0.5 against 0.6): no way from one to the other, NaN."""
  scores = lambda nss, cc: {'scores': {'nss': {'mean': nss}, 'cc': {'mean': cc}}}
  refs = {'prior': scores(1.0, 0.6), 'reader': scores(2.0, 0.5)}
  share = evaluate._share_of_ceiling({'nss': {'mean': 1.5}, 'cc': {'mean': 0.7}}, refs)
  assert share['nss'] == pytest.approx(0.5) and math.isnan(share['cc'])
  assert evaluate._share_of_ceiling({'nss': {'mean': 1.5}}, {'prior': refs['prior']}) == {}


def test_sauc_is_the_auc_of_gaze_samples_against_prior_samples():
  """Against its expectation summed over every pixel pair (ties half): with 200,000 samples
  each, within 0.005; a map scored with gaze and prior drawn from the same density: 0.5."""
  rng = np.random.default_rng(3)
  saliency = rng.integers(0, 5, (6, 6)).astype(float)  # ties on purpose
  gaze, prior = rng.random((6, 6)), rng.random((6, 6))
  g, b, s = gaze.ravel() / gaze.sum(), prior.ravel() / prior.sum(), saliency.ravel()
  above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
  expected = float(g @ above @ b)
  assert sm.sauc(saliency, gaze, prior, n=200_000, seed=0) == pytest.approx(expected, abs=0.005)
  assert sm.sauc(saliency, prior, prior, n=200_000, seed=1) == pytest.approx(0.5, abs=0.005)
  assert math.isnan(sm.sauc(saliency, np.zeros((6, 6)), prior))
