r"""Trains and evaluates a set of config variants over several seeds, then compares them.

  python -m mimic_jax.sweep --variants=baseline,ensemble,mimic,mimic_stop,gaze --seeds=0-4 \
      --out=runs/sweep [--references=baseline,ensemble] [--config=configs/mimic.py] \
      [--nosynthetic] [-- --config.num_epochs=4 ...]

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
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

from mimic_jax import compare

ROOT = pathlib.Path(__file__).resolve().parents[1]

_VARIANTS = flags.DEFINE_list('variants', None, 'Config variants (configs/mimic.py VARIANTS).')
_SEEDS = flags.DEFINE_string('seeds', '0-4', 'Seeds: a range A-B and/or a comma list.')
_OUT = flags.DEFINE_string('out', None, 'Sweep folder: OUT/<variant>/seed_<k>/ per run.')
_CONFIG = flags.DEFINE_string('config', 'configs/mimic.py', 'Config file.')
_SYNTHETIC = flags.DEFINE_bool('synthetic', True, 'The embedded synthetic data at CPU size.')
_REFERENCES = flags.DEFINE_list(
  'references', None, 'Variants to compare against (default: the first variant).'
)
flags.mark_flags_as_required(['variants', 'out'])


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


def run_command(variant: str, seed: int, workdir: pathlib.Path, extra: Sequence[str]) -> list[str]:
  """The ``main.py`` command of one run."""
  spec = f'{variant},synthetic' if _SYNTHETIC.value else variant
  return [
    sys.executable,
    str(ROOT / 'main.py'),
    f'--config={_CONFIG.value}:{spec}',
    f'--workdir={workdir}',
    '--mode=train_and_evaluate',
    f'--config.seed={seed}',
    *extra,
  ]


def _fmt(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f'{m}m{s:02d}s'


def main(argv: Sequence[str]) -> None:
  extra = list(argv[1:])
  out = pathlib.Path(_OUT.value)
  seeds = parse_seeds(_SEEDS.value)
  runs = [(v, s) for v in _VARIANTS.value for s in seeds]
  env = dict(os.environ)
  t0, done_now = time.time(), 0
  for i, (variant, seed) in enumerate(runs, start=1):
    workdir = out / variant / f'seed_{seed}'
    if (workdir / 'eval' / 'test' / 'metrics.json').exists():
      print(f'[sweep] {i}/{len(runs)} {variant} seed {seed}: evaluated already', flush=True)
      continue
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f'seed_{seed}.log'
    start = time.time()
    with log.open('w') as f:
      proc = subprocess.run(
        run_command(variant, seed, workdir, extra),
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
  references = _REFERENCES.value or _VARIANTS.value[:1]
  target = out / 'comparison'
  if len(seeds) >= 2:
    compare.compare_sweep(out, target, references, variants=_VARIANTS.value)
  else:
    compare.compare(
      [str(out / v / f'seed_{seeds[0]}') for v in _VARIANTS.value],
      target,
      names=_VARIANTS.value,
      references=references,
    )
  print((target / 'comparison.md').read_text())
  print(f'[sweep] {len(runs)} runs in {out} ({_fmt(time.time() - t0)}); comparison: {target}')


if __name__ == '__main__':
  app.run(main)
