"""``config.batch_chunks``: the member step over K equal sub-batches, as independent
computations in one program, gives the whole batch's gradient and metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import test as test_config
from mimic_jax import config_check
from mimic_jax import models
from mimic_jax import steps

B = 8


def _state(config, sgd: bool = False):
  """A fresh state; with ``sgd``, float64 parameters and SGD at rate 1, whose update is the
  gradient (call under ``jax.enable_x64``)."""
  model = models.create_model(config.model)
  state = steps.create_state(config, model, (32, 32, 1), jax.random.key(0))
  if sgd:
    params = jax.tree.map(lambda a: a.astype(jnp.float64), state.params)
    tx = optax.sgd(1.0)
    state = state.replace(params=params, tx=tx, opt_state=tx.init(params))
  return state


def _batch(dtype=jnp.float32):
  k = jax.random.split(jax.random.key(1), 2)
  gaze = jax.random.uniform(k[1], (B, 32, 32), dtype)
  return {'image': jax.random.normal(k[0], (B, 32, 32, 1), dtype),
          'label': jnp.arange(B) % 3, 'gaze': gaze / gaze.sum((1, 2), keepdims=True)}


@pytest.mark.parametrize('method, chunks', [('gaze', 2), ('gaze', 4), ('baseline', 2)])
def test_chunked_step_gives_the_whole_batch_gradient_and_metrics(method, chunks):
  """In float64 (the gaze gradient through a normalised map moves by ~5e-3 with float32
  rounding alone), with SGD at rate 1: the chunked step's update equals ``jax.grad`` of the
  whole batch's ``member_loss``, and its metrics the whole batch's."""
  config = test_config.get_config(method)
  config.batch_chunks = chunks
  with jax.enable_x64(True):
    state, batch = _state(config, sgd=True), _batch(jnp.float64)
    rng = jax.random.split(jax.random.wrap_key_data(state.rng))[1]
    (_, (aux, _)), grads = jax.value_and_grad(
        lambda p: steps.member_loss(config, state, p, batch, rng), has_aux=True)(state.params)
    assert steps.batch_chunks(config, state, B) == chunks
    new_state, metrics = jax.jit(functools.partial(steps.member_step, config))(state, batch)
    update = jax.tree.map(jnp.subtract, state.params, new_state.params)
    for got, want in zip(jax.tree.leaves(update), jax.tree.leaves(grads)):
      assert got.dtype == jnp.float64
      # atol: float64 summation-order rounding, amplified by the gaze gradient through a
      # normalised map, reaches ~3e-12 of the largest entry (float32 would be ~1e-3).
      np.testing.assert_allclose(got, want, rtol=1e-9,
                                 atol=1e-11 * float(jnp.max(jnp.abs(want))) + 1e-15)
    computed = metrics.compute()
    for key in ('loss', 'ce', 'accuracy', 'penalty'):
      np.testing.assert_allclose(computed[key], aux[key], rtol=1e-12)
  if method == 'gaze':
    assert float(computed['penalty']) > 0


def test_auto_chunks_only_the_one_model_gaze_step_on_one_cpu_device(monkeypatch):
  """``batch_chunks=0``: 2 for the GroupNorm gaze KLD step with one sub-model on one CPU
  device; 1 for the plain step, BatchNorm, several sub-models, an odd batch, other backends
  and several devices."""
  monkeypatch.setattr(jax, 'device_count', lambda: 1)  # conftest makes 8 CPU devices
  gaze = test_config.get_config('gaze')
  assert gaze.batch_chunks == 0
  gaze_state = _state(gaze)
  assert steps.batch_chunks(gaze, gaze_state, B) == 2
  assert steps.batch_chunks(gaze, gaze_state, B + 1) == 1
  single = test_config.get_config('baseline')
  assert steps.batch_chunks(single, _state(single), B) == 1
  batch_norm = test_config.get_config('gaze')
  batch_norm.model.norm = 'batch'
  assert steps.batch_chunks(batch_norm, _state(batch_norm), B) == 1
  two = test_config.get_config('gaze')
  two.gaze.num_models = 2
  assert steps.batch_chunks(two, _state(two), B) == 1
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  assert steps.batch_chunks(gaze, gaze_state, B) == 1
  monkeypatch.setattr(jax, 'device_count', lambda: 1)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert steps.batch_chunks(gaze, gaze_state, B) == 1


def test_bad_chunks_are_errors_naming_the_key():
  config = test_config.get_config('gaze')
  config.batch_chunks = 3
  with pytest.raises(ValueError, match='config.batch_chunks=3'):
    steps.batch_chunks(config, _state(config), B)
  with pytest.raises(ValueError, match='config.batch_chunks=3'):
    config_check.validate(config, num_devices=1)
  config.batch_chunks = 2
  config.model.norm = 'batch'
  with pytest.raises(ValueError, match='batch statistics'):
    steps.batch_chunks(config, _state(config), B)
  with pytest.raises(ValueError, match='BatchNorm'):
    config_check.validate(config, num_devices=1)
