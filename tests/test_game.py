"""MIMIC's game, pinned: the fresh probes tell different explainers apart and identical maps not;
a discriminator step makes the discriminator better on its batch and an adversarial step makes
it worse; ``disc_steps=k`` is k Adam steps; the monitor's numbers match independent
computations."""

import functools
import types

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import test_mimic

from configs import test as test_config
from mimic_jax import methods
from mimic_jax import models
from mimic_jax.evaluation import distinguishability
from mimic_jax.evaluation import maps as maps_lib
from mimic_jax.methods import base
from mimic_jax.methods import mimic as mimic_lib
from mimic_jax.models import resnet
from mimic_jax.training import steps

MODEL = dict(stage_sizes=(1, 1), width=8, num_classes=3, norm='group', stem_pool=False)


@pytest.fixture(scope='module')
def two_explainers():
  """Grad-CAM and |input gradients| of one small random ResNet on 96 random 16 x 16 images,
  stacked as if two sub-models had made them: ``(2, 96, 16, 16)``."""
  model = resnet.ResNet(**MODEL)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(96, 16, 16, 1)), jnp.float32)
  y = jnp.asarray(np.arange(96) % 3)
  variables = base.init_ensemble(model, jax.random.key(0), x[:1], 1)
  state = types.SimpleNamespace(apply_fn=model.apply, params=variables['params'], batch_stats={})
  maps = {
    e: np.asarray(
      maps_lib.member_maps(
        state,
        x,
        y,
        jax.random.key(1),
        explainer=e,
        size=16,
        layer=models.gradcam_layer('tiny_resnet'),
        gradcam_target='logit',
        execution='unrolled',
      )[0]
    )
    for e in ('grad_cam', 'input_gradients')
  }
  return np.stack([maps['grad_cam'], maps['input_gradients']])


@pytest.mark.parametrize('probe', ['logistic', 'discriminator:mlp', 'discriminator:conv'])
def test_probes_tell_two_explainers_apart_and_identical_maps_not(two_explainers, probe):
  """Trained on the first 64 images' maps, tested on the other 32: > 0.9 held out on two
  different explainers; on identical maps (both "sub-models" made the same map) any probe
  names exactly one of an image's two maps right, so exactly chance, 1/2."""
  train, test = two_explainers[:, :64], two_explainers[:, 64:]
  same = np.stack([two_explainers[0], two_explainers[0]])

  def predict(tr, te):
    if probe == 'logistic':
      return distinguishability.logistic_probe(tr, te)
    disc = mimic_lib.Discriminator(num_models=2, hidden=32, arch=probe.split(':')[1])
    return distinguishability.discriminator_probe(tr, te, disc, pool=2, steps=300)

  different = distinguishability.held_out_accuracy(predict(train, test), 2)
  assert different['mean'] > 0.9 and different['n'] == 32 and different['chance'] == 0.5
  lo, hi = different['ci95']
  assert lo <= different['mean'] <= hi
  identical = distinguishability.held_out_accuracy(predict(same[:, :64], same[:, 64:]), 2)
  assert identical['mean'] == 0.5


def test_held_out_accuracy_by_hand():
  """M = 2, three images; predictions (model-major): image 0 both right, image 1 one right,
  image 2 none -> per image 1, 1/2, 0 -> mean 1/2."""
  predicted = np.array([0, 0, 1, 1, 0, 0])  # sub-model 0's maps, then sub-model 1's
  result = distinguishability.held_out_accuracy(predicted, 2)
  assert result['mean'] == pytest.approx(0.5)
  assert result['n'] == 3


def test_avg_pool_and_minmax_by_hand():
  maps = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
  np.testing.assert_allclose(distinguishability.avg_pool(maps, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
  scaled = distinguishability.minmax(np.stack([maps[0], np.full((4, 4), 3.0)]))
  np.testing.assert_allclose(scaled[0], maps[0] / 15)
  np.testing.assert_array_equal(scaled[1], 0.0)  # a constant map


@pytest.fixture(scope='module')
def game_setup():
  """A float64 ``mimic`` (3 small GroupNorm ResNets, input-gradient maps pooled by 2), its
  state and a batch, with the discriminator first trained 30 steps on the batch's maps."""
  method, state, batch = test_mimic.small_mimic(disc_learning_rate=1e-2)
  with jax.enable_x64(True):
    maps = _maps(method, state.params, batch)
    disc, _ = mimic_lib.discriminator_steps(state.method_state, maps, 30)
    state = state.replace(method_state=disc)
  return method, state, batch


def _maps(method, params, batch):
  return method.training_explanations(params, {}, batch['image'], batch['label'], jax.random.key(3))


def _disc_ce(method, state, batch):
  disc = state.method_state
  with jax.enable_x64(True):
    return float(
      mimic_lib.discriminator_ce(disc.apply_fn, disc.params, _maps(method, state.params, batch))
    )


def _step(method, state, batch, phase, weights=None):
  with jax.enable_x64(True):
    weights = None if weights is None else {k: jnp.float64(v) for k, v in weights.items()}
    new, _ = jax.jit(functools.partial(steps.train_step, method, phase))(state, batch, weights)
  return new


def test_discriminator_step_lowers_and_adversarial_step_raises_its_ce(game_setup):
  """With the sub-models fixed, one discriminator step lowers CE_D on the batch's maps; with
  the discriminator fixed, one adversarial step of the sub-models (beta large, so the
  adversarial term leads the sign of Adam's first step) raises it."""
  method, state, batch = game_setup
  before = _disc_ce(method, state, batch)
  assert before < np.log(3)  # the trained discriminator is better than chance
  after_disc = _step(method, state, batch, 'discriminator')
  # The discriminator's step is taken on the maps of the parameters before the sub-models'
  # step; score it on those maps.
  assert _disc_ce(method, state.replace(method_state=after_disc.method_state), batch) < before
  after_adv = _step(method, state, batch, 'adversarial', {'beta': 1e3})
  assert _disc_ce(method, after_adv, batch) > before


@pytest.mark.parametrize('k', [1, 3])
def test_k_discriminator_steps_are_k_adam_steps(game_setup, k):
  """``disc_steps=k``: the discriminator phase takes k Adam steps on the batch's detached maps,
  the same as k separate ``apply_gradients`` calls (its step counter reads k)."""
  method, state, batch = game_setup
  config = method.config.copy_and_resolve_references()
  config.mimic.disc_steps = k
  method_k = methods.create(config, method.model)
  new = _step(method_k, state, batch, 'discriminator')
  with jax.enable_x64(True):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 1)
    maps = jax.lax.stop_gradient(
      method.training_explanations(state.params, {}, batch['image'], batch['label'], key)
    )
    disc = state.method_state
    for _ in range(k):
      grads = jax.grad(lambda p, d=disc: mimic_lib.discriminator_ce(d.apply_fn, p, maps))(
        disc.params
      )
      disc = disc.apply_gradients(grads=grads)
  assert int(new.method_state.step) == int(state.method_state.step) + k
  for a, b in zip(jax.tree.leaves(new.method_state.params), jax.tree.leaves(disc.params)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_monitor_against_independent_computations(game_setup):
  """``disc_accuracy``: the argmax accuracy of the discriminator's logits (numpy);
  ``map_correlation``: numpy's mean pairwise Pearson correlation of the sub-models' maps."""
  method, state, batch = game_setup
  rng = jax.random.key(5)
  with jax.enable_x64(True):
    game = method.monitor(state.params, {}, state.method_state, batch, rng)
    maps = np.asarray(
      method.training_explanations(state.params, {}, batch['image'], batch['label'], rng)
    )
    disc = state.method_state
    logits = np.asarray(disc.apply_fn({'params': disc.params}, maps.reshape(18, 8, 8)))
  labels = np.repeat(np.arange(3), 6)
  assert float(game['disc_accuracy']) == pytest.approx(np.mean(logits.argmax(-1) == labels))
  assert float(game['disc_accuracy']) > 1 / 3  # trained on these maps
  flat = maps.reshape(3, 6, -1)
  corr = [
    np.corrcoef(flat[i, n], flat[j, n])[0, 1] for i, j in ((0, 1), (0, 2), (1, 2)) for n in range(6)
  ]
  assert float(game['map_correlation']) == pytest.approx(np.mean(corr), rel=1e-6)


@pytest.mark.parametrize('per_member', [False, True])
@pytest.mark.parametrize('gradient', ['through', 'stop'])
def test_adversarial_share_of_the_gradient(game_setup, gradient, per_member):
  """``beta_over_ce``: the norm of beta times the gradient of the adversarial term alone
  (``adversarial_term`` of the maps, differentiated directly) over that of the ensemble's
  cross-entropy alone, with their cosine; 0 when the gradient is stopped (the released code);
  the same through the one-program and the per-sub-model gradient programs."""
  method, state, batch = game_setup
  config = method.config.copy_and_resolve_references()
  config.mimic.explanation_gradient = gradient
  m = methods.create(config, method.model)
  key = jax.random.key(5)
  with jax.enable_x64(True):
    weights = {'beta': jnp.float64(2.0)}
    step = steps.compile_step(m, 'adversarial', per_member=per_member)
    shares = steps.LossTermGradients(m, 'adversarial', step_fn=step)(state, batch, weights, key)
    disc = state.method_state
    x, y = batch['image'], batch['label']

    def adversarial(p):
      maps = m.training_explanations(p, {}, x, y, key)
      if gradient == 'stop':
        maps = jax.lax.stop_gradient(maps)
      return 2.0 * mimic_lib.adversarial_term(disc.apply_fn, disc.params, maps)[0]

    def ce(p):
      return base.ensemble_ce(m.train_forward(p, {}, x)[0], y)

    flat = lambda g: np.asarray(jax.flatten_util.ravel_pytree(g)[0])  # noqa: E731
    g_adv, g_ce = flat(jax.grad(adversarial)(state.params)), flat(jax.grad(ce)(state.params))
  assert set(shares) == {'beta_over_ce', 'beta_cosine'}
  if gradient == 'stop':
    assert shares['beta_over_ce'] == 0.0 and shares['beta_cosine'] == 0.0
    return
  ratio = np.linalg.norm(g_adv) / np.linalg.norm(g_ce)
  assert ratio > 0.01
  assert shares['beta_over_ce'] == pytest.approx(ratio, rel=1e-6)
  cosine = g_adv @ g_ce / (np.linalg.norm(g_adv) * np.linalg.norm(g_ce))
  assert shares['beta_cosine'] == pytest.approx(cosine, rel=1e-6, abs=1e-9)


def test_conv_discriminator_shapes_and_config_choice():
  disc = mimic_lib.Discriminator(num_models=3, hidden=16, arch='conv')
  params = disc.init(jax.random.key(0), jnp.zeros((1, 8, 8)))['params']
  assert disc.apply({'params': params}, jnp.ones((5, 8, 8))).shape == (5, 3)
  config = test_config.get_config('mimic')
  config.mimic.disc_arch = 'conv'
  assert mimic_lib.make_discriminator(config.mimic, 3).arch == 'conv'


def test_the_discriminator_learns_at_its_own_rate(game_setup):
  """``disc_learning_rate`` is the discriminator's alone: Adam's first step moves a parameter
  by at most its learning rate (|m / sqrt(v)| = 1), so one discriminator step at 1e-2 moves
  the discriminator by up to 1e-2 and the sub-models' cross-entropy step by up to the
  sub-models' 3e-3 (configs/mimic.py, synthetic)."""
  method, state, batch = game_setup
  with jax.enable_x64(True):
    fresh = state.replace(
      method_state=method.init_method_state(jax.random.key(1), (16, 16, 1)),
      opt_state=state.tx.init(state.params),
    )
    fresh = jax.tree.map(
      lambda a: a.astype(jnp.float64) if getattr(a, 'dtype', None) == jnp.float32 else a, fresh
    )
  config = method.config.copy_and_resolve_references()
  config.mimic.disc_steps = 1
  one = methods.create(config, method.model)
  new = _step(one, fresh, batch, 'discriminator')
  moved = lambda a, b: max(  # noqa: E731
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  disc_move = moved(new.method_state.params, fresh.method_state.params)
  member_move = moved(new.params, fresh.params)
  assert 0.9e-2 < disc_move <= 1e-2 * (1 + 1e-6)
  assert 0.9 * 3e-3 < member_move <= 3e-3 * (1 + 1e-6)
