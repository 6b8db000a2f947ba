"""gs:// work and data dirs, through a local stand-in: etils' epath mock serves ``gs://`` from
a local folder, so every epath call our code makes takes the object-storage path."""

import json
import os
import pathlib
import shutil

from etils import epath
from etils.epath import testing as epath_testing
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax.data import pipeline as input_pipeline
from mimic_jax.data import staging as data_staging
from mimic_jax.evaluation import figures as report_figures
from mimic_jax.training import metric_writer


@pytest.fixture
def fake_gcs(tmp_path):
  """``gs://X`` is served from ``tmp_path/gcs/X``; yields that folder."""
  root = tmp_path / 'gcs'
  root.mkdir()

  def local(p):
    s = os.fspath(p) if isinstance(p, (str, os.PathLike)) else p
    return (
      str(root) + '/' + s[len('gs://') :] if isinstance(s, str) and s.startswith('gs://') else p
    )

  def remote(s):
    return 'gs://' + s[len(str(root)) + 1 :] if s.startswith(str(root) + '/') else s

  def translated(orig, path, *args, **kwargs):
    return orig(local(path), *[local(a) for a in args], **kwargs)

  def glob(orig, path):
    return [remote(p) for p in orig(local(path))]

  def walk(orig, path, **kwargs):
    for d, dirs, files in orig(local(path), **kwargs):
      yield remote(str(d)), dirs, files

  fns = {
    name: translated
    for name in (
      'copy',
      'exists',
      'isdir',
      'listdir',
      'makedirs',
      'mkdir',
      'open',
      'remove',
      'rename',
      'replace',
      'rmtree',
      'stat',
    )
  }
  with epath_testing.mock_epath(glob=glob, walk=walk, **fns):
    assert epath.Path('gs://probe').exists() is False
    yield root


def test_gs_data_dir_is_staged_and_read_like_the_local_one(tiny_dataset, fake_gcs, tmp_path):
  data_dir, manual_dir = tiny_dataset
  shutil.copytree(data_dir, fake_gcs / 'bucket' / 'tfds')
  config = test_config.get_config()
  config.data.manual_dir = manual_dir
  config.data.data_dir = 'gs://bucket/tfds'
  config.data.local_cache_dir = str(tmp_path / 'cache')

  remote = input_pipeline.data_source(config.data, 'train')
  config_local = test_config.get_config()
  config_local.data.data_dir = data_dir
  local = input_pipeline.data_source(config_local.data, 'train')
  assert len(remote) == len(local) > 0
  for i in (0, len(local) - 1):
    np.testing.assert_array_equal(remote[i]['image'], local[i]['image'])
    np.testing.assert_array_equal(remote[i]['gaze'], local[i]['gaze'])
  build = f'mimic_cxr_egd/{data_staging.build_name(config.data)}'
  staged = sorted(
    p.relative_to(tmp_path / 'cache' / build)
    for p in (tmp_path / 'cache' / build).rglob('*')
    if p.is_file()
  )
  original = sorted(
    p.relative_to(os.path.join(data_dir, build))
    for p in pathlib.Path(data_dir, build).rglob('*')
    if p.is_file()
  )
  assert staged == original and any(p.name.endswith('.json') for p in staged)

  config.data.data_dir = 'gs://bucket/elsewhere'
  with pytest.raises(FileNotFoundError, match='gs://bucket/elsewhere/mimic_cxr_egd'):
    input_pipeline.data_source(config.data, 'train')


def test_metric_writer_on_gs_keeps_earlier_lines(fake_gcs):
  first = metric_writer.MetricWriter('gs://bucket/run')
  first.log('line one')
  first.write_scalars(1, {'loss': 2.5}, prefix='train/')
  first.close()
  second = metric_writer.MetricWriter('gs://bucket/run')  # a resumed run
  second.log('line two')
  second.write_scalars(2, {'loss': 1.5}, prefix='train/')
  second.close()
  run = fake_gcs / 'bucket' / 'run'
  assert (run / 'log.txt').read_text() == 'line one\nline two\n'
  rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['step'], r['train/loss']) for r in rows] == [(1, 2.5), (2, 1.5)]


def test_figures_are_written_to_gs(fake_gcs):
  rows = {
    n: {m: {'mean': v, 'ci95': [v - 0.1, v + 0.1]} for m in ('kld', 'nss')}
    for n, v in (('a', 1.0), ('b', 2.0))
  }
  epath.Path('gs://bucket/out').mkdir(parents=True)  # as compare.py does
  report_figures.comparison_chart(['a', 'b'], rows, 'gs://bucket/out/chart.png')
  assert (fake_gcs / 'bucket' / 'out' / 'chart.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
