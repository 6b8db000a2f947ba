"""Prepares the configured dataset before a run: builds it from the manual_dir (for the
embedded default, after writing the synthetic PhysioNet tree there), or stages a ``gs://``
build to the local cache."""

from __future__ import annotations

import logging
import os
import sys
import time

import ml_collections
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import prepare
from data_builders.synthetic_egd import generate
from mimic_jax.data import staging


def prepare_dataset(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Writes the synthetic manual_dir if the config asks for one and it is missing, then builds
  the TFDS dataset (a no-op when it is built); for a ``gs://`` data dir, stages the build that
  is already there to the local cache instead.

  Args:
    data: ``config.data`` with ``data_dir``, ``builder_config``, ``gaze_sigma`` and, when
      ``synthetic`` is set, ``manual_dir``, ``synthetic.num_images/seed/scale/shortcut``.

  Returns:
    The prepared ``MimicCxrEgd`` builder.
  """
  if staging.is_remote(data.data_dir):
    # A build kept in a bucket: read from its local copy; nothing is built there.
    return prepare.make_builder(data.manual_dir, staging.local_data_dir(data),
                                config=data.builder_config, gaze_sigma=data.get('gaze_sigma'))
  manual_dir = data.manual_dir
  if data.get('synthetic') and not os.path.exists(
      os.path.join(manual_dir, 'egd-cxr', '1.0.0', 'fixations.csv')):
    syn = data.synthetic
    t0 = time.time()

    def progress(done, total):
      if done == total or done % max(1, total // 10) == 0:
        print(f'[data] synthetic images {done}/{total} ({time.time() - t0:.0f}s)',
              file=sys.stderr, flush=True)

    logging.info('Writing the synthetic PhysioNet tree to %s', manual_dir)
    generate.write_tree(manual_dir, syn.num_images, seed=syn.seed, scale=syn.scale,
                        shortcut=dict(syn.shortcut), raw_gaze=False, progress=progress)
  builder = prepare.make_builder(manual_dir, data.data_dir, config=data.builder_config,
                               gaze_sigma=data.get('gaze_sigma'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
