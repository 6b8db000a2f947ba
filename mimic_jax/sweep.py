r"""Trains and evaluates a set of config variants over several seeds, then compares them.

  python -m mimic_jax.sweep --variants=baseline,ensemble,mimic,mimic_stop,gaze --seeds=0-4 \
      --out=runs/sweep [--references=baseline,ensemble] [--config=configs/mimic.py] \
      [--nosynthetic] [-- --config.num_epochs=4 ...]
  python -m mimic_jax.sweep --candidates=configs/gaze_candidates.json --seeds=0-2 \
      --select_on=validation --criterion=information_gain --out=runs/selection

Each run is ``main.py --config=CONFIG:VARIANT[,synthetic] --config.seed=K
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
lower-is-better, every other metric higher). It writes ``OUT/selection.json`` and
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

ROOT = pathlib.Path(__file__).resolve().parents[1]

_VARIANTS = flags.DEFINE_list('variants', None, 'Config variants (configs/mimic.py VARIANTS).')
_SEEDS = flags.DEFINE_string('seeds', '0-4', 'Seeds: a range A-B and/or a comma list.')
_OUT = flags.DEFINE_string('out', None, 'Sweep folder: OUT/<variant>/seed_<k>/ per run.')
_CONFIG = flags.DEFINE_string('config', 'configs/mimic.py', 'Config file.')
_SYNTHETIC = flags.DEFINE_bool('synthetic', True, 'The embedded synthetic data at CPU size.')
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
  'criterion', 'information_gain', list(report.MAP_METRICS), 'Selection: the map metric.'
)
_EXPLAINER = flags.DEFINE_enum(
  'explainer', 'grad_cam', list(report.EXPLAINERS), 'Selection: whose maps the criterion scores.'
)
_TOLERANCE = flags.DEFINE_float(
  'accuracy_tolerance', 0.02, "Selection: how far below the best candidate's accuracy to allow."
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
  spec = f'{variant},synthetic' if _SYNTHETIC.value else variant
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


def select(
  out: pathlib.Path,
  names: Sequence[str],
  seeds: Sequence[int],
  criterion: str,
  explainer: str,
  tolerance: float,
  split: str = 'validation',
) -> dict:
  """Applies the selection rule (module docstring) to the evaluated runs; writes and returns
  ``selection.json``."""
  rows = {}
  for name in names:
    results = [compare.load_results(out / name / f'seed_{s}', split) for s in seeds]
    accuracy = [r['classification']['accuracy'] for r in results]
    score = [r['explanations'][explainer]['ensemble'][criterion]['mean'] for r in results]
    rows[name] = {
      'accuracy': dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval(accuracy))),
      criterion: dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval(score))),
      'per_seed': {'accuracy': accuracy, criterion: score},
    }
  best_accuracy = max(r['accuracy']['mean'] for r in rows.values())
  eligible = [n for n, r in rows.items() if r['accuracy']['mean'] >= best_accuracy - tolerance]
  sign = -1 if criterion in report.LOWER_IS_BETTER else 1
  chosen = max(eligible, key=lambda n: sign * rows[n][criterion]['mean'])
  rule = (
    f'among the candidates whose mean {split} accuracy over seeds {list(seeds)} is within '
    f"{tolerance} of the best candidate's ({best_accuracy:.3f}), the "
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
  fmt = lambda e: f'{e["mean"]:.3f} [{e["lo"]:.3f}, {e["hi"]:.3f}]'
  lines = [
    f'# Selection on the {split} split',
    '',
    f'Rule: {rule}. Chosen: **{chosen}**. Mean over seeds with a 95% t interval across seeds.',
    '',
    f'| candidate | {split} accuracy | {split} {criterion} ({explainer}) | eligible |',
    '|---|---|---|---|',
  ]
  for n, r in rows.items():
    lines.append(
      f'| {n} | {fmt(r["accuracy"])} | {fmt(r[criterion])} | {"yes" if n in eligible else "no"} |'
    )
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
    selection = select(out, names, seeds, _CRITERION.value, _EXPLAINER.value, _TOLERANCE.value)
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
