"""The science of ``mimic``: the phase of every epoch, which parameters each phase moves, and
that the adversarial gradient moves the sub-models the way the objective says."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax import methods
from mimic_jax.methods import mimic as mimic_lib
from mimic_jax.models import resnet
from mimic_jax.training import state as state_lib
from mimic_jax.training import steps

D, A, C = 'discriminator', 'adversarial', 'cross_entropy'


@pytest.mark.parametrize(
  'first_phase, period, expected',
  [
    ('discriminator', 2, [D, A, D, A, D, A]),
    ('discriminator', 3, [D, A, A, D, A, A]),
    # The released code: epochs from 1, epoch % period == 1 adversarial, == 0 discriminator,
    # otherwise neither (a cross-entropy epoch).
    ('adversarial', 2, [A, D, A, D, A, D]),
    ('adversarial', 3, [A, C, D, A, C, D]),
  ],
)
def test_phase_of_every_epoch_and_step(first_phase, period, expected):
  config = test_config.get_config('mimic')
  config.mimic.first_phase = first_phase
  config.mimic.period = period
  config.mimic.alternation = 'epoch'
  method = methods.build(config)
  steps_per_epoch = 4
  by_epoch = [method.phase(s, steps_per_epoch) for s in range(6 * steps_per_epoch)]
  assert by_epoch == [p for p in expected for _ in range(steps_per_epoch)]
  config.mimic.alternation = 'step'
  assert [method.phase(s, steps_per_epoch) for s in range(6)] == expected


def small_mimic(**mimic_overrides):
  """A float64 ``mimic`` method (3 small GroupNorm ResNets, input-gradient maps pooled by 2,
  ``config.mimic`` changed by ``mimic_overrides``), its state, and a batch of 6 images."""
  with jax.enable_x64(True):
    config = test_config.get_config('mimic')
    config.mimic.explainer = 'input_gradients'
    config.mimic.explainer_kwargs = {}
    config.mimic.post.pool = 2
    config.mimic.disc_hidden = 16
    for key, value in mimic_overrides.items():
      config.mimic[key] = value
    model = resnet.ResNet(stage_sizes=(1, 1), width=8, num_classes=3, norm='group', stem_pool=False)
    method = methods.create(config, model)
    state = state_lib.create_state(method, (16, 16, 1), jax.random.key(0))
    state = jax.tree.map(
      lambda a: a.astype(jnp.float64) if getattr(a, 'dtype', None) == jnp.float32 else a, state
    )
    rng = np.random.default_rng(0)
    batch = {
      'image': jnp.asarray(rng.normal(size=(6, 16, 16, 1))),
      'label': jnp.asarray([0, 1, 2, 0, 1, 2]),
    }
  return method, state, batch


@pytest.fixture(scope='module')
def mimic_setup():
  return small_mimic()


def _maps(method, params, batch):
  return method.training_explanations(params, {}, batch['image'], batch['label'], jax.random.key(3))


@pytest.mark.parametrize('objective', ['neg_ce', 'confusion'])
def test_a_step_along_the_adversarial_gradient_confuses_the_discriminator(mimic_setup, objective):
  """A small step of the sub-models down the gradient of the adversarial term alone raises
  the discriminator's CE (``neg_ce``) or brings its prediction closer to uniform
  (``confusion``), with the discriminator fixed (float64, first order)."""
  method, state, batch = mimic_setup
  disc = state.method_state
  with jax.enable_x64(True):

    def adversarial(params):
      maps = _maps(method, params, batch)
      return mimic_lib.adversarial_term(disc.apply_fn, disc.params, maps, objective)[0]

    before = float(adversarial(state.params))
    grads = jax.grad(adversarial)(state.params)
    norm = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    assert norm > 0
    lr = 1e-3 / norm
    moved = jax.tree.map(lambda p, g: p - lr * g, state.params, grads)
    after = float(adversarial(moved))
    assert after < before  # the adversarial term falls by about lr * norm^2
    assert (before - after) == pytest.approx(lr * norm**2, rel=0.05)
    d_ce = [
      float(mimic_lib.discriminator_ce(disc.apply_fn, disc.params, _maps(method, p, batch)))
      for p in (state.params, moved)
    ]
    if objective == 'neg_ce':
      assert d_ce[1] > d_ce[0]


def _phase_update(method, state, batch, phase):
  with jax.enable_x64(True):
    new, _ = jax.jit(functools.partial(steps.train_step, method, phase))(state, batch)
  return new


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _max_difference(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_each_phase_moves_only_what_it_should(mimic_setup):
  """The discriminator phase: the discriminator moves, the sub-models take exactly a
  cross-entropy step (no adversarial term reaches them). The adversarial phase: the
  discriminator's parameters and optimiser are untouched, the sub-models' step differs from a
  cross-entropy step. The cross-entropy phase: the discriminator rests. (The cross-entropy
  step is compared to float64 rounding: the programs differ, not the mathematics; an Adam
  step moves a parameter by up to the learning rate, 3e-3.)"""
  method, state, batch = mimic_setup
  ce_only = methods.create(method.config.copy_and_resolve_references(), method.model)
  ce_only.config.mimic.beta = 0.0
  reference = _phase_update(ce_only, state, batch, A)  # beta = 0: CE only
  d_phase = _phase_update(method, state, batch, D)
  assert _max_difference(d_phase.method_state.params, state.method_state.params) > 1e-4
  assert _max_difference(d_phase.params, reference.params) < 1e-12
  a_phase = _phase_update(method, state, batch, A)
  assert _same(a_phase.method_state.params, state.method_state.params)
  assert _same(a_phase.method_state.opt_state, state.method_state.opt_state)
  assert _max_difference(a_phase.params, reference.params) > 1e-4
  c_phase = _phase_update(method, state, batch, C)
  assert _same(c_phase.method_state, state.method_state)
  assert _max_difference(c_phase.params, reference.params) < 1e-12


def test_stop_gives_exactly_the_cross_entropy_step(mimic_setup):
  """``explanation_gradient='stop'`` (the released code): the adversarial phase's update of
  the sub-models is bitwise the cross-entropy step's."""
  method, state, batch = mimic_setup
  stop = methods.create(method.config.copy_and_resolve_references(), method.model)
  stop.config.mimic.explanation_gradient = 'stop'
  ce_only = methods.create(method.config.copy_and_resolve_references(), method.model)
  ce_only.config.mimic.beta = 0.0
  assert _same(
    _phase_update(stop, state, batch, A).params, _phase_update(ce_only, state, batch, A).params
  )


def test_discriminator_sees_one_map_per_sub_model_and_image(mimic_setup):
  method, state, batch = mimic_setup
  with jax.enable_x64(True):
    maps = _maps(method, state.params, batch)
    logits = mimic_lib.discriminator_logits(
      state.method_state.apply_fn, state.method_state.params, maps
    )
  assert maps.shape == (3, 6, 8, 8)
  assert float(maps.min()) >= 0 and np.allclose(maps.max(axis=(2, 3)), 1.0)  # min-max
  assert logits.shape == (18, 3)


@pytest.mark.parametrize('explainer', ['input_gradients', 'gradient_shap'])
@pytest.mark.parametrize('objective', ['neg_ce', 'confusion'])
def test_one_program_per_sub_model_takes_the_same_step(mimic_setup, explainer, objective):
  """``ensemble_execution='per_member'``: each sub-model's share of the loss in its own call
  of one program, the shares' gradients stacked, then Adam. Every phase gives the state and
  metrics of the one-program step (float64; GradientSHAP draws each sub-model's key from the
  step's key as the one program does)."""
  method, state, batch = mimic_setup
  config = method.config.copy_and_resolve_references()
  config.mimic.objective = objective
  config.mimic.explainer = explainer
  config.mimic.explainer_kwargs = {'samples': 2} if explainer == 'gradient_shap' else {}
  method = methods.create(config, method.model)
  weights = steps.loss_weights(method)
  for phase in method.phases:
    with jax.enable_x64(True):
      one = steps.compile_step(method, phase)
      per_member = steps.compile_step(method, phase, per_member=True)
      assert isinstance(per_member, steps.PerMemberStep)
      copy = lambda s: jax.tree.map(jnp.array, s)  # noqa: E731 (steps donate their state)
      new_one, metrics_one = one(copy(state), batch, weights)
      new_per, metrics_per = per_member(copy(state), batch, weights)
      computed_one, computed_per = metrics_one.compute(), metrics_per.compute()
    assert _max_difference(new_per, new_one) < 1e-12, phase
    assert _max_difference(new_per, state) > 1e-4, phase  # it did take a step
    assert computed_per.keys() == computed_one.keys() == set(method.metric_names)
    for name, value in computed_one.items():
      assert float(computed_per[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-14), name
