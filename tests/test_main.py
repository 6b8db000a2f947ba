"""End to end through the command lines: main.py (train, evaluate), compare, the build CLI."""

import json
import subprocess
import sys

import pytest

from configs import mimic


def _run(args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope='module')
def evaluated_runs(tiny_dataset, tmp_path_factory):
  """Two runs of configs/test.py trained and evaluated through main.py."""
  data_dir, manual_dir = tiny_dataset
  root = tmp_path_factory.mktemp('runs')
  for variant in ('baseline', 'mimic'):
    out = _run(
      [
        'main.py',
        f'--config=configs/test.py:{variant}',
        f'--workdir={root}/{variant}',
        '--mode=train_and_evaluate',
        f'--config.data.data_dir={data_dir}',
        f'--config.data.manual_dir={manual_dir}',
      ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'Evaluation report: {root}/{variant}/eval/test/report.md' in out.stdout
  return root


def test_evaluation_files_hold_the_computed_numbers(evaluated_runs):
  ev = evaluated_runs / 'mimic' / 'eval' / 'test'
  metrics = json.loads((ev / 'metrics.json').read_text())
  report = (ev / 'report.md').read_text()
  assert metrics['num_models'] == 3 and metrics['num_images'] == len(metrics['per_image']['label'])
  for explainer in ('grad_cam', 'input_gradients', 'gradient_shap'):
    entry = metrics['explanations'][explainer]
    kld = entry['ensemble']['kld']
    per_image = metrics['per_image'][explainer]['kld']
    assert kld['mean'] == pytest.approx(sum(per_image) / len(per_image), rel=1e-12)
    assert kld['ci95'][0] <= kld['mean'] <= kld['ci95'][1]
    assert f'{kld["mean"]:.4f} [{kld["ci95"][0]:.4f}, {kld["ci95"][1]:.4f}]' in report
    assert len(entry['members']) == 3 and 'consistency' in entry
  acc = metrics['classification']['accuracy']
  assert f'accuracy {acc:.4f}' in report
  assert list(ev.glob('gallery_*.png'))


def test_compare_writes_relative_changes(evaluated_runs, tmp_path):
  out = _run(
    [
      '-m',
      'mimic_jax.compare',
      f'--workdirs={evaluated_runs}/baseline,{evaluated_runs}/mimic',
      f'--out={tmp_path}',
    ]
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'comparison.json').read_text())
  base = result['runs']['baseline']['kld']['mean']
  other = result['runs']['mimic']['kld']['mean']
  assert result['relative_change']['mimic']['kld']['change'] == pytest.approx(
    other / base - 1, rel=1e-9
  )
  assert f'{100 * (other / base - 1):+.1f}%' in (tmp_path / 'comparison.md').read_text()
  assert (tmp_path / 'comparison.png').stat().st_size > 1000


def test_unknown_config_key_fails_before_any_work(tmp_path):
  out = _run(
    ['main.py', '--config=configs/test.py', f'--workdir={tmp_path}/w', '--config.mimic.bta=2']
  )
  assert out.returncode != 0 and 'bta' in out.stderr
  assert not (tmp_path / 'w').exists()
  bad = _run(
    [
      'main.py',
      '--config=configs/test.py',
      f'--workdir={tmp_path}/w',
      '--config.ensemble.num_models=1',
    ]
  )
  assert bad.returncode != 0 and 'config.ensemble.num_models=1 must be >= 2' in bad.stderr


def test_build_cli_and_unknown_config(tmp_path):
  from data_builders.synthetic_egd import generate

  generate.write_tree(tmp_path / 'm', 6, seed=2, scale=0.36, num_workers=0)
  ok = _run(
    [
      '-m',
      'data_builders.build',
      f'--manual_dir={tmp_path}/m',
      f'--data_dir={tmp_path}/d',
      '--config=64',
      '--num_workers=0',
    ]
  )
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert 'mimic_cxr_egd/64/1.0.0' in ok.stdout and 'skipped_ids (0): none' in ok.stdout
  bad = _run(
    [
      '-m',
      'data_builders.build',
      f'--manual_dir={tmp_path}/m',
      f'--data_dir={tmp_path}/d',
      '--config=100',
    ]
  )
  assert bad.returncode != 0 and "unknown config '100'" in bad.stderr


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="unknown config variant 'nope'"):
    mimic.get_config('nope')
