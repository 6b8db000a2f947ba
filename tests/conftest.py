"""Shared fixtures: a small synthetic PhysioNet-format tree and its built dataset."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import pytest  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

# grain's multiprocessing reads absl flags; pytest never parses them (google/grain#1355).
flags.FLAGS.mark_as_parsed()

from data_builders.synthetic_egd import generate  # pylint: disable=g-import-not-at-top

# Images of about 1100 x 900: small enough to be fast, large enough that the official
# formula maps off-image fixations to negative pixels (below ~0.34 it truncates them to 0).
FIXTURE_SCALE = 0.36
FIXTURE_SIGMA = 150.0 * FIXTURE_SCALE


@pytest.fixture(scope='session')
def synthetic_tree(tmp_path_factory):
  """A 40-image synthetic manual_dir (returns (path, per-image specs))."""
  out = tmp_path_factory.mktemp('manual')
  specs = generate.write_tree(out, num_images=40, seed=3, scale=FIXTURE_SCALE,
                              shortcut={'train': 1.0, 'test': 0.0}, num_workers=0)
  return out, specs
