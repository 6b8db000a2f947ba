"""Choosing on validation: the sweep's selection rule on hand-made results, and the commands
it runs (every run evaluated on validation, never on test)."""

import json

import pytest

from mimic_jax import sweep
from mimic_jax.evaluation import report


def _write(out, name, seed, accuracy, information_gain, kld, split='validation', probe=None):
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
  if probe is not None:
    results['explanations']['grad_cam']['distinguishability'] = {
      'logistic': metric(probe),
      'discriminator': metric(probe),
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


def test_probe_criterion_against_the_control_and_the_game_columns(tmp_path):
  """Lowest probe accuracy among the candidates within 0.02 of the control's accuracy:
  ensemble 0.90 (probe 0.99); m1 0.89 (probe 0.60) eligible; m2 0.85 (probe 0.40) is not.
  m1's metrics.jsonl game rows: accuracy 0.8 and 0.6 after discriminator steps (mean 0.7),
  0.3 after an adversarial step."""
  for seed in (0, 1):
    _write(tmp_path, 'ensemble', seed, 0.90, 0.0, 1.0, probe=0.99)
    _write(tmp_path, 'm1', seed, 0.89, 0.0, 1.0, probe=0.60)
    _write(tmp_path, 'm2', seed, 0.85, 0.0, 1.0, probe=0.40)
    rows = [(15, 1.0, 0.8), (30, 0.0, 0.3), (45, 1.0, 0.6)]
    (tmp_path / 'm1' / f'seed_{seed}' / 'metrics.jsonl').write_text(
      ''.join(
        json.dumps(
          {
            'step': s,
            'game/disc_accuracy': a,
            'game/after_discriminator_phase': f,
          }
        )
        + '\n'
        for s, f, a in rows
      )
      + json.dumps({'step': 45, 'gradients/beta_over_ce': 0.7})
      + '\n'
    )
  names = ['ensemble', 'm1', 'm2']
  chosen = sweep.select(
    tmp_path, names, [0, 1], 'probe_logistic', 'grad_cam', 0.02, accuracy_reference='ensemble'
  )
  assert chosen['eligible'] == ['ensemble', 'm1'] and chosen['chosen'] == 'm1'
  game = chosen['candidates']['m1']['game']
  assert game['disc_after_discriminator']['mean'] == pytest.approx(0.7)
  assert game['disc_after_adversarial']['mean'] == pytest.approx(0.3)
  assert game['grad_ratio']['mean'] == pytest.approx(0.7)  # from the gradients/ rows
  assert 'game' not in chosen['candidates']['ensemble']
  markdown = (tmp_path / 'selection.md').read_text()
  assert "within 0.02 of ensemble's (0.900)" in markdown and 'lowest mean validation' in markdown
  assert '| m1 | 0.890' in markdown and '0.700 [0.700, 0.700]' in markdown
  with pytest.raises(sweep.app.UsageError, match='not a candidate'):
    sweep.select(
      tmp_path, names, [0, 1], 'probe_logistic', 'grad_cam', 0.02, accuracy_reference='x'
    )
