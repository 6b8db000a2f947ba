"""config.model.cpu_conv_library: what the XLA option changes in the compiled step, and that
the step's numbers do not change with it."""

import collections
import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax import compile_options
from mimic_jax import config_check
from mimic_jax import models
from mimic_jax import steps


def _gaze_step_inputs(size: int = 32, batch: int = 8):
  config = test_config.get_config('gaze')
  model = models.create_model(config.model)
  state = steps.create_state(config, model, (size, size, 1), jax.random.key(0))
  k = jax.random.split(jax.random.key(1), 2)
  gaze = jax.random.uniform(k[1], (batch, size, size))
  data = {'image': jax.random.normal(k[0], (batch, size, size, 1)),
          'label': jnp.arange(batch) % 3, 'gaze': gaze / gaze.sum((1, 2), keepdims=True)}
  return config, state, data


def _ynn_fusion_roots(hlo: str) -> collections.Counter:
  """The root op of every YNNPACK fusion in optimised HLO text, counted."""
  roots, computation = {}, None
  for line in hlo.splitlines():
    if m := re.match(r'^%(\S+) ', line):
      computation = m.group(1)
    elif computation and 'ROOT' in line:
      roots[computation] = re.search(r'= .*?([a-z][a-z_-]*)\(', line).group(1)
  return collections.Counter(roots[re.search(r'calls=%([\w.\-]+)', line).group(1)]
                             for line in hlo.splitlines()
                             if '__ynn_fusion' in line and 'calls=' in line)


def test_eigen_takes_convolutions_from_ynnpack_and_nothing_else():
  """Compiled gaze step (double backprop): with XLA's defaults YNNPACK runs its
  convolutions; with ``eigen`` none, and every other YNNPACK fusion is unchanged."""
  config, state, data = _gaze_step_inputs()
  step = functools.partial(steps.member_step, config)
  options = compile_options.for_config(config)
  assert options is not None  # auto on CPU with jaxlib 0.12
  default = _ynn_fusion_roots(jax.jit(step).lower(state, data).compile().as_text())
  eigen = _ynn_fusion_roots(
      jax.jit(step, compiler_options=options).lower(state, data).compile().as_text())
  assert default['convolution'] > 0, default
  assert 'convolution' not in eigen, eigen
  del default['convolution']
  assert eigen == default


def test_gaze_step_agrees_with_float64_under_either_library():
  """Loss and gradients of the gaze step's loss (double backprop), compiled with YNNPACK and
  with Eigen convolutions, against the same loss in float64 (an independent rounding): Eigen
  is as close to float64 as YNNPACK is."""
  config, state, data = _gaze_step_inputs()

  def loss_fn(params, batch):
    return steps.member_loss(config, state, params, batch, jax.random.key(2))[0]

  grad_fn = jax.value_and_grad(loss_fn)
  results = {}
  for library in ('xla_default', 'eigen'):
    config.model.cpu_conv_library = library
    results[library] = jax.jit(grad_fn, compiler_options=compile_options.for_config(config))(
        state.params, data)
  with jax.enable_x64(True):
    as64 = functools.partial(jax.tree.map, lambda a: a.astype(jnp.float64)
                             if jnp.issubdtype(a.dtype, jnp.floating) else a)
    loss64, grads64 = jax.jit(grad_fn)(as64(state.params), as64(data))
    loss64, grads64 = float(loss64), jax.tree.leaves(jax.tree.map(np.asarray, grads64))
  error = {}  # the worst parameter tensor's max |float32 - float64|, relative to its max
  for library, (loss, grads) in results.items():
    np.testing.assert_allclose(float(loss), loss64, rtol=1e-5, err_msg=library)
    error[library] = max(float(np.max(np.abs(g - g64)) / (np.max(np.abs(g64)) or 1.0))
                         for g, g64 in zip(jax.tree.leaves(grads), grads64))
  # float32 double backprop through the normalised map is ~1e-2 off in its worst tensor
  # (measured: 0.018 with either library); the median tensor ~5e-8.
  assert error['xla_default'] < 0.05 and error['eigen'] < 0.05, error
  assert error['eigen'] <= 1.5 * error['xla_default'] + 1e-6, error


def test_libraries_resolve_and_bad_values_are_named():
  config = test_config.get_config('gaze')
  assert compile_options.for_config(config) == compile_options.for_config(
      ml_collections.ConfigDict({'model': {'cpu_conv_library': 'eigen'}}))
  config.model.cpu_conv_library = 'xla_default'
  assert compile_options.for_config(config) is None
  config.model.cpu_conv_library = 'onednn'
  with pytest.raises(ValueError, match="config.model.cpu_conv_library='onednn' is invalid"):
    compile_options.for_config(config)
  with pytest.raises(ValueError, match="config.model.cpu_conv_library='onednn' is invalid"):
    config_check.validate(config)
