"""The builder the ways TFDS users run it: a plain script without a main guard, a script on
stdin (as a notebook kernel runs code: no file to import again), and the ``tfds build``
command line in its ``--imports`` and folder forms (with TensorFlow, in ``.venv-tfds``)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TFDS = ROOT / '.venv-tfds' / 'bin' / 'tfds'

_SCRIPT = """
import tensorflow_datasets as tfds
import data_builders.mimic_cxr_egd  # registers the builder

builder = tfds.builder('mimic_cxr_egd/64', data_dir={data_dir!r}, file_format='array_record')
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir={manual!r}))
print('examples', sum(s.num_examples for s in builder.info.splits.values()))
"""


def _built(data_dir: pathlib.Path) -> int:
  info = json.loads((data_dir / 'mimic_cxr_egd' / '64' / '1.0.0' / 'dataset_info.json').read_text())
  return sum(int(s['shardLengths'][0]) for s in info['splits'])


@pytest.mark.parametrize('how', ['file', 'stdin'])
def test_a_plain_script_without_a_main_guard(synthetic_tree, tmp_path, how):
  manual, specs = synthetic_tree
  code = textwrap.dedent(_SCRIPT.format(data_dir=str(tmp_path / 'tfds'), manual=str(manual)))
  if how == 'file':
    (tmp_path / 'build.py').write_text(code)
    out = subprocess.run(
      [sys.executable, str(tmp_path / 'build.py')],
      capture_output=True,
      text=True,
      cwd=tmp_path,
      timeout=600,
      check=False,
    )
  else:
    out = subprocess.run(
      [sys.executable, '-'],
      input=code,
      capture_output=True,
      text=True,
      cwd=tmp_path,
      timeout=600,
      check=False,
    )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'examples {len(specs)}' in out.stdout
  assert _built(tmp_path / 'tfds') == len(specs)


@pytest.mark.parametrize('form', ['imports', 'folder'])
def test_tfds_build_command_line(synthetic_tree, tmp_path, form):
  if not TFDS.exists():
    pytest.fail(
      f'{TFDS} is missing: run bash scripts/setup_tfds_cli_env.sh (the test command '
      'scripts/run_tests.sh does)'
    )
  manual, specs = synthetic_tree
  target = (
    ['mimic_cxr_egd', '--imports', 'data_builders.mimic_cxr_egd']
    if form == 'imports'
    else ['data_builders/mimic_cxr_egd']
  )
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_'))}
  out = subprocess.run(
    [
      str(TFDS),
      'build',
      *target,
      '--data_dir',
      str(tmp_path / 'tfds'),
      '--manual_dir',
      str(manual),
      '--config',
      '64',
      '--file_format',
      'array_record',
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=900,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert _built(tmp_path / 'tfds') == len(specs)


_PREPARE_SCRIPT = """
from configs import test as test_config
from mimic_jax.data import prepare

data = test_config.get_config().data
data.data_dir, data.manual_dir = {data_dir!r}, {manual!r}
data.synthetic.num_images = 12
data.synthetic.decoy = False
prepare.prepare_dataset(data)
print('jpgs', len(list(__import__('pathlib').Path({manual!r}).rglob('*.jpg'))))
"""


def test_the_synthetic_data_from_a_plain_script_without_a_main_guard(tmp_path):
  """The one-call data setup (the synthetic tree rendered by parallel workers, then the
  builder) from an unguarded script: no worker re-imports the script."""
  manual = tmp_path / 'manual'
  code = _PREPARE_SCRIPT.format(data_dir=str(tmp_path / 'tfds'), manual=str(manual))
  (tmp_path / 'setup_data.py').write_text(textwrap.dedent(code))
  out = subprocess.run(
    [sys.executable, str(tmp_path / 'setup_data.py')],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env={**os.environ, 'PYTHONPATH': str(ROOT)},
    timeout=600,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'jpgs 12' in out.stdout


def test_a_synthetic_tree_of_other_settings_or_an_older_generator_is_not_reused(tmp_path):
  """The synthetic tree records what wrote it; a run asking for other settings, or finding a
  tree without that record (an older generator), stops with the folder to delete instead of
  silently training on other data."""
  from configs import test as test_config
  from mimic_jax.data import prepare

  data = test_config.get_config().data
  data.data_dir, data.manual_dir = str(tmp_path / 'tfds'), str(tmp_path / 'manual')
  data.synthetic.num_images = 12
  data.synthetic.decoy = False
  prepare.prepare_dataset(data)
  stamp = json.loads((tmp_path / 'manual' / prepare.STAMP).read_text())
  assert stamp['num_images'] == 12 and stamp['scale'] == data.synthetic.scale
  prepare.prepare_dataset(data)  # the same settings: reused

  data.synthetic.scale = data.synthetic.scale / 2
  with pytest.raises(prepare.StaleSyntheticTreeError, match=str(tmp_path / 'manual')):
    prepare.prepare_dataset(data)
  data.synthetic.scale = stamp['scale']
  (tmp_path / 'manual' / prepare.STAMP).unlink()
  with pytest.raises(prepare.StaleSyntheticTreeError, match='older generator'):
    prepare.prepare_dataset(data)
