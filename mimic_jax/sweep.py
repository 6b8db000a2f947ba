r"""Trains and evaluates a set of config variants over several seeds, then compares them.

  python -m mimic_jax.sweep --variants=baseline,ensemble,mimic,mimic_stop,gaze --seeds=0-4 \
      --out=runs/sweep [--references=baseline,ensemble] [--config=configs/mimic.py] \
      [--nosynthetic | --data=reflacx] [-- --config.num_epochs=4 ...]
  python -m mimic_jax.sweep --candidates=configs/gaze_candidates.json --seeds=0-2 \
      --select_on=validation --criterion=information_gain --out=runs/selection

Each run is ``main.py --config=CONFIG:VARIANT[,synthetic|,reflacx] --config.seed=K
--mode=train_and_evaluate`` in its own workdir ``OUT/VARIANT/seed_K`` (its console output in
``OUT/VARIANT/seed_K.log``); arguments after ``--`` go to every run. The seed sets the
initialisation, the data order and the explainers' noise; the dataset stays the same, so runs
of different variants with one seed form a pair. A run whose evaluation is written is skipped,
and an interrupted one resumes from its checkpoint, so rerunning the command continues the
sweep. All runs share the persistent compilation cache (``mimic_jax.runtime.compilation_cache``):
runs that differ only in the seed, or in a learning rate or loss weight, compile once.

At the end it writes ``OUT/comparison/comparison.md`` (``mimic_jax.compare``): across seeds
when the variants have two or more, else over the test images of the one seed.

**Choosing on validation.** ``--candidates=FILE`` sweeps named candidates instead of variants:
a JSON object ``{name: {"variant": V, "overrides": {"gaze.weight": 1.0, ...}}}``. With
``--select_on=validation`` every run is evaluated on the validation split (never on test), and
the rule is: among the candidates whose mean validation accuracy over the seeds is within
``--accuracy_tolerance`` of the best candidate's, choose the one with the best mean
``--criterion`` of ``--explainer``'s maps (information gain over the prior by default; KLD is
lower-is-better, every other metric higher); ``--criterion`` can also be a quantity of the
ensemble's maps (``probe_logistic``, ``probe_discriminator``: the fresh probes' held-out
accuracy, lower is better; ``pairwise_correlation``, ``cv_consistency``), and
``--accuracy_reference=NAME`` measures the accuracy condition against that candidate (e.g. the
control) instead of the best one. For ``mimic`` runs the table also shows the game (the
in-training discriminator's accuracy after its steps and after adversarial steps, the
adversarial/CE gradient ratio). It writes ``OUT/selection.json`` and
``OUT/selection.md`` (every candidate's numbers with t intervals across seeds, the rule and the
choice). Then evaluate the chosen configuration on test once, and confirm it on data never used
for choosing (another ``data.synthetic.seed``).
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

from mimic_jax import compare
from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import report
from mimic_jax.training import metric_writer

ROOT = pathlib.Path(__file__).resolve().parents[1]

_VARIANTS = flags.DEFINE_list('variants', None, 'Config variants (configs/mimic.py VARIANTS).')
_SEEDS = flags.DEFINE_string('seeds', '0-4', 'Seeds: a range A-B and/or a comma list.')
_OUT = flags.DEFINE_string('out', None, 'Sweep folder: OUT/<variant>/seed_<k>/ per run.')
_CONFIG = flags.DEFINE_string('config', 'configs/mimic.py', 'Config file.')
_SYNTHETIC = flags.DEFINE_bool('synthetic', True, 'The embedded synthetic data at CPU size.')
_DATA = flags.DEFINE_enum(
  'data', 'synthetic', ['synthetic', 'reflacx'], 'Which embedded synthetic data (with --synthetic).'
)
_REFERENCES = flags.DEFINE_list(
  'references', None, 'Variants to compare against (default: the first variant).'
)
_CANDIDATES = flags.DEFINE_string(
  'candidates', None, 'JSON file of named candidates (variant + config overrides), for selection.'
)
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'The split each run evaluates.')
_SELECT_ON = flags.DEFINE_enum(
  'select_on', None, ['validation'], 'Choose among the candidates on this split (see above).'
)
_CRITERION = flags.DEFINE_enum(
  'criterion',
  'information_gain',
  list(report.MAP_METRICS) + list(compare.ENSEMBLE_KEYS),
  'Selection: the map metric, or a quantity of the ensemble maps (probe_*: lower is better).',
)
_EXPLAINER = flags.DEFINE_enum(
  'explainer', 'grad_cam', list(report.EXPLAINERS), 'Selection: whose maps the criterion scores.'
)
_TOLERANCE = flags.DEFINE_float(
  'accuracy_tolerance', 0.02, "Selection: how far below the best candidate's accuracy to allow."
)
_ACCURACY_REFERENCE = flags.DEFINE_string(
  'accuracy_reference',
  None,
  "Selection: the candidate whose mean accuracy sets the bar (default: the best candidate's).",
)
flags.mark_flags_as_required(['out'])


def parse_seeds(text: str) -> list[int]:
  """``'0-4'`` -> ``[0, 1, 2, 3, 4]``; ``'0,3,7'``; or both, comma-separated."""
  seeds = []
  for part in filter(None, text.split(',')):
    first, _, last = part.partition('-')
    try:
      seeds += list(range(int(first), int(last or first) + 1))
    except ValueError as e:
      raise app.UsageError(f'--seeds={text!r}: expected A-B or integers, comma-separated') from e
  return list(dict.fromkeys(seeds))


def load_candidates(path: str) -> dict[str, dict]:
  """``{name: {'variant': V, 'overrides': {dotted key: value}}}`` from a JSON file; errors name
  the file and the candidate."""
  try:
    candidates = json.loads(pathlib.Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise app.UsageError(f'--candidates={path}: {e}') from e
  for name, c in candidates.items():
    if (
      not isinstance(c, dict) or 'variant' not in c or not isinstance(c.get('overrides', {}), dict)
    ):
      raise app.UsageError(
        f'{path}: candidate {name!r} needs {{"variant": ..., "overrides": {{key: value}}}}'
      )
  return candidates


def run_command(
  variant: str,
  seed: int,
  workdir: pathlib.Path,
  extra: Sequence[str],
  overrides: dict | None = None,
  split: str = 'test',
) -> list[str]:
  """The ``main.py`` command of one run."""
  spec = f'{variant},{_DATA.value}' if _SYNTHETIC.value else variant
  return [
    sys.executable,
    str(ROOT / 'main.py'),
    f'--config={_CONFIG.value}:{spec}',
    f'--workdir={workdir}',
    '--mode=train_and_evaluate',
    f'--split={split}',
    f'--config.seed={seed}',
    *[
      f'--config.{k}={json.dumps(v) if isinstance(v, bool) else v}'
      for k, v in (overrides or {}).items()
    ],
    *extra,
  ]


# The game's summary per mimic run (from metrics.jsonl's ``game/`` rows), for the selection.
GAME = {
  'disc_after_discriminator': 'disc. accuracy after its steps',
  'disc_after_adversarial': 'disc. accuracy after adversarial steps',
  'grad_ratio': 'adv./CE gradient ratio',
}


def game_summary(workdir: pathlib.Path) -> dict[str, float]:
  """Means over a run's validations of its game monitor (``mimic``; ``{}`` for others):
  the discriminator's accuracy after a discriminator step and after an adversarial step, and
  the adversarial term's gradient norm over the cross-entropy's (``steps.LossTermGradients``)."""
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return {}
  logged = metric_writer.read_rows(path)
  rows = [r for r in logged if 'game/disc_accuracy' in r]
  if not rows:
    return {}
  ratios = [r['gradients/beta_over_ce'] for r in logged if 'gradients/beta_over_ce' in r]
  after = lambda flag: [  # noqa: E731
    r['game/disc_accuracy'] for r in rows if r['game/after_discriminator_phase'] == flag
  ]
  mean = lambda v: float(sum(v) / len(v)) if v else float('nan')  # noqa: E731
  return {
    'disc_after_discriminator': mean(after(1.0)),
    'disc_after_adversarial': mean(after(0.0)),
    'grad_ratio': mean(ratios),
  }


def select(
  out: pathlib.Path,
  names: Sequence[str],
  seeds: Sequence[int],
  criterion: str,
  explainer: str,
  tolerance: float,
  split: str = 'validation',
  accuracy_reference: str | None = None,
) -> dict:
  """Applies the selection rule (module docstring) to the evaluated runs; writes and returns
  ``selection.json``."""
  rows = {}
  interval = lambda v: dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval(v)))  # noqa: E731
  for name in names:
    workdirs = [out / name / f'seed_{s}' for s in seeds]
    results = [compare.load_results(w, split) for w in workdirs]
    accuracy = [r['classification']['accuracy'] for r in results]
    score = [compare.quantities(r, explainer)[criterion] for r in results]
    rows[name] = {
      'accuracy': interval(accuracy),
      criterion: interval(score),
      'per_seed': {'accuracy': accuracy, criterion: score},
    }
    game = [game_summary(w) for w in workdirs]
    if any(game):
      rows[name]['game'] = {k: interval([g.get(k, float('nan')) for g in game]) for k in GAME}
  if accuracy_reference is not None and accuracy_reference not in rows:
    raise app.UsageError(f'--accuracy_reference={accuracy_reference} is not a candidate')
  bar_of = accuracy_reference or max(rows, key=lambda n: rows[n]['accuracy']['mean'])
  bar = rows[bar_of]['accuracy']['mean']
  eligible = [n for n, r in rows.items() if r['accuracy']['mean'] >= bar - tolerance]
  lower = criterion in report.LOWER_IS_BETTER or criterion.startswith('probe_')
  sign = -1 if lower else 1
  chosen = max(eligible, key=lambda n: sign * rows[n][criterion]['mean'])
  whose = f"{accuracy_reference}'s" if accuracy_reference else "the best candidate's"
  rule = (
    f'among the candidates whose mean {split} accuracy over seeds {list(seeds)} is within '
    f'{tolerance} of {whose} ({bar:.3f}), the '
    f'{"lowest" if sign < 0 else "highest"} mean {split} {criterion} of {explainer} maps'
  )
  selection = {
    'split': split,
    'rule': rule,
    'eligible': eligible,
    'chosen': chosen,
    'candidates': rows,
  }
  (out / 'selection.json').write_text(json.dumps(selection, indent=1))
  fmt = lambda e: f'{e["mean"]:.3f} [{e["lo"]:.3f}, {e["hi"]:.3f}]'  # noqa: E731
  game_columns = any('game' in r for r in rows.values())
  lines = [
    f'# Selection on the {split} split',
    '',
    f'Rule: {rule}. Chosen: **{chosen}**. Mean over seeds with a 95% t interval across seeds.',
    *(
      [
        "Game columns (mimic): the in-training discriminator's accuracy on a fixed validation "
        'batch, averaged over the validations that followed a discriminator step (learns) and '
        'an adversarial step (fooled), and the adversarial/CE gradient-norm ratio.'
      ]
      if game_columns
      else []
    ),
    '',
    f'| candidate | {split} accuracy | {split} {criterion} ({explainer}) | eligible |'
    + (' ' + ' | '.join(GAME.values()) + ' |' if game_columns else ''),
    '|---|---|---|---|' + ('---|' * len(GAME) if game_columns else ''),
  ]
  for n, r in rows.items():
    cells = [fmt(r['accuracy']), fmt(r[criterion]), 'yes' if n in eligible else 'no']
    if game_columns:
      cells += [fmt(r['game'][k]) if 'game' in r else '—' for k in GAME]
    lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  (out / 'selection.md').write_text('\n'.join(lines) + '\n')
  return selection


def _fmt(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f'{m}m{s:02d}s'


def main(argv: Sequence[str]) -> None:
  extra = list(argv[1:])
  out = pathlib.Path(_OUT.value)
  seeds = parse_seeds(_SEEDS.value)
  if bool(_VARIANTS.value) == bool(_CANDIDATES.value):
    raise app.UsageError('give either --variants or --candidates')
  if _CANDIDATES.value:
    candidates = load_candidates(_CANDIDATES.value)
  else:
    candidates = {v: {'variant': v, 'overrides': {}} for v in _VARIANTS.value}
  names = list(candidates)
  split = 'validation' if _SELECT_ON.value else _SPLIT.value
  runs = [(v, s) for v in names for s in seeds]
  env = dict(os.environ)
  t0, done_now = time.time(), 0
  for i, (variant, seed) in enumerate(runs, start=1):
    workdir = out / variant / f'seed_{seed}'
    if (workdir / 'eval' / split / 'metrics.json').exists():
      print(f'[sweep] {i}/{len(runs)} {variant} seed {seed}: evaluated already', flush=True)
      continue
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f'seed_{seed}.log'
    start = time.time()
    with log.open('w') as f:
      proc = subprocess.run(
        run_command(
          candidates[variant]['variant'],
          seed,
          workdir,
          extra,
          candidates[variant].get('overrides'),
          split,
        ),
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        check=False,
      )
    if proc.returncode != 0:
      tail = log.read_text().splitlines()[-30:]
      print('\n'.join(tail), file=sys.stderr)
      sys.exit(
        f'[sweep] {variant} seed {seed} failed (exit {proc.returncode}); full log: {log}. '
        'Rerun the same command to continue.'
      )
    done_now += 1
    per_run = (time.time() - t0) / done_now
    print(
      f'[sweep] {i}/{len(runs)} {variant} seed {seed}: done in {_fmt(time.time() - start)}; '
      f'ETA {_fmt(per_run * (len(runs) - i))}',
      flush=True,
    )
  if _SELECT_ON.value:
    selection = select(
      out,
      names,
      seeds,
      _CRITERION.value,
      _EXPLAINER.value,
      _TOLERANCE.value,
      accuracy_reference=_ACCURACY_REFERENCE.value,
    )
    print((out / 'selection.md').read_text())
    print(f'[sweep] chosen on validation: {selection["chosen"]} ({out}/selection.json)')
  references = _REFERENCES.value or names[:1]
  target = out / 'comparison'
  if len(seeds) >= 2:
    compare.compare_sweep(out, target, references, split=split, variants=names)
  else:
    compare.compare(
      [str(out / v / f'seed_{seeds[0]}') for v in names],
      target,
      names=names,
      split=split,
      references=references,
    )
  print((target / 'comparison.md').read_text())
  print(f'[sweep] {len(runs)} runs in {out} ({_fmt(time.time() - t0)}); comparison: {target}')


if __name__ == '__main__':
  app.run(main)
