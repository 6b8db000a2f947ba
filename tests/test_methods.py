"""The methods: stacked ensembles, the explanation gradient in ``mimic``, the gaze penalties."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import test as test_config
from mimic_jax import explainers as explain
from mimic_jax import methods
from mimic_jax.evaluation import saliency_metrics
from mimic_jax.methods import base
from mimic_jax.methods import gaze as gaze_lib
from mimic_jax.methods import mimic as mimic_lib
from mimic_jax.models import resnet
from tests import mesh_flops

M = 3


@pytest.fixture(scope='module')
def setup():
  model = resnet.ResNet(stage_sizes=(1, 1), width=8, num_classes=3, norm='group', stem_pool=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 16, 16, 1)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 1])
  variables = base.init_ensemble(model, jax.random.key(0), x, M)
  return model, x, y, variables


def _mimic(model, **overrides):
  """A ``mimic`` method of ``model`` with M sub-models and its discriminator (hidden 16) for
  16 x 16 inputs, maps pooled by 2."""
  config = test_config.get_config('mimic')
  config.ensemble.num_models = M
  config.mimic.disc_hidden = 16
  config.mimic.post.pool = 2
  config.mimic.explainer = 'input_gradients'
  config.mimic.explainer_kwargs = {}
  for key, value in overrides.items():
    config.mimic[key] = value
  method = methods.create(config, model)
  return method, method.init_method_state(jax.random.key(1), (16, 16, 1))


def test_stacked_ensemble_equals_a_python_loop(setup):
  model, x, y, variables = setup
  logits = base.map_members(lambda v: model.apply(v, x), variables, execution='vmap')
  loop = [model.apply(jax.tree.map(lambda v, i=i: v[i], variables), x) for i in range(M)]
  np.testing.assert_allclose(logits, np.stack(loop), rtol=1e-5, atol=1e-6)
  ce = base.ensemble_ce(logits, y)
  ref_ce = sum(
    -special.log_softmax(np.asarray(lg, np.float64), axis=-1)[np.arange(4), y].mean() for lg in loop
  )
  assert float(ce) == pytest.approx(ref_ce, rel=1e-5)
  pred = base.ensemble_prediction(logits)
  ref_pred = np.mean([special.log_softmax(np.asarray(lg, np.float64), axis=-1) for lg in loop], 0)
  np.testing.assert_allclose(pred, ref_pred, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('execution', ['vmap', 'scan'])
def test_every_execution_equals_unrolled(setup, execution):
  """The sub-models' predictions, explanations and the gradient of a loss of the explanations
  (double backprop through the loop for ``scan``) are the same computed every way."""
  model, x, y, variables = setup
  kw = dict(
    explainer='gradient_shap',
    explainer_kwargs={'samples': 2},
    post={'sign': 'abs', 'normalize': 'minmax', 'pool': 2},
  )
  np.testing.assert_allclose(
    base.ensemble_log_probs(model.apply, variables, x, execution=execution),
    base.ensemble_log_probs(model.apply, variables, x, execution='unrolled'),
    rtol=1e-5,
    atol=1e-6,
  )

  def maps(v, how):
    return base.member_explanations(model.apply, v, x, y, jax.random.key(0), execution=how, **kw)

  np.testing.assert_allclose(maps(variables, execution), maps(variables, 'unrolled'), 1e-4, 1e-5)
  weights = jnp.linspace(0.0, 1.0, maps(variables, 'unrolled')[0].size).reshape(
    maps(variables, 'unrolled')[0].shape
  )
  grads = {
    how: jax.grad(lambda v, how=how: jnp.sum(maps(v, how) * weights))(variables)
    for how in (execution, 'unrolled')
  }
  for a, b in zip(jax.tree.leaves(grads[execution]), jax.tree.leaves(grads['unrolled'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_only_unrolled_members_split_the_batch_over_devices(setup):
  """Why ``auto`` unrolls on a mesh: per-device FLOPs of the ensemble's input-gradient maps
  with the batch split over 2 devices, against one device. XLA replicates vmap's grouped
  convolutions (openxla/xla#47945); if this starts to fail with ``vmap`` near 0.5, XLA has
  fixed it and ``mimic_jax.tuning`` can vmap on TPU meshes again."""
  model, _, _, variables = setup
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 16, 16, 1)), jnp.float32)
  y = jnp.arange(8) % 3

  def ratio(execution):
    return mesh_flops.split_ratio(
      lambda v, x, y: base.member_explanations(
        model.apply,
        v,
        x,
        y,
        jax.random.key(0),
        explainer='input_gradients',
        explainer_kwargs={},
        post={'sign': 'abs', 'normalize': 'minmax', 'pool': 2},
        execution=execution,
      ),
      variables,
      x,
      y,
    )

  assert 0.45 < ratio('unrolled') < 0.55
  assert ratio('vmap') > 0.7


def _adversarial_grads(setup, **overrides):
  """The gradient of the sub-models' adversarial-phase loss."""
  model, x, y, variables = setup
  method, disc = _mimic(model, **overrides)
  batch = {'image': x, 'label': y}

  def loss(params):
    return method.member_loss(params, {}, disc, batch, jax.random.key(2), 'adversarial')[0]

  return jax.grad(loss)(variables['params'])


def test_explanation_gradient_reaches_the_sub_models(setup):
  g0 = _adversarial_grads(setup, beta=0.0)
  g1 = _adversarial_grads(setup, beta=1.0)
  stop = _adversarial_grads(setup, beta=1.0, explanation_gradient='stop')
  diff = max(
    float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1))
  )
  assert diff > 1e-4  # beta > 0 changes the sub-models' gradients (double backprop)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(stop)):
    np.testing.assert_array_equal(a, b)  # 'stop' is exactly the released code's beta = 0
  conf = _adversarial_grads(setup, beta=1.0, objective='confusion')
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(conf)))


def test_discriminator_labels_are_model_major(setup):
  model, _, _, _ = setup
  _, disc = _mimic(model)
  maps = jnp.asarray(np.random.default_rng(1).random((M, 4, 8, 8)), jnp.float32)
  logits = np.asarray(disc.apply_fn({'params': disc.params}, maps.reshape(M * 4, 8, 8)), np.float64)
  labels = np.repeat(np.arange(M), 4)
  ref = -special.log_softmax(logits, axis=-1)[np.arange(M * 4), labels].mean()
  assert float(mimic_lib.discriminator_ce(disc.apply_fn, disc.params, maps)) == pytest.approx(
    ref, rel=1e-5
  )


def test_kld_loss_is_the_mit_formula_in_float64():
  rng = np.random.default_rng(2)
  s = rng.random((3, 6, 6))
  g = rng.random((3, 6, 6)) * (rng.random((3, 6, 6)) > 0.5)
  eps = np.finfo(np.float64).eps
  ref = []
  for si, gi in zip(s, g):
    p, q = si / si.sum(), gi / gi.sum()
    ref.append(np.sum(q * np.log(eps + q / (p + eps))))
  with jax.enable_x64(True):
    got = saliency_metrics.kld(jnp.asarray(s), jnp.asarray(g), xp=jnp)
  np.testing.assert_allclose(got, ref, rtol=1e-12)
  assert float(jnp.max(saliency_metrics.kld(jnp.asarray(g), jnp.asarray(g), xp=jnp))) == (
    pytest.approx(0.0, abs=1e-6)
  )


def _gaze_method(model, **overrides):
  """A ``gaze`` method with one explanation term, the input gradient's, unless overridden."""
  config = test_config.get_config('gaze')
  config.gaze.explanation, config.gaze.grad_cam_weight = 'input_gradients', 0.0
  for key, value in overrides.items():
    config.gaze[key] = value
  return methods.create(config, model)


@pytest.mark.parametrize(
  'overrides',
  [
    {'penalty': 'kld'},
    {'penalty': 'kld', 'floor': 0.1, 'pool': 2},
    {'penalty': 'energy'},
    {'penalty': 'energy', 'explanation': 'grad_cam'},
    {'penalty': 'rrr'},
    {'penalty': 'energy', 'explanation': 'gradient_shap', 'samples': 2},
    {'penalty': 'kld', 'floor': 0.1, 'grad_cam_weight': 2.0},
  ],
)
def test_gaze_penalty_is_finite_and_differentiable(setup, overrides):
  model, x, y, variables = setup
  method = _gaze_method(model, **overrides)
  single = jax.tree.map(lambda v: v[:1], variables['params'])
  gaze = jnp.asarray(np.random.default_rng(3).random((4, 16, 16)), jnp.float32) ** 4
  batch = {'image': x, 'label': y, 'gaze': gaze / gaze.sum(axis=(1, 2), keepdims=True)}

  def penalty(p):
    return method.member_loss(p, {}, None, batch, jax.random.key(0), 'train')[1][0]['penalty']

  value, grads = jax.value_and_grad(penalty)(single)
  assert np.isfinite(float(value)) and float(value) > 0
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0


def test_grad_cam_term_adds_its_weight_times_the_grad_cam_penalty(setup):
  model, x, y, variables = setup
  single = jax.tree.map(lambda v: v[:1], variables['params'])
  gaze = jnp.asarray(np.random.default_rng(3).random((4, 16, 16)), jnp.float32) ** 4
  batch = {'image': x, 'label': y, 'gaze': gaze / gaze.sum(axis=(1, 2), keepdims=True)}

  def penalty(**overrides):
    method = _gaze_method(model, penalty='kld', floor=0.1, **overrides)
    scalars = method.member_loss(single, {}, None, batch, jax.random.key(0), 'train')[1][0]
    return float(scalars['penalty'])

  both = penalty(grad_cam_weight=2.0)
  alone = penalty(), penalty(explanation='grad_cam')
  assert both == pytest.approx(alone[0] + 2.0 * alone[1], rel=1e-5)
  assert alone[1] > 0


def test_gazed_region_holds_the_asked_mass():
  gaze = jnp.asarray([[[0.4, 0.3], [0.2, 0.1]], [[0.0, 0.0], [0.0, 0.0]]])
  np.testing.assert_array_equal(
    gaze_lib.gazed_region(gaze, 0.65)[0], [[True, True], [False, False]]
  )
  np.testing.assert_array_equal(gaze_lib.gazed_region(gaze, 0.7)[0], [[True, True], [False, False]])
  np.testing.assert_array_equal(gaze_lib.gazed_region(gaze, 0.71)[0], [[True, True], [True, False]])
  assert bool(gaze_lib.gazed_region(gaze, 0.9)[1].all())  # no gaze: everywhere


def test_energy_and_kld_penalties_by_hand():
  saliency = jnp.asarray([[[1.0, 3.0], [0.0, 4.0]]])
  region = jnp.asarray([[[True, False], [False, True]]])
  assert float(gaze_lib.energy_penalty(saliency, region)) == pytest.approx(3.0 / 8.0)
  assert float(gaze_lib.energy_penalty(10 * saliency, region)) == pytest.approx(3.0 / 8.0)
  gaze = jnp.asarray([[[0.5, 0.0], [0.5, 0.0]]])
  # floor 0.2: S' = 0.8 * S / 8 + 0.2 / 4 = [[0.15, 0.35], [0.05, 0.45]].
  expected = 0.5 * np.log(0.5 / 0.15) + 0.5 * np.log(0.5 / 0.05)
  with jax.enable_x64(True):
    got = gaze_lib.kld_penalty(saliency.astype(jnp.float64), gaze.astype(jnp.float64), 0.2)
  assert float(got) == pytest.approx(expected, rel=1e-9)


def test_rrr_penalty_of_a_linear_model_by_hand():
  """Logits ``z = x W`` (x flattened): d sum_k log p_k / dx = sum_k W_k - K sum_j p_j W_j, so
  the penalty is ``mean_b sum_pixels (outside * that)^2``, worked here in float64 NumPy from
  the gaze's region (the highest pixels holding 0.6 of the gaze mass)."""
  rng = np.random.default_rng(7)
  w = rng.normal(size=(16, 3))

  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return x.reshape(x.shape[0], -1) @ jnp.asarray(w)

  x = rng.normal(size=(2, 4, 4, 1))
  gaze = rng.random((2, 4, 4))
  gaze /= gaze.sum(axis=(1, 2), keepdims=True)
  config = test_config.get_config('gaze')
  config.gaze.penalty = 'rrr'
  config.gaze.region_mass = 0.6
  method = methods.create(config, Linear())
  with jax.enable_x64(True):
    batch = {'image': jnp.asarray(x), 'label': jnp.asarray([0, 1]), 'gaze': jnp.asarray(gaze)}
    (_, (scalars, _, _)) = method.member_loss(
      {'p': jnp.zeros((1,))}, {}, None, batch, jax.random.key(0), 'train'
    )
  expected = []
  for xb, gb in zip(x, gaze):
    z = xb.reshape(-1) @ w
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    grad = w.sum(axis=1) - 3 * w @ p  # (16,)
    order = np.argsort(-gb.ravel())
    kept = order[: np.searchsorted(np.cumsum(gb.ravel()[order]), 0.6) + 1]
    outside = np.ones(16)
    outside[kept] = 0
    expected.append(np.sum((outside * grad) ** 2))
  assert float(scalars['penalty']) == pytest.approx(np.mean(expected), rel=1e-9)


@pytest.mark.parametrize(
  'method_name, explainer',
  [('gaze', None), ('mimic', 'input_gradients'), ('mimic', 'gradient_x_input')],
)
def test_shared_forward_gives_the_two_forward_loss_and_gradients(method_name, explainer):
  """GroupNorm models: the method's loss reuses the cross-entropy forward for the
  explanation; the loss and its gradient equal those assembled from separate forward passes
  (train mode for the CE, eval mode for the explanation)."""
  config = test_config.get_config(method_name)
  config.ensemble.num_models = 2
  config.gaze.explanation, config.gaze.grad_cam_weight = 'input_gradients', 0.0
  if explainer:
    config.mimic.explainer = explainer
    config.mimic.explainer_kwargs = {}
  method = methods.build(config)
  assert method.shares_forward({})
  model = method.model
  k = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(k[0], (4, 32, 32, 1))
  variables = base.init_ensemble(model, jax.random.key(0), x, method.num_members)
  params = variables['params']
  disc = method.init_method_state(jax.random.key(5), (32, 32, 1))
  gaze = jax.random.uniform(k[2], (4, 32, 32))
  batch = {
    'image': x,
    'label': jnp.array([0, 1, 2, 1]),
    'gaze': gaze / gaze.sum((1, 2), keepdims=True),
  }
  y = batch['label']

  def reference(params):
    logits = base.map_members(lambda p: model.apply({'params': p}, x, train=True), params)
    ce = base.ensemble_ce(logits, y)
    if method_name == 'gaze':  # eval-mode input gradients, a forward pass of their own
      grads = base.map_members(
        lambda p: explain.input_gradients(lambda z: model.apply({'params': p}, z), x, y)[1],
        params,
      )
      pen = base.map_members(lambda g: method._penalty(g, batch['gaze']), grads)
      return ce + config.gaze.weight * pen.sum()
    maps = base.member_explanations(
      model.apply,
      {'params': params},
      x,
      y,
      jax.random.key(2),
      explainer=explainer,
      explainer_kwargs={},
      post=config.mimic.post.to_dict(),
    )
    adversarial, _ = mimic_lib.adversarial_term(disc.apply_fn, disc.params, maps)
    return ce + config.mimic.beta * adversarial

  def shared(params):
    phase = 'train' if method_name == 'gaze' else 'adversarial'
    return method.member_loss(params, {}, disc, batch, jax.random.key(2), phase)[0]

  l1, g1 = jax.value_and_grad(shared)(params)
  l2, g2 = jax.value_and_grad(reference)(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(b))) + 1e-9)
