"""The evaluation's wiring: which map is scored against the gaze heatmap and which against the
fixation map, the released code's ensemble Grad-CAM target, the shortcut's corner mass, and
the counts behind every mean."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mimic_jax.evaluation import evaluate
from mimic_jax.evaluation import shortcut
from mimic_jax.evaluation import validation
from mimic_jax.methods import base

EPS = np.finfo(np.float64).eps


def test_kld_against_the_heatmap_and_nss_against_the_fixations():
  """A 2 x 2 fixture worked by hand: saliency S = [[1, 3], [0, 0]], gaze G = [[0.5, 0.5],
  [0, 0]], fixations at (0, 0) and (1, 1) (where G is zero, so NSS and KLD see different
  things). KLD(G || S / 4) = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75); NSS: S z-scored with the
  N - 1 std (mean 1, std sqrt(6 / 3) = sqrt 2) at the fixated pixels: (0 + -1 / sqrt 2) / 2."""
  s = np.array([[[1.0, 3.0], [0.0, 0.0]]])
  g = np.array([[[0.5, 0.5], [0.0, 0.0]]])
  f = np.array([[[1, 0], [0, 1]]], np.uint8)
  scores = evaluate._score_maps(s, g, f, np.ones_like(f), np.full((2, 2), 0.25))
  kld = 0.5 * math.log(EPS + 0.5 / (0.25 + EPS)) + 0.5 * math.log(EPS + 0.5 / (0.75 + EPS))
  assert scores['kld'][0] == pytest.approx(kld, rel=1e-12)
  assert scores['nss'][0] == pytest.approx((0.0 - 1.0 / math.sqrt(2)) / 2, rel=1e-12)
  # CC with the heatmap: corr([1, 3, 0, 0], [0.5, 0.5, 0, 0]) by hand.
  sv, gv = np.array([1.0, 3, 0, 0]), np.array([0.5, 0.5, 0, 0])
  cc = np.mean((sv - 1) * (gv - 0.25)) / (np.std(sv) * np.std(gv))
  assert scores['cc'][0] == pytest.approx(cc, rel=1e-12)


def test_summaries_count_the_images_and_the_nans():
  summary = evaluate._summarise({'nss': [1.0, float('nan'), 3.0], 'kld': [1.0, 2.0, 3.0]})
  assert summary['nss']['mean'] == pytest.approx(2.0)
  assert (summary['nss']['n'], summary['nss']['nan']) == (2, 1)
  assert (summary['kld']['n'], summary['kld']['nan']) == (3, 0)


class _TwoLayer(nn.Module):
  """A feature map A = relu(conv(x)) (exposed as 'feat'); logits = mean_hw(A) @ W."""

  @nn.compact
  def __call__(self, x, train=False):
    a = nn.relu(nn.Conv(4, (3, 3))(x))
    a = self.perturb('feat', a)
    self.sow('intermediates', 'feat', a)
    return nn.Dense(3)(jnp.mean(a, axis=(1, 2)))


def test_ensemble_log_softmax_target_is_the_gradient_of_the_ensemble_output():
  """The released code's ensemble Grad-CAM backpropagates the ensemble's mean log-softmax to
  each sub-model's feature map. ``member_grad_cams(target='log_softmax')`` averaged over the
  sub-models is that map times M (independently: the gradient of the ensemble's score with
  respect to every sub-model's perturbation at once)."""
  model = _TwoLayer()
  x = jax.random.normal(jax.random.key(1), (2, 6, 6, 2))
  y = jnp.array([0, 2])
  m = 3
  variables = jax.vmap(lambda k: model.init(k, x))(jax.random.split(jax.random.key(0), m))
  variables = {'params': variables['params']}
  ours = base.member_grad_cams(model.apply, variables, x, y, layer='feat', target='log_softmax')

  def ensemble_score(perturbations):
    def one(v, p):
      logits, state = model.apply({**v, 'perturbations': {'feat': p}}, x, mutable=['intermediates'])
      return jax.nn.log_softmax(logits), state['intermediates']['feat'][0]

    logp, feats = jax.vmap(one)(variables, perturbations)
    score = jnp.sum(logp.mean(axis=0) * jax.nn.one_hot(y, 3))
    return score, feats

  zeros = jnp.zeros((m, 2, 6, 6, 4))
  grads, feats = jax.grad(ensemble_score, has_aux=True)(zeros)
  weights = grads.mean(axis=(2, 3), keepdims=True)
  reference = jax.nn.relu(jnp.sum(weights * feats, axis=-1))  # (M, B, h, w)
  np.testing.assert_allclose(ours / m, reference, rtol=1e-4, atol=1e-7)


def test_corner_mass_hand_worked(tmp_path):
  """The corner of each class (top-left, top-right, bottom-right) at 50 x 50: the marker
  (centre (0.1, 0.085), half-sides 0.09 x 0.075) and 0.02 around it, i.e. the pixel centres
  with u in [-0.01, 0.21] (columns 0-10) and v in [-0.01, 0.18] (rows 0-8): 11 x 9 pixels."""
  mask = shortcut.corner_mask(50, 0)
  assert mask.sum() == 99 and mask[:9, :11].all()
  assert (
    shortcut.corner_mask(50, 1)[:9, -11:].all() and shortcut.corner_mask(50, 2)[-9:, -11:].all()
  )
  maps = np.zeros((3, 50, 50))
  maps[0, :9, :11] = 1.0  # all the mass in corner 0
  maps[1] = 1.0  # uniform: 99 / 2500 of it in any corner
  maps[2, 25, 25] = 1.0  # none in the corner
  corners = np.array([0, 1, 2])
  np.testing.assert_allclose(shortcut.corner_mass(maps, corners), [1.0, 99 / 2500, 0.0])
  assert math.isnan(shortcut.corner_mass(maps[:1], np.array([-1]))[0])  # no marker
  (tmp_path / 'synthetic_truth.csv').write_text(
    'dicom_id,split,label,marker_corner,height,width\na,test,CHF,2,10,10\nb,test,Normal,,10,10\n'
  )
  assert shortcut.marker_corners(tmp_path, ['b', 'a']).tolist() == [-1, 2]
  with pytest.raises(KeyError, match='synthetic_truth.csv has no row'):
    shortcut.marker_corners(tmp_path, ['c'])


def test_validation_nss_is_the_mit_definition():
  """``batch_nss`` (jnp, batched) against a hand computation with scipy's z-score (N - 1)."""
  rng = np.random.default_rng(0)
  maps = rng.random((3, 6, 5))
  fixations = np.zeros((3, 6, 5))
  fixations[0, 1, 2] = fixations[0, 4, 4] = 1
  fixations[1, 0, 0] = 2  # a pixel fixated twice counts once, as in the MIT code
  maps[2] = 0.5  # a constant map has no NSS
  fixations[2, 3, 3] = 1
  got = np.asarray(validation.batch_nss(jnp.asarray(maps), jnp.asarray(fixations)))
  z = scipy.stats.zscore(maps[0].ravel(), ddof=1).reshape(6, 5)
  assert got[0] == pytest.approx((z[1, 2] + z[4, 4]) / 2, rel=1e-5)
  assert got[1] == pytest.approx(scipy.stats.zscore(maps[1].ravel(), ddof=1)[0], rel=1e-5)
  assert np.isnan(got[2])
