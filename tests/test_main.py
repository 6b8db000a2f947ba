"""End to end: main.py on a tiny synthetic tree, and the build CLI."""

import json
import subprocess
import sys

import pytest

from configs import mimic


def _run(args, cwd=None):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False,
                        cwd=cwd)


def test_main_builds_the_synthetic_dataset_and_prints_its_summary(tmp_path):
  out = _run(['main.py', '--config=configs/mimic.py:synthetic', f'--workdir={tmp_path}/run',
              f'--config.data.data_dir={tmp_path}/tfds',
              f'--config.data.manual_dir={tmp_path}/manual',
              '--config.data.synthetic.num_images=12', '--config.data.synthetic.scale=0.36'])
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'mimic_cxr_egd/128_sigma75/1.0.0' in out.stdout
  counts = {l.split()[0]: int(l.split()[1]) for l in out.stdout.splitlines()
            if l.strip().split(' ')[0] in ('train', 'validation', 'test')}
  assert sum(counts.values()) == 12
  meta = json.loads(next((tmp_path / 'tfds').glob('mimic_cxr_egd/*/1.0.0/metadata.json'))
                    .read_text())
  assert meta['skipped_ids'] == [] and meta['image_format'] == 'jpg'


def test_build_cli_and_unknown_config(tmp_path):
  from data_builders.synthetic_egd import generate  # pylint: disable=g-import-not-at-top
  generate.write_tree(tmp_path / 'm', 6, seed=2, scale=0.36, num_workers=0)
  ok = _run(['-m', 'data_builders.build', f'--manual_dir={tmp_path}/m',
             f'--data_dir={tmp_path}/d', '--config=64', '--num_workers=0'])
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert 'mimic_cxr_egd/64/1.0.0' in ok.stdout and 'skipped_ids (0): none' in ok.stdout
  bad = _run(['-m', 'data_builders.build', f'--manual_dir={tmp_path}/m',
              f'--data_dir={tmp_path}/d', '--config=100'])
  assert bad.returncode != 0 and "unknown config '100'" in bad.stderr


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="unknown config variant 'nope'"):
    mimic.get_config('nope')
