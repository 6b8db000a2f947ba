"""Explainers against finite differences, hand-worked cases and their definitions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_jax import explainers as explain
from mimic_jax.models import resnet
from tests import mesh_flops


def _tiny(norm):
  return resnet.ResNet(stage_sizes=(1, 1), width=8, num_classes=3, norm=norm, stem_pool=False)


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(4, 16, 16, 1)), jnp.float32), jnp.asarray([0, 1, 2, 1]))


def test_input_gradients_match_central_finite_differences(batch):
  x, y = batch
  with jax.enable_x64(True):
    model = _tiny('group')
    x64 = x.astype(jnp.float64)
    variables = model.init(jax.random.key(0), x64)
    variables = jax.tree.map(lambda v: v.astype(jnp.float64), variables)
    f = lambda v: model.apply(variables, v, train=False)
    logits, g = explain.input_gradients(f, x64, y)
    np.testing.assert_allclose(logits, f(x64))
    h = 1e-6
    rng = np.random.default_rng(1)
    for _ in range(6):
      b, i, j = rng.integers(4), rng.integers(16), rng.integers(16)
      e = jnp.zeros_like(x64).at[b, i, j, 0].set(h)
      fd = (f(x64 + e)[b, y[b]] - f(x64 - e)[b, y[b]]) / (2 * h)
      assert float(g[b, i, j, 0]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


class _KnownCam(nn.Module):
  """Feature map A = x (exposed as 'feat'); logits = mean_hw(A) @ W."""

  w: np.ndarray

  @nn.compact
  def __call__(self, x, train=False):
    a = self.perturb('feat', x)
    self.sow('intermediates', 'feat', a)
    return jnp.mean(a, axis=(1, 2)) @ jnp.asarray(self.w)


def test_grad_cam_on_a_hand_built_model():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(4, 3)).astype(np.float32)
  x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  y = np.array([2, 0])
  model = _KnownCam(w)
  variables = model.init(jax.random.key(0), x)
  variables = {k: v for k, v in variables.items() if k != 'perturbations'}
  logits, cam = explain.grad_cam(model.apply, variables, x, y, layer='feat')
  # d logit_y / dA[h, w, c] = W[c, y] / (H W) everywhere, so the channel weights are that too.
  expected = np.maximum(np.einsum('bhwc,cb->bhw', x, w[:, y]) / 30.0, 0.0)
  np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(logits, x.mean(axis=(1, 2)) @ w, rtol=1e-5)
  with pytest.raises(ValueError, match="layer 'nope' is not exposed"):
    explain.grad_cam(model.apply, variables, x, y, layer='nope')


def _quadratic(seed):
  """``f_y(x) = sum(v_y * x^2)`` with random ``v``, and a random batch (x, y) for it."""
  rng = np.random.default_rng(seed)
  v = jnp.asarray(rng.normal(size=(3, 4, 4, 1)), jnp.float32)
  f = lambda x: jnp.einsum('bhwc,khwc->bk', x**2, v)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 1)), jnp.float32)
  return v, f, x


def test_gradient_shap_mean_matches_its_definition():
  # f_y(x) = sum(v_y * x^2): grad = 2 v_y x, so E_alpha[(x - b) * 2 v_y (b + alpha (x - b))]
  # = (x - b) * 2 v_y * (b + (x - b) / 2) = v_y (x^2 - b^2).
  v, f, x = _quadratic(3)
  y = jnp.asarray([1, 2])
  b = 0.1307
  _, attr = explain.gradient_shap(f, x, y, jax.random.key(0), samples=20000, baseline=b)
  expected = v[y] * (x**2 - b**2)
  # Monte Carlo: the alpha term has std |(x-b) 2 v (x-b)| / sqrt(12) / sqrt(n).
  tol = 5 * np.abs(2 * v[y] * (x - b) ** 2) / np.sqrt(12 * 20000) + 1e-5
  assert np.all(np.abs(attr - expected) <= tol)


def test_gradient_shap_draws_its_points_per_example_and_sample():
  """captum draws an interpolation point per example and sample. Two copies of one example
  in a batch get different points, so different attributions (with one shared draw per
  sample they were identical); each example's attribution is the mean over its own draws."""
  _, f, x = _quadratic(5)
  twins = jnp.stack([x[0], x[0]])
  y = jnp.asarray([1, 1])
  _, attr = explain.gradient_shap(f, twins, y, jax.random.key(0), samples=3)
  assert float(jnp.max(jnp.abs(attr[0] - attr[1]))) > 1e-4
  # With one sample, each example's attribution is (x - b) grad f_y at b + alpha (x - b) for
  # its own alpha: recover alpha per example (grad f_y = 2 v_y z) and check it is in (0, 1).
  v = _quadratic(5)[0]
  _, one = explain.gradient_shap(f, twins, y, jax.random.key(0), samples=1)
  alphas = one / (2 * v[y] * twins**2)
  for a in np.asarray(alphas).reshape(2, -1):
    np.testing.assert_allclose(a, a[0], rtol=1e-4)  # one alpha for all pixels of an example
    assert 0.0 < a[0] < 1.0
  assert abs(float(alphas[0].ravel()[0] - alphas[1].ravel()[0])) > 1e-4


def test_grad_cam_of_the_log_softmax_scales_each_example_by_its_probability():
  """``target='log_softmax'``: d log p_y / dA = d z_y / dA - sum_k p_k d z_k / dA. For the
  hand-built model (logits = mean_hw A @ W) the channel weights are ``(W[:, y] - W p) / (H W)``."""
  rng = np.random.default_rng(3)
  w = rng.normal(size=(4, 3)).astype(np.float32)
  x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  y = np.array([2, 0])
  model = _KnownCam(w)
  variables = model.init(jax.random.key(0), x)
  variables = {k: v for k, v in variables.items() if k != 'perturbations'}
  logits, cam = explain.grad_cam(model.apply, variables, x, y, layer='feat', target='log_softmax')
  p = np.asarray(jax.nn.softmax(logits))
  weights = (w[:, y].T - p @ w.T) / 30.0  # (B, C)
  expected = np.maximum(np.einsum('bhwc,bc->bhw', x, weights), 0.0)
  np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness_and_linear_shap():
  v, quad, x = _quadratic(4)
  y = jnp.asarray([0, 2])
  logits, ig = explain.integrated_gradients(quad, x, y, steps=8)
  # Completeness: sum of attributions = f(x) - f(baseline 0) (exact for a quadratic, midpoint).
  np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), logits[jnp.arange(2), y], rtol=1e-5)
  lin = lambda x: jnp.einsum('bhwc,khwc->bk', x, v)
  _, shap = explain.gradient_shap(lin, x, y, jax.random.key(1), samples=3, baseline=0.5)
  np.testing.assert_allclose(shap, (x - 0.5) * v[y], rtol=1e-5, atol=1e-6)
  _, gxi = explain.gradient_x_input(lin, x, y)
  np.testing.assert_allclose(gxi, x * v[y], rtol=1e-6)
  _, sg = explain.smoothgrad(lin, x, y, jax.random.key(2), samples=4)
  np.testing.assert_allclose(sg, jnp.broadcast_to(v[y], x.shape), rtol=1e-5)


def test_eval_mode_batchnorm_keeps_explanations_per_example(batch):
  x, y = batch
  model = _tiny('batch')
  variables = model.init(jax.random.key(0), x)
  # Non-trivial running statistics.
  _, upd = model.apply(variables, x * 3 + 1, train=True, mutable=['batch_stats'])
  variables = {**variables, **upd}
  other = jnp.concatenate([x[:1], jnp.flip(x[1:], axis=1) * 2.0])

  def grads(inputs, train):
    def f(z):
      if train:
        return model.apply(variables, z, train=True, mutable=['batch_stats'])[0]
      return model.apply(variables, z, train=False)

    return explain.input_gradients(f, inputs, y)[1]

  np.testing.assert_allclose(grads(x, False)[0], grads(other, False)[0], rtol=1e-6, atol=1e-7)
  # Train-mode statistics couple the batch: the same example's explanation changes.
  assert not np.allclose(grads(x, True)[0], grads(other, True)[0], atol=1e-4)


def test_explanations_are_differentiable_in_the_parameters(batch):
  x, y = batch
  with jax.enable_x64(True):
    model = _tiny('group')
    x64 = x.astype(jnp.float64)
    # Zero-initialised residual norms put ReLU inputs exactly on their kink (one-sided
    # derivatives differ there); a small random shift moves the point off every kink.
    rng = np.random.default_rng(6)
    params = jax.tree.map(
      lambda v: v.astype(jnp.float64) + 0.05 * rng.normal(size=v.shape),
      model.init(jax.random.key(1), x64)['params'],
    )

    def loss(p):
      _, g = explain.input_gradients(lambda z: model.apply({'params': p}, z), x64, y)
      return jnp.sum(explain.postprocess(g, normalize='sum') ** 2)

    grad = jax.grad(loss)(params)
    direction = jax.tree.map(
      lambda p: jnp.asarray(np.random.default_rng(5).normal(size=p.shape)), params
    )
    h = 1e-6
    plus = loss(jax.tree.map(lambda p, d: p + h * d, params, direction))
    minus = loss(jax.tree.map(lambda p, d: p - h * d, params, direction))
    analytic = sum(
      jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction))
    )
    assert float(analytic) == pytest.approx(float((plus - minus) / (2 * h)), rel=1e-4)


def test_postprocess_steps():
  a = jnp.asarray([[[[-2.0, 1.0], [0.0, 3.0]], [[1.0, 1.0], [-4.0, 0.0]]]])  # (1, 2, 2, 2)
  np.testing.assert_allclose(explain.postprocess(a, normalize='none'), [[[3.0, 3.0], [2.0, 4.0]]])
  np.testing.assert_allclose(
    explain.postprocess(a, sign='relu', normalize='none'), [[[1.0, 3.0], [2.0, 0.0]]]
  )
  np.testing.assert_allclose(explain.postprocess(a), [[[0.5, 0.5], [0.0, 1.0]]])
  np.testing.assert_allclose(explain.postprocess(a, normalize='sum').sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(explain.postprocess(a, pool=2, normalize='none'), [[[3.0]]])


@pytest.mark.parametrize(
  'explainer,kwargs',
  [
    (explain.smoothgrad, {'samples': 4}),
    (explain.gradient_shap, {'samples': 4}),
    (explain.integrated_gradients, {'steps': 4}),
  ],
)
def test_sampled_explainers_split_over_devices_by_example(explainer, kwargs):
  """With the batch split over 2 devices, each device explains only its own examples: XLA's
  per-device FLOPs are half of one device's (a sample-major batch was replicated: 0.9)."""
  model = _tiny('group')
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 16, 16, 1)), jnp.float32)
  y = jnp.arange(8) % 3
  params = {'params': model.init(jax.random.key(0), x)['params']}

  ratio = mesh_flops.split_ratio(
    lambda p, x, y: explainer(lambda z: model.apply(p, z), x, y, jax.random.key(2), **kwargs)[1],
    params,
    x,
    y,
  )
  assert 0.45 < ratio < 0.55, ratio
