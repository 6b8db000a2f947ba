"""Prepares the configured dataset before a run: builds it from the manual_dir (for the
embedded default, after writing the synthetic PhysioNet tree there), or stages a ``gs://``
build to the local cache."""

from __future__ import annotations

from collections.abc import Callable
import json
import logging
import os
import sys
import time

import ml_collections
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import prepare
from data_builders.reflacx import prepare as reflacx_prepare
from data_builders.synthetic_egd import generate
from data_builders.synthetic_reflacx import generate as reflacx_generate
from mimic_jax.data import staging


def prepare_dataset(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Prepares ``config.data``'s dataset and returns its builder.

  A ``gs://`` data dir: the build that is already there is staged to the local cache (nothing
  is built in a bucket). Otherwise the TFDS dataset is built from ``manual_dir`` (a no-op when
  it is built); with ``data.synthetic`` set, the synthetic PhysioNet tree is written there
  first if it is missing, and with ``data.synthetic.decoy`` also its decoy twin (the same
  images with the shortcut marker in a wrong class's corner; :func:`decoy_dirs`).
  """
  if staging.is_remote(data.data_dir):
    return _builder(data, data.manual_dir, staging.local_data_dir(data))
  if staging.dataset_name(data) == 'reflacx':
    if data.get('synthetic_reflacx'):
      _write_synthetic_reflacx_tree(data.synthetic_reflacx, data.manual_dir)
    else:
      check_inputs(data)
    return _build(data, data.manual_dir, data.data_dir)
  if data.get('synthetic'):
    _write_synthetic_tree(data.synthetic, data.manual_dir, decoy=False)
    if data.synthetic.get('decoy'):
      decoy_manual_dir, decoy_data_dir = decoy_dirs(data)
      _write_synthetic_tree(data.synthetic, decoy_manual_dir, decoy=True)
      _build(data, decoy_manual_dir, decoy_data_dir)
  else:
    check_inputs(data)
  return _build(data, data.manual_dir, data.data_dir)


def check_inputs(data: ml_collections.ConfigDict) -> None:
  """Raises ``FileNotFoundError`` before anything is written if the dataset is neither built
  in ``data.data_dir`` nor buildable from ``data.manual_dir``."""
  name, dataset = staging.build_name(data), staging.dataset_name(data)
  built = os.path.join(data.data_dir, dataset, name)
  if os.path.isdir(built) and any(
    os.path.exists(os.path.join(built, v, 'dataset_info.json')) for v in os.listdir(built)
  ):
    return
  needed, doc = {
    'mimic_cxr_egd': ('egd-cxr/1.0.0/master_sheet.csv', 'docs/dataset.md'),
    'reflacx': (
      'reflacx-xray-localization/1.0.0/main_data/metadata_phase_1.csv',
      'docs/reflacx.md',
    ),
  }[dataset]
  if not os.path.exists(os.path.join(data.manual_dir, needed)):
    raise FileNotFoundError(
      f'config.data.data_dir={data.data_dir!r} holds no build of {dataset}/{name}, '
      f'and config.data.manual_dir={data.manual_dir!r} has no {needed} to '
      f'build it from ({doc} says how to lay out the PhysioNet download)'
    )


def decoy_dirs(data: ml_collections.ConfigDict) -> tuple[str, str]:
  """``(manual_dir, data_dir)`` of the synthetic decoy tree and its build: beside the
  dataset's own, with ``_decoy`` appended."""
  return f'{os.path.normpath(data.manual_dir)}_decoy', f'{os.path.normpath(data.data_dir)}_decoy'


def _build(
  data: ml_collections.ConfigDict, manual_dir: str, data_dir: str
) -> tfds.core.DatasetBuilder:
  builder = _builder(data, manual_dir, data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _builder(
  data: ml_collections.ConfigDict, manual_dir: str, data_dir: str
) -> tfds.core.DatasetBuilder:
  if staging.dataset_name(data) == 'reflacx':
    return reflacx_prepare.make_builder(
      data_dir, config=data.builder_config, skip_invalid_rows=data.get('skip_invalid_rows', False)
    )
  return prepare.make_builder(
    manual_dir,
    data_dir,
    config=data.builder_config,
    gaze_sigma=data.get('gaze_sigma'),
    skip_invalid_rows=data.get('skip_invalid_rows', False),
  )


def _progress(name: str) -> Callable[[int, int], None]:
  """A generator's progress callback: a line to stderr at every tenth of the images."""
  t0 = time.time()

  def progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
      print(f'[data] {name} images {done}/{total} ({time.time() - t0:.0f}s)', file=sys.stderr)
      sys.stderr.flush()

  return progress


# What a synthetic tree was written with, kept beside it (``manual_dir/synthetic.json``).
STAMP = 'synthetic.json'


def _read_stamp(path: str) -> dict | None:
  """What the synthetic tree beside ``path`` was written with; ``None`` without a stamp."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class StaleSyntheticTreeError(ValueError):
  """The synthetic tree on disk is not the one the config asks for."""


def _write_synthetic_tree(syn: ml_collections.ConfigDict, manual_dir: str, decoy: bool) -> None:
  """Writes the synthetic tree ``syn`` describes to ``manual_dir`` unless it is there. Raises
  ``ValueError`` if the tree there was written by another generator version or with other
  settings (its TFDS build would silently hold other data)."""
  stamp = {
    'generator_version': generate.GENERATOR_VERSION,
    'num_images': syn.num_images,
    'seed': syn.seed,
    'scale': syn.scale,
    'shortcut': dict(syn.shortcut),
    'decoy': decoy,
    'reader': syn.get('reader', 'realistic'),
    'readers': syn.get('readers', 5),
    'multi_reader_share': syn.get('multi_reader_share', 0.25),
  }
  stamp_path = os.path.join(manual_dir, STAMP)
  if os.path.exists(os.path.join(manual_dir, 'egd-cxr', '1.0.0', 'fixations.csv')):
    found = _read_stamp(stamp_path)
    if found != stamp:
      raise StaleSyntheticTreeError(
        f'{manual_dir} holds a synthetic tree written '
        + (f'with {found}' if found else f'by an older generator (no {STAMP})')
        + f', but this run asks for {stamp}. Delete that folder and the dataset built from it '
        '(config.data.data_dir; for the decoy tree its _decoy twin) to write and build both anew.'
      )
    return
  name = 'decoy' if decoy else 'synthetic'
  progress = _progress(name)
  logging.info('Writing the %s PhysioNet tree to %s', name, manual_dir)
  generate.write_tree(
    manual_dir,
    syn.num_images,
    seed=syn.seed,
    scale=syn.scale,
    shortcut=dict(syn.shortcut),
    raw_gaze=False,
    progress=progress,
    decoy=decoy,
    reader=stamp['reader'],
    num_readers=stamp['readers'],
    multi_reader_share=stamp['multi_reader_share'],
  )
  with open(stamp_path, 'w') as f:
    json.dump(stamp, f, indent=1)


def _write_synthetic_reflacx_tree(syn: ml_collections.ConfigDict, manual_dir: str) -> None:
  """Writes the synthetic REFLACX tree ``syn`` describes to ``manual_dir`` unless it is there;
  ``StaleSyntheticTreeError`` if the tree there was written otherwise."""
  stamp = {
    'generator_version': reflacx_generate.GENERATOR_VERSION,
    'phase_images': list(syn.phase_images),
    'seed': syn.seed,
    'scale': syn.scale,
    'readers': syn.readers,
  }
  stamp_path = os.path.join(manual_dir, STAMP)
  if os.path.exists(os.path.join(manual_dir, reflacx_generate.TRUTH_FILE)):
    found = _read_stamp(stamp_path)
    if found != stamp:
      raise StaleSyntheticTreeError(
        f'{manual_dir} holds a synthetic REFLACX tree written with {found}, but this run asks '
        f'for {stamp}. Delete that folder and the dataset built from it (config.data.data_dir) '
        'to write and build it anew.'
      )
    return
  progress = _progress('synthetic REFLACX')
  logging.info('Writing the synthetic REFLACX tree to %s', manual_dir)
  reflacx_generate.write_tree(
    manual_dir,
    tuple(syn.phase_images),
    seed=syn.seed,
    scale=syn.scale,
    num_readers=syn.readers,
    progress=progress,
  )
  with open(stamp_path, 'w') as f:
    json.dump(stamp, f, indent=1)
