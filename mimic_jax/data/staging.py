"""A TFDS data dir in object storage (``gs://...``), read from a local copy.

ArrayRecord's reader opens plain files only (google/array_record#120), so a build kept in
a bucket is copied once per host to ``config.data.local_cache_dir`` (through etils
``epath``, which serves ``gs://`` with gcsfs) and read from there. Files already present
with the same size are not copied again; each file appears atomically (written under a
temporary name, then renamed), so processes sharing a host can stage concurrently.
"""

from __future__ import annotations

import functools
import os
import time
import uuid

from absl import logging
from etils import epath
import ml_collections

from data_builders.mimic_cxr_egd import prepare
from data_builders.reflacx import prepare as reflacx_prepare

DATASET_NAME = 'mimic_cxr_egd'
DATASETS = ('mimic_cxr_egd', 'reflacx')


def is_remote(path: str) -> bool:
  return '://' in str(path)


def dataset_name(data: ml_collections.ConfigDict) -> str:
  """The TFDS dataset ``data`` reads: ``mimic_cxr_egd`` (EGD) or ``reflacx``."""
  name = data.get('dataset') or DATASET_NAME
  if name not in DATASETS:
    raise ValueError(f'config.data.dataset={name!r} is invalid; choose one of {list(DATASETS)}')
  return name


def build_name(data: ml_collections.ConfigDict) -> str:
  """The builder config's folder name under ``<data_dir>/<dataset>/``."""
  if dataset_name(data) == 'reflacx':
    return reflacx_prepare.config_name(data.builder_config, data.get('skip_invalid_rows', False))
  return prepare.config_name(
    data.builder_config, data.get('gaze_sigma'), data.get('skip_invalid_rows', False)
  )


def local_data_dir(data: ml_collections.ConfigDict) -> str:
  """``data.data_dir`` itself when local; otherwise the local copy of the configured build
  (copied now if needed). Raises FileNotFoundError if the bucket has no such build."""
  if not is_remote(data.data_dir):
    return data.data_dir
  _stage(str(data.data_dir), f'{dataset_name(data)}/{build_name(data)}', str(data.local_cache_dir))
  return str(data.local_cache_dir)


def _files(folder: epath.Path):
  """Files under ``folder``, recursively (object stores refuse ``**`` globs)."""
  for path in sorted(folder.iterdir()):
    if path.is_dir():
      yield from _files(path)
    else:
      yield path


@functools.cache
def _stage(data_dir: str, rel: str, cache_dir: str) -> None:
  """Copies ``data_dir/rel`` to ``cache_dir/rel`` (once per process)."""
  src = epath.Path(data_dir) / rel
  if not src.exists():
    raise FileNotFoundError(
      f'{src} does not exist: build the dataset locally (python -m data_builders.build) and '
      f'copy {rel} to {data_dir} (launch/tpu_vm.sh data does that)'
    )
  dst = epath.Path(cache_dir) / rel
  t0, copied, nbytes = time.time(), 0, 0
  for path in _files(src):
    target = dst / path.relative_to(src)
    size = path.stat().length
    if target.exists() and target.stat().length == size:
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f'.{target.name}.{uuid.uuid4().hex}.tmp'
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, target)
    copied, nbytes = copied + 1, nbytes + size
  if copied:
    logging.info(
      'staged %d files (%.1f MB) of %s to %s in %.1fs',
      copied,
      nbytes / 1e6,
      src,
      dst,
      time.time() - t0,
    )
