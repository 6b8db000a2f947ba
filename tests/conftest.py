"""Shared fixtures: a small synthetic PhysioNet-format tree and its built dataset."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax
import pytest

# Tests check numbers, not speed: compile fast (as flax's examples do), and share compiled
# steps between the runs of a session through the persistent cache.
# The environment variables reach the main.py subprocesses too.
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
  os.environ.get('TMPDIR', '/tmp'), 'mimic_jax_test_xla_cache'
)
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'
jax.config.update('jax_disable_most_optimizations', True)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
from absl import flags

# grain's multiprocessing reads absl flags; pytest never parses them (google/grain#1355).
flags.FLAGS.mark_as_parsed()

from data_builders.synthetic_egd import generate

# Images of about 1100 x 900: small enough to be fast, large enough that the official
# formula maps off-image fixations to negative pixels (below ~0.34 it truncates them to 0).
FIXTURE_SCALE = 0.36
FIXTURE_SIGMA = 150.0 * FIXTURE_SCALE


@pytest.fixture(scope='session')
def synthetic_tree(tmp_path_factory):
  """A 40-image synthetic manual_dir (returns (path, per-image specs))."""
  out = tmp_path_factory.mktemp('manual')
  specs = generate.write_tree(
    out,
    num_images=40,
    seed=3,
    scale=FIXTURE_SCALE,
    shortcut={'train': 1.0, 'test': 0.0},
    num_workers=0,
  )
  return out, specs


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  """``configs/test.py``'s dataset built once: returns (data_dir, manual_dir)."""
  from configs import test as test_config
  from mimic_jax.data import prepare

  root = tmp_path_factory.mktemp('tiny')
  config = test_config.get_config()
  config.data.data_dir = str(root / 'tfds')
  config.data.manual_dir = str(root / 'manual')
  prepare.prepare_dataset(config.data)
  return config.data.data_dir, config.data.manual_dir


@pytest.fixture(scope='session')
def tiny_reflacx(tmp_path_factory):
  """``configs/test.py:reflacx``'s synthetic REFLACX tree built once: (data_dir, manual_dir)."""
  from configs import test as test_config
  from mimic_jax.data import prepare

  root = tmp_path_factory.mktemp('tiny_reflacx')
  data = test_config.get_config('reflacx').data
  data.data_dir, data.manual_dir = str(root / 'tfds'), str(root / 'manual')
  prepare.prepare_dataset(data)
  return data.data_dir, data.manual_dir
