"""The backend seam: how ``auto`` resolves, what the XLA:CPU compiler option changes in a
compiled step (and that the numbers do not change with it), and what the malloc environment
of ``scripts/xla_cpu_env.sh`` does to XLA:CPU's temporaries (page faults counted by the
kernel, not timed)."""

import collections
import functools
import os
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax import config_check
from mimic_jax import methods
from mimic_jax import tuning
from mimic_jax.training import state as state_lib
from mimic_jax.tuning import compiler_options
from mimic_jax.tuning import cpu_convs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _xla(**overrides):
  return ml_collections.ConfigDict(
    {
      'conv_gradients': 'auto',
      'cpu_conv_library': 'auto',
      'ensemble_execution': 'auto',
      **overrides,
    }
  )


@pytest.mark.parametrize(
  'backend,devices,expected',
  [
    ('cpu', 1, ('custom', 'eigen', 'unrolled', True)),
    ('cpu', 8, ('custom', 'eigen', 'unrolled', True)),
    ('gpu', 1, ('lax', 'xla_default', 'unrolled', False)),
    ('tpu', 1, ('lax', 'xla_default', 'vmap', False)),
    ('tpu', 8, ('lax', 'xla_default', 'unrolled', False)),
  ],
)
def test_auto_resolves_per_backend(backend, devices, expected):
  t = tuning.resolve(_xla(), backend=backend, device_count=devices)
  got = (t.conv_gradients, t.cpu_conv_library, t.ensemble_execution, t.per_member_steps)
  assert got == expected
  assert t.conv is (cpu_convs.Conv if expected[0] == 'custom' else nn.Conv)
  assert bool(t.compiler_options) == (expected[1] == 'eigen')
  assert backend in t.describe() and 'auto' not in t.describe()


def test_per_member_runs_every_other_program_unrolled():
  t = tuning.resolve(_xla(ensemble_execution='per_member'), backend='gpu', device_count=1)
  assert (t.ensemble_execution, t.per_member_steps) == ('unrolled', True)
  assert 'ensemble_execution=per_member' in t.describe()
  unrolled = tuning.resolve(_xla(ensemble_execution='unrolled'), backend='cpu', device_count=1)
  assert (unrolled.ensemble_execution, unrolled.per_member_steps) == ('unrolled', False)


def test_explicit_values_are_kept():
  t = tuning.resolve(
    _xla(conv_gradients='lax', cpu_conv_library='xla_default', ensemble_execution='vmap'),
    backend='cpu',
    device_count=1,
  )
  assert (t.conv, t.compiler_options, t.ensemble_execution) == (nn.Conv, {}, 'vmap')
  config = test_config.get_config('gaze')
  config.xla.cpu_conv_library = 'onednn'
  with pytest.raises(ValueError, match="config.xla.cpu_conv_library='onednn' is invalid"):
    config_check.validate(config, num_devices=1)


def _gaze_step_inputs(size: int = 32, batch: int = 8):
  config = test_config.get_config('gaze')
  method = methods.build(config, conv=cpu_convs.Conv)
  state = state_lib.create_state(method, (size, size, 1), jax.random.key(0))
  k = jax.random.split(jax.random.key(1), 2)
  gaze = jax.random.uniform(k[1], (batch, size, size))
  data = {
    'image': jax.random.normal(k[0], (batch, size, size, 1)),
    'label': jnp.arange(batch) % 3,
    'gaze': gaze / gaze.sum((1, 2), keepdims=True),
  }
  return method, state, data


def _ynn_fusion_roots(hlo: str) -> collections.Counter:
  """The root op of every YNNPACK fusion in optimised HLO text, counted."""
  roots, computation = {}, None
  for line in hlo.splitlines():
    if m := re.match(r'^%(\S+) ', line):
      computation = m.group(1)
    elif computation and 'ROOT' in line:
      roots[computation] = re.search(r'= .*?([a-z][a-z_-]*)\(', line).group(1)
  return collections.Counter(
    roots[re.search(r'calls=%([\w.\-]+)', line).group(1)]
    for line in hlo.splitlines()
    if '__ynn_fusion' in line and 'calls=' in line
  )


def _loss_fn(method, state):
  def loss(params, batch):
    return method.member_loss(params, {}, None, batch, jax.random.key(2), 'train')[0]

  return loss


def test_eigen_takes_convolutions_from_ynnpack_and_nothing_else():
  """Compiled gaze loss gradient (double backprop): with XLA's defaults YNNPACK runs its
  convolutions; with ``eigen`` none, and every other YNNPACK fusion is unchanged."""
  method, state, data = _gaze_step_inputs()
  grad = jax.grad(_loss_fn(method, state))
  options = compiler_options.for_library('eigen')
  assert compiler_options.eigen_available()  # jaxlib 0.12
  default = _ynn_fusion_roots(jax.jit(grad).lower(state.params, data).compile().as_text())
  eigen = _ynn_fusion_roots(
    jax.jit(grad, compiler_options=options).lower(state.params, data).compile().as_text()
  )
  assert default['convolution'] > 0, default
  assert 'convolution' not in eigen, eigen
  del default['convolution']
  assert eigen == default


def test_gaze_step_agrees_with_float64_under_either_library():
  """Loss and gradients of the gaze loss (double backprop), compiled with YNNPACK and with
  Eigen convolutions, against the same loss in float64 (an independent rounding): Eigen is as
  close to float64 as YNNPACK is."""
  method, state, data = _gaze_step_inputs()
  grad_fn = jax.value_and_grad(_loss_fn(method, state))
  results = {}
  for library in ('xla_default', 'eigen'):
    results[library] = jax.jit(
      grad_fn, compiler_options=compiler_options.for_library(library) or None
    )(state.params, data)
  with jax.enable_x64(True):
    as64 = functools.partial(
      jax.tree.map, lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
    )
    loss64, grads64 = jax.jit(grad_fn)(as64(state.params), as64(data))
    loss64, grads64 = float(loss64), jax.tree.leaves(jax.tree.map(np.asarray, grads64))
  error = {}  # the worst parameter tensor's max |float32 - float64|, relative to its max
  for library, (loss, grads) in results.items():
    np.testing.assert_allclose(float(loss), loss64, rtol=1e-5, err_msg=library)
    error[library] = max(
      float(np.max(np.abs(g - g64)) / (np.max(np.abs(g64)) or 1.0))
      for g, g64 in zip(jax.tree.leaves(grads), grads64)
    )
  # float32 double backprop through the normalised map is ~1e-2 off in its worst tensor
  # (measured: 0.018 with either library); the median tensor ~5e-8.
  assert error['xla_default'] < 0.05 and error['eigen'] < 0.05, error
  assert error['eigen'] <= 1.5 * error['xla_default'] + 1e-6, error


_FAULTS_PER_CALL = """
    import resource
    import jax, jax.numpy as jnp
    # A 48 MiB intermediate that feeds a matrix product, so XLA materialises it: one
    # temporary allocation per call, above glibc's largest mmap threshold (32 MiB).
    @jax.jit
    def f(x, w):
      y = jnp.concatenate([jnp.sin(x), jnp.cos(x)]).reshape(4096, -1)
      return (y @ w).sum()
    x, w = jnp.linspace(0.0, 1.0, 6 * 2**20), jnp.ones((3072, 8))
    temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
    for _ in range(3):
      f(x, w).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      f(x, w).block_until_ready()
    print(temp, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults(env_script: bool) -> tuple[float, float]:
  """``(temporary bytes, minor page faults per call)`` of ``_FAULTS_PER_CALL`` in a fresh
  process, started with or without ``scripts/xla_cpu_env.sh`` sourced."""
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  env['JAX_PLATFORMS'] = 'cpu'
  source = 'source scripts/xla_cpu_env.sh; ' if env_script else ''
  code = textwrap.dedent(_FAULTS_PER_CALL)
  proc = subprocess.run(
    ['bash', '-c', f'{source}exec "$0" -c "$1"', sys.executable, code],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  temp, faults = map(float, proc.stdout.split())
  return temp, faults


def test_xla_temporaries_are_not_faulted_in_again_with_the_cpu_environment():
  temp, faults_default = _faults(env_script=False)
  _, faults_retained = _faults(env_script=True)
  pages = temp / 4096
  assert 40 * 2**20 < temp < 60 * 2**20, temp  # between the mmap threshold and a heap
  assert faults_default > 0.5 * pages, (faults_default, pages)
  assert faults_retained < 0.02 * pages, (faults_retained, pages)
