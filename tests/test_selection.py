"""Choosing on validation: the sweep's selection rule on hand-made results, and the commands
it runs (every run evaluated on validation, never on test)."""

import json

import pytest

from mimic_jax import sweep
from mimic_jax.evaluation import report


def _write(out, name, seed, accuracy, information_gain, kld, split='validation'):
  folder = out / name / f'seed_{seed}' / 'eval' / split
  folder.mkdir(parents=True)
  metric = lambda v: {'mean': v, 'ci95': [v, v], 'n': 10, 'nan': 0}
  scores = {k: metric(0.0) for k in report.MAP_METRICS}
  scores.update(information_gain=metric(information_gain), kld=metric(kld))
  results = {
    'classification': {'accuracy': accuracy, 'mean_auc': 0.9},
    'explanations': {'grad_cam': {'ensemble': scores}},
    'per_image': {},
    'references': {},
  }
  (folder / 'metrics.json').write_text(json.dumps(results))


def test_the_rule_keeps_accurate_candidates_then_takes_the_best_criterion(tmp_path):
  """a: most accurate; b: within 0.02 of a with the best information gain; c: the best
  information gain of all but 0.05 less accurate than a, so not eligible."""
  for seed, jitter in ((0, -0.01), (1, 0.01)):
    _write(tmp_path, 'a', seed, 0.90 + jitter, 0.10, 1.0)
    _write(tmp_path, 'b', seed, 0.89 + jitter, 0.30, 0.8)
    _write(tmp_path, 'c', seed, 0.85 + jitter, 0.50, 0.5)
  chosen = sweep.select(tmp_path, ['a', 'b', 'c'], [0, 1], 'information_gain', 'grad_cam', 0.02)
  assert chosen['eligible'] == ['a', 'b'] and chosen['chosen'] == 'b'
  assert chosen['candidates']['b']['information_gain']['mean'] == pytest.approx(0.30)
  assert chosen['candidates']['a']['accuracy']['mean'] == pytest.approx(0.90)
  # KLD is lower-is-better: among a and b, b's 0.8.
  by_kld = sweep.select(tmp_path, ['a', 'b', 'c'], [0, 1], 'kld', 'grad_cam', 0.02)
  assert by_kld['chosen'] == 'b'
  wide = sweep.select(tmp_path, ['a', 'b', 'c'], [0, 1], 'kld', 'grad_cam', 0.1)
  assert wide['chosen'] == 'c'
  markdown = (tmp_path / 'selection.md').read_text()
  assert 'Chosen: **c**' in markdown and 'within 0.1 of the best' in markdown


def test_candidates_run_their_overrides_and_evaluate_the_split(tmp_path):
  path = tmp_path / 'candidates.json'
  path.write_text(json.dumps({'x': {'variant': 'gaze', 'overrides': {'gaze.weight': 3.0}}}))
  ((name, candidate),) = sweep.load_candidates(str(path)).items()
  sweep.flags.FLAGS(['sweep', '--out=unused'])
  command = sweep.run_command(
    candidate['variant'], 2, tmp_path / name, [], candidate['overrides'], 'validation'
  )
  assert '--split=validation' in command and '--config.gaze.weight=3.0' in command
  assert any(c.endswith(':gaze,synthetic') for c in command) and '--config.seed=2' in command
  path.write_text(json.dumps({'y': {'overrides': {}}}))
  with pytest.raises(sweep.app.UsageError, match="candidate 'y' needs"):
    sweep.load_candidates(str(path))
