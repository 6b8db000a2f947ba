"""What a run compiles: values users sweep (learning rates, mimic's beta, the gaze weight) are
arrays the step takes, not constants compiled into it, so runs differing only in them share
their programs (and the persistent cache); the step still uses the values it is given."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax import methods
from mimic_jax.models import resnet
from mimic_jax.training import state as state_lib
from mimic_jax.training import steps

SHAPE = (16, 16, 1)


def _method(variant, **values):
  config = test_config.get_config(variant)
  config.mimic.explainer = 'input_gradients'
  config.mimic.explainer_kwargs = {}
  config.mimic.post.pool = 2
  config.mimic.disc_hidden = 16
  for key, value in values.items():
    section, _, leaf = key.rpartition('.')
    (config[section] if section else config)[leaf] = value
  model = resnet.ResNet(stage_sizes=(1,), width=8, num_classes=3, norm='group', stem_pool=False)
  return methods.create(config, model)


def _batch():
  rng = np.random.default_rng(0)
  gaze = rng.random((6, 16, 16)).astype(np.float32)
  return {
    'image': jnp.asarray(rng.normal(size=(6, *SHAPE)), jnp.float32),
    'label': jnp.asarray([0, 1, 2, 0, 1, 2]),
    'gaze': jnp.asarray(gaze / gaze.sum(axis=(1, 2), keepdims=True)),
  }


def _program(method, phase, with_weights=True, per_member=False):
  """The StableHLO text of the method's step, lowered with its weights as arguments (or, for
  the control, as compiled constants); ``per_member``: its programs' texts joined."""
  state = state_lib.create_state(method, SHAPE, jax.random.key(0))
  args = (state, _batch(), steps.loss_weights(method)) if with_weights else (state, _batch())
  if per_member:
    lowered = steps.compile_step(method, phase, per_member=True).lower(*args)
    return '\n'.join(low.as_text() for low in lowered.values())
  step = jax.jit(functools.partial(steps.train_step, method, phase))
  return step.lower(*args).as_text()


@pytest.mark.parametrize(
  'variant,phase,key,values,per_member',
  [
    ('mimic', 'adversarial', 'mimic.beta', (1.0, 0.25), False),
    ('mimic', 'adversarial', 'mimic.beta', (1.0, 0.25), True),
    ('gaze', 'train', 'gaze.weight', (0.3, 3.0), False),
    ('baseline', 'train', 'learning_rate', (1e-4, 3e-3), False),
    ('mimic', 'discriminator', 'mimic.disc_learning_rate', (1e-4, 1e-3), False),
    ('mimic', 'discriminator', 'mimic.disc_learning_rate', (1e-4, 1e-3), True),
  ],
)
def test_a_swept_value_does_not_change_the_program(variant, phase, key, values, per_member):
  first, second = (
    _program(_method(variant, **{key: v}), phase, per_member=per_member) for v in values
  )
  assert first == second


@pytest.mark.parametrize('per_member', [False, True])
def test_compiled_constants_would_change_it(per_member):
  """The control: with beta compiled in as a constant, two betas are two programs."""
  first, second = (
    _program(
      _method('mimic', **{'mimic.beta': b}),
      'adversarial',
      with_weights=False,
      per_member=per_member,
    )
    for b in (1.0, 0.25)
  )
  assert first != second


@pytest.mark.parametrize(
  'variant,phase,key,value',
  [('mimic', 'adversarial', 'mimic.beta', 0.25), ('gaze', 'train', 'gaze.weight', 3.0)],
)
def test_the_step_uses_the_weights_it_is_given(variant, phase, key, value):
  """One compiled step given the weight ``value`` updates the sub-models exactly as a step of
  a config with that value compiled in, and not as one with the default."""
  default, changed = _method(variant), _method(variant, **{key: value})
  state = state_lib.create_state(default, SHAPE, jax.random.key(0))
  batch, name = _batch(), key.split('.')[1]
  traced = jax.jit(functools.partial(steps.train_step, default, phase))
  given = traced(state, batch, {**steps.loss_weights(default), name: jnp.float32(value)})
  given = given[0].params
  expected = jax.jit(functools.partial(steps.train_step, changed, phase))(state, batch)[0].params
  ignored = traced(state, batch, steps.loss_weights(default))[0].params
  for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(
    not np.allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(ignored))
  )


def test_the_learning_rate_is_read_from_the_optimiser_state():
  """Adam's first step moves every parameter by about the learning rate; changing the rate
  held in the state changes the step of the same compiled program."""
  method = _method('baseline')
  state = state_lib.create_state(method, SHAPE, jax.random.key(0))
  step = jax.jit(functools.partial(steps.train_step, method, 'train'))
  for lr in (1e-3, 1e-2):
    state_lr = state.replace(
      opt_state=state.opt_state._replace(
        hyperparams={**state.opt_state.hyperparams, 'learning_rate': jnp.float32(lr)}
      )
    )
    new = step(state_lr, _batch(), {})[0]
    moved = np.concatenate(
      [
        np.abs(np.ravel(a - b))
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))
      ]
    )
    assert np.median(moved[moved > 0]) == pytest.approx(lr, rel=0.05)
  assert step._cache_size() == 1


def _cache_dir_in_a_fresh_process(env):
  code = (
    'from mimic_jax.runtime import compilation_cache; import jax; '
    'print(compilation_cache.enable(), jax.config.jax_compilation_cache_dir)'
  )
  clean = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  out = subprocess.run(
    [sys.executable, '-c', code], env={**clean, **env}, capture_output=True, text=True, check=True
  )
  return out.stdout.split()


def test_the_persistent_cache_is_on_by_default_in_the_user_cache(tmp_path):
  home = str(tmp_path / 'home')
  expected = os.path.join(home, '.cache', 'mimic_jax', 'xla')
  assert _cache_dir_in_a_fresh_process({'HOME': home}) == [expected, expected]
  xdg = str(tmp_path / 'xdg')
  assert _cache_dir_in_a_fresh_process({'XDG_CACHE_HOME': xdg})[0] == f'{xdg}/mimic_jax/xla'
  chosen = str(tmp_path / 'chosen')
  assert _cache_dir_in_a_fresh_process({'JAX_COMPILATION_CACHE_DIR': chosen}) == [chosen] * 2
  off = _cache_dir_in_a_fresh_process({'JAX_ENABLE_COMPILATION_CACHE': 'false'})
  assert off[0] == 'None'
