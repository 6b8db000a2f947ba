"""The objectives: vmapped ensembles, the explanation gradient in ``mimic``, the gaze KLD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mimic_jax import methods
from mimic_jax.models import resnet
from tests import mesh_flops

M = 3


@pytest.fixture(scope='module')
def setup():
  model = resnet.ResNet(stage_sizes=(1, 1), width=8, num_classes=3, norm='group',
                        stem_pool=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 16, 16, 1)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 1])
  variables = methods.init_ensemble(model, jax.random.key(0), x, M)
  disc = methods.Discriminator(num_models=M, hidden=16)
  disc_params = disc.init(jax.random.key(1), jnp.zeros((1, 8, 8)))['params']
  return model, x, y, variables, disc, disc_params


def test_vmapped_ensemble_equals_a_python_loop(setup):
  model, x, y, variables, _, _ = setup
  logits = methods.ensemble_logits(model.apply, variables, x)
  loop = [model.apply(jax.tree.map(lambda v, i=i: v[i], variables), x) for i in range(M)]
  np.testing.assert_allclose(logits, np.stack(loop), rtol=1e-5, atol=1e-6)
  ce = methods.ensemble_ce(logits, y)
  ref_ce = sum(-special.log_softmax(np.asarray(l, np.float64), axis=-1)[np.arange(4), y].mean()
               for l in loop)
  assert float(ce) == pytest.approx(ref_ce, rel=1e-5)
  pred = methods.ensemble_prediction(logits)
  ref_pred = np.mean([special.log_softmax(np.asarray(l, np.float64), axis=-1) for l in loop], 0)
  np.testing.assert_allclose(pred, ref_pred, rtol=1e-5, atol=1e-6)


def test_unrolled_execution_equals_vmap(setup):
  model, x, y, variables, _, _ = setup
  kw = dict(explainer='gradient_shap', explainer_kwargs={'samples': 2},
            post={'sign': 'abs', 'normalize': 'minmax', 'pool': 2})
  for execution in ('unrolled', 'auto'):
    np.testing.assert_allclose(
        methods.ensemble_logits(model.apply, variables, x, execution=execution),
        methods.ensemble_logits(model.apply, variables, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        methods.member_explanations(model.apply, variables, x, y, jax.random.key(0),
                                    execution=execution, **kw),
        methods.member_explanations(model.apply, variables, x, y, jax.random.key(0), **kw),
        rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='execution='):
    methods.map_members(lambda v: v, variables, execution='pmap')


@pytest.mark.parametrize('backend,devices,expected', [
    ('tpu', 1, 'vmap'), ('tpu', 8, 'unrolled'), ('gpu', 1, 'unrolled'), ('cpu', 1, 'unrolled')])
def test_auto_execution(monkeypatch, backend, devices, expected):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  monkeypatch.setattr(jax, 'device_count', lambda: devices)
  assert methods.resolve_execution('auto') == expected
  assert methods.resolve_execution('vmap') == 'vmap'


def test_only_unrolled_members_split_the_batch_over_devices(setup):
  """Why ``auto`` unrolls on a mesh: per-device FLOPs of the ensemble's forward and input
  gradients with the batch split over 2 devices, against one device. XLA replicates vmap's
  grouped convolutions (openxla/xla#47945); if this starts to fail with ``vmap`` near 0.5,
  XLA has fixed it and ``resolve_execution`` can use vmap on TPU meshes again."""
  model, _, _, variables, _, _ = setup
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 16, 16, 1)), jnp.float32)
  y = jnp.arange(8) % 3

  def ratio(execution):
    return mesh_flops.split_ratio(
        lambda v, x, y: methods.member_explanations(
            model.apply, v, x, y, jax.random.key(0), explainer='input_gradients',
            explainer_kwargs={}, post={'sign': 'abs', 'normalize': 'minmax', 'pool': 2},
            execution=execution), variables, x, y)

  assert 0.45 < ratio('unrolled') < 0.55
  assert ratio('vmap') > 0.7


def _member_grads(setup, **kwargs):
  model, x, y, variables, disc, disc_params = setup

  def loss(v):
    logits = methods.ensemble_logits(model.apply, v, x)
    maps = methods.member_explanations(
        model.apply, v, x, y, jax.random.key(2), explainer='input_gradients',
        post={'sign': 'abs', 'normalize': 'minmax', 'pool': 2})
    return methods.mimic_member_loss(logits, maps, y, disc.apply, disc_params, **kwargs)[0]

  return jax.grad(loss)(variables)


def test_explanation_gradient_reaches_the_sub_models(setup):
  g0 = _member_grads(setup, beta=0.0)
  g1 = _member_grads(setup, beta=1.0)
  stop = _member_grads(setup, beta=1.0, explanation_gradient='stop')
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g0),
                                                            jax.tree.leaves(g1)))
  assert diff > 1e-4  # beta > 0 changes the sub-models' gradients (double backprop)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(stop)):
    np.testing.assert_array_equal(a, b)  # 'stop' is exactly the released code's beta = 0
  conf = _member_grads(setup, beta=1.0, objective='confusion')
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(conf)))


def test_discriminator_labels_are_model_major(setup):
  _, _, _, _, disc, disc_params = setup
  maps = jnp.asarray(np.random.default_rng(1).random((M, 4, 8, 8)), jnp.float32)
  logits = np.asarray(disc.apply({'params': disc_params}, maps.reshape(M * 4, 8, 8)), np.float64)
  labels = np.repeat(np.arange(M), 4)
  ref = -special.log_softmax(logits, axis=-1)[np.arange(M * 4), labels].mean()
  assert float(methods.discriminator_ce(disc.apply, disc_params, maps)) == pytest.approx(
      ref, rel=1e-5)


def test_kld_loss_matches_the_mit_formula_in_float64():
  rng = np.random.default_rng(2)
  s = rng.random((3, 6, 6))
  g = rng.random((3, 6, 6)) * (rng.random((3, 6, 6)) > 0.5)
  eps = np.finfo(np.float64).eps
  ref = []
  for si, gi in zip(s, g):
    p, q = si / si.sum(), gi / gi.sum()
    ref.append(np.sum(q * np.log(eps + q / (p + eps))))
  with jax.enable_x64(True):
    got = methods.kld_loss(jnp.asarray(s), jnp.asarray(g))
  assert float(got) == pytest.approx(np.mean(ref), rel=1e-12)
  assert float(methods.kld_loss(jnp.asarray(g + 0.0), jnp.asarray(g))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('penalty', ['kld', 'rrr'])
def test_gaze_penalty_is_finite_and_differentiable(setup, penalty):
  model, x, y, variables, _, _ = setup
  single = jax.tree.map(lambda v: v[0], variables)
  gaze = jnp.asarray(np.random.default_rng(3).random((4, 8, 8)), jnp.float32)
  gaze = gaze / gaze.sum(axis=(1, 2), keepdims=True)
  value, grads = jax.value_and_grad(
      lambda v: methods.gaze_penalty(model.apply, v, x, y, gaze, penalty=penalty))(single)
  assert np.isfinite(float(value)) and float(value) > 0
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0


@pytest.mark.parametrize('method, explainer', [('gaze', None), ('mimic', 'input_gradients'),
                                               ('mimic', 'gradient_x_input')])
def test_shared_forward_gives_the_two_forward_loss_and_gradients(method, explainer):
  """GroupNorm models: member_loss reuses the CE forward for the explanation; the loss and
  its gradient equal those assembled from the separate-forward functions of methods."""
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  from mimic_jax import models  # pylint: disable=g-import-not-at-top
  from mimic_jax import steps  # pylint: disable=g-import-not-at-top
  config = test_config.get_config(method)
  config.ensemble.num_models = 2
  config.ensemble.execution = 'unrolled'
  if explainer:
    config.mimic.explainer = explainer
    config.mimic.explainer_kwargs = {}
  model = models.create_model(config.model)
  state = steps.create_state(config, model, (32, 32, 1), jax.random.key(0))
  assert not state.batch_stats and steps.shares_forward(config, state)
  k = jax.random.split(jax.random.key(1), 3)
  gaze = jax.random.uniform(k[2], (4, 32, 32))
  batch = {'image': jax.random.normal(k[0], (4, 32, 32, 1)),
           'label': jnp.array([0, 1, 2, 1]), 'gaze': gaze / gaze.sum((1, 2), keepdims=True)}
  x, y = batch['image'], batch['label']

  def reference(params):
    logits = methods.map_members(lambda p: model.apply({'params': p}, x, train=True), params,
                                 execution='unrolled')
    ce = methods.ensemble_ce(logits, y)
    if method == 'gaze':
      pen = methods.map_members(lambda p: methods.gaze_penalty(
          model.apply, {'params': p}, x, y, batch['gaze']), params, execution='unrolled')
      return ce + config.gaze.weight * pen.sum()
    maps = methods.member_explanations(
        model.apply, {'params': params}, x, y, jax.random.key(2), explainer=explainer,
        explainer_kwargs={}, post=config.mimic.post.to_dict(), execution='unrolled')
    return methods.mimic_member_loss(logits, maps, y, state.disc.apply_fn, state.disc.params,
                                     beta=config.mimic.beta)[0]

  shared = lambda p: steps.member_loss(config, state, p, batch, jax.random.key(2))[0]  # pylint: disable=unnecessary-lambda-assignment
  l1, g1 = jax.value_and_grad(shared)(state.params)
  l2, g2 = jax.value_and_grad(reference)(state.params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(b))) + 1e-9)
