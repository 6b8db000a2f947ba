r"""Time to first step, steady step time and wall time of a paper-configuration run, JAX beside
PyTorch eager, with a cold and a warm compilation cache, in one command.

  .venv/bin/python benchmarks/end_to_end.py [--arch densenet121] [--batch 32] \
      [--steps 0] [--epochs 30] [--alternation epoch|step] \
      [--torch_python .venv-torch/bin/python] [--dtype float32|bfloat16] \
      [--executions auto] [--work /tmp/mimic_jax_e2e] [--out benchmarks/out/e2e.json]

The data: ``configs/mimic.py:mimic,synthetic_224``, the synthetic look-alike at EGD's size
(866 training images), built once at 224 px in ``data/synthetic_224`` before anything is
timed. JAX: ``main.py --mode=train`` of
``configs/mimic.py`` (``mimic``: M = 3, GradientSHAP, the paper's 224 px) for ``--epochs`` (or
``--steps``), logging every step, run twice in fresh workdirs for each ``--executions`` value
(``config.xla.ensemble_execution``): first with an empty compilation cache (cold), then with
the cache the first run filled (warm). Time to first
step: from launching the process to the end of the first training step (imports, reading the
data, initialising, compiling); steady step: the median interval between steps once every
phase's program has run; wall: launch to exit (including JAX's validation passes, which the
PyTorch side does not do). PyTorch: ``benchmarks/torch_steps.py`` (eager, the same models,
batch, losses and Adam), which times one step of each phase on random inputs; its time to first
step is launch to the end of its first step, and its wall time for the same schedule is that
plus each phase's steady step times its number of steps. Prints a Markdown table.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_ARCH = flags.DEFINE_string('arch', 'densenet121', 'densenet121 or efficientnet_b0.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch.')
_EPOCHS = flags.DEFINE_integer('epochs', 30, 'Epochs (when --steps is 0).')
_STEPS = flags.DEFINE_integer('steps', 0, '> 0: this many steps instead of --epochs.')
_ALTERNATION = flags.DEFINE_enum(
  'alternation', 'epoch', ['epoch', 'step'], 'config.mimic.alternation (step: both phases early).'
)
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Computation dtype.')
_EXECUTIONS = flags.DEFINE_list(
  'executions', ['auto'], 'config.xla.ensemble_execution values, each run cold and warm.'
)
_TORCH_PYTHON = flags.DEFINE_string(
  'torch_python', str(ROOT / '.venv-torch/bin/python'), 'Python with torch; empty: skip it.'
)
_WORK = flags.DEFINE_string('work', '/tmp/mimic_jax_e2e', 'Workdirs and caches.')
_OUT = flags.DEFINE_string('out', None, 'JSON output file.')


def _config_flags() -> list[str]:
  """The paper configuration on the synthetic data at EGD's size and 224 px."""
  length = (
    [f'--config.num_train_steps={_STEPS.value}']
    if _STEPS.value
    else [f'--config.num_epochs={_EPOCHS.value}']
  )
  return [
    '--config=configs/mimic.py:mimic,synthetic_224',
    f'--config.model.arch={_ARCH.value}',
    f'--config.model.dtype={_DTYPE.value}',
    f'--config.batch_size={_BATCH.value}',
    f'--config.mimic.alternation={_ALTERNATION.value}',
    '--config.log_every_steps=1',
    '--config.checkpoint_every_steps=1000000',
    *length,
  ]


def jax_run(work: pathlib.Path, name: str, cache: pathlib.Path, execution: str) -> dict:
  """One ``main.py --mode=train`` run in a fresh workdir with the compilation cache ``cache``."""
  workdir = work / 'runs' / name
  shutil.rmtree(workdir, ignore_errors=True)
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  env['JAX_COMPILATION_CACHE_DIR'] = str(cache)
  args = [sys.executable, 'main.py', f'--workdir={workdir}', '--mode=train']
  args += _config_flags() + [f'--config.xla.ensemble_execution={execution}']
  launched = time.time()
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  wall = time.time() - launched
  if proc.returncode:
    raise RuntimeError(f'{name} failed:\n{proc.stderr[-3000:]}')
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  steps = sorted((r['step'], r['time']) for r in rows if 'train/loss' in r)
  times = np.array([t for _, t in steps])
  # Intervals from the second step on (both phases compiled with alternation=step); the
  # median keeps the few intervals that hold a first compile or a validation out.
  steady = np.diff(times[1:])
  return {
    'time_to_first_step_s': steps[0][1] - launched,
    'steady_step_s': float(np.median(steady)) if steady.size else float('nan'),
    'wall_s': wall,
    'steps': len(steps),
  }


def torch_run(work: pathlib.Path, num_steps: dict[str, int]) -> dict:
  """PyTorch eager: time to first step and each phase's steady step from ``torch_steps.py``;
  wall time for ``num_steps`` (phase -> steps)."""
  from configs import mimic

  c = mimic.get_config('mimic')
  spec = {
    'arch': _ARCH.value,
    'size': 224,
    'channels': 3,
    'width': 64,
    'batch': _BATCH.value,
    'steps': 3,
    'methods': ['ensemble', 'mimic_gshap'],
    'num_models': c.ensemble.num_models,
    'gaze_weight': c.gaze.weight,
    'beta': c.mimic.beta,
    'pool': c.mimic.post.pool,
    'gaze_size': 224,
    'disc_hidden': c.mimic.disc_hidden,
    'gshap_samples': c.mimic.explainer_kwargs.samples,
    'compile': False,
    'threads': os.cpu_count(),
    'dtype': _DTYPE.value,
  }
  spec_path, out_path = work / 'torch_spec.json', work / 'torch_out.json'
  spec_path.write_text(json.dumps(spec))
  launched = time.time()
  proc = subprocess.run(
    [_TORCH_PYTHON.value, str(ROOT / 'benchmarks' / 'torch_steps.py'), '--spec', str(spec_path)]
    + ['--out', str(out_path)],
    capture_output=True,
    text=True,
    check=False,
  )
  if proc.returncode:
    raise RuntimeError(f'PyTorch failed:\n{proc.stderr[-3000:]}')
  out = json.loads(out_path.read_text())
  # The discriminator phase's sub-model update is the ensemble's CE step (its tiny
  # discriminator update is left out); the adversarial phase's is mimic_gshap's step.
  step = {'discriminator': out['eager']['ensemble'], 'adversarial': out['eager']['mimic_gshap']}
  first = out['first_step_wall']['ensemble'] - launched
  total = first + sum(step[p] * n for p, n in num_steps.items()) - step['discriminator']
  return {
    'time_to_first_step_s': first,
    'steady_step_s': step,
    'wall_s': total,
    'torch': out['torch'],
  }


def _phase_counts(steps_per_epoch: int, total_steps: int) -> dict[str, int]:
  """Steps of each mimic phase in the run's schedule (period 2, discriminator first)."""
  from configs import mimic
  from mimic_jax import methods

  c = mimic.get_config('mimic')
  c.mimic.alternation = _ALTERNATION.value
  method = methods.METHODS['mimic'](c, model=None)  # phase() reads only the config
  counts = {'discriminator': 0, 'adversarial': 0}
  for s in range(total_steps):
    counts[method.phase(s, steps_per_epoch)] += 1
  return counts


def main(argv):
  del argv
  work = pathlib.Path(_WORK.value)
  work.mkdir(parents=True, exist_ok=True)
  from configs import mimic
  from mimic_jax.data import prepare

  print('[e2e] building the synthetic data at 224 px (not timed)', flush=True)
  builder = prepare.prepare_dataset(mimic.get_config('mimic,synthetic_224').data)
  steps_per_epoch = builder.info.splits['train'].num_examples // _BATCH.value
  total = _STEPS.value or _EPOCHS.value * steps_per_epoch
  result = {'arch': _ARCH.value, 'batch': _BATCH.value, 'steps': total, 'dtype': _DTYPE.value}
  for execution in _EXECUTIONS.value:
    cache = pathlib.Path(tempfile.mkdtemp(prefix='xla_cache_', dir=work))
    for name in ('cold', 'warm'):
      print(f'[e2e] JAX {execution}, {name} cache', flush=True)
      key = f'jax_{execution}_{name}'
      result[key] = jax_run(work, name, cache, execution)
      print(f'[e2e] {result[key]}', flush=True)
    shutil.rmtree(cache, ignore_errors=True)
  if _TORCH_PYTHON.value:
    print('[e2e] PyTorch eager', flush=True)
    result['torch_eager'] = torch_run(work, _phase_counts(steps_per_epoch, total))
    print(f'[e2e] {result["torch_eager"]}', flush=True)
  print(table(result))
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1))


def table(result: dict) -> str:
  rows = [
    f'{result["arch"]}, batch {result["batch"]}, {result["steps"]} steps, {result["dtype"]}',
    '',
    '| run | time to first step (s) | steady step (s) | wall (s) | wall / PyTorch eager |',
    '|---|---|---|---|---|',
  ]
  torch_wall = result.get('torch_eager', {}).get('wall_s')
  for name, r in result.items():
    if not name.startswith(('jax_', 'torch_')):
      continue
    step = r['steady_step_s']
    step = ', '.join(f'{k} {v:.2f}' for k, v in step.items()) if isinstance(step, dict) else step
    step = step if isinstance(step, str) else f'{step:.2f}'
    ratio = f'{r["wall_s"] / torch_wall:.2f}' if torch_wall else ''
    rows.append(
      f'| {name} | {r["time_to_first_step_s"]:.1f} | {step} | {r["wall_s"]:.1f} | {ratio} |'
    )
  return '\n'.join(rows)


if __name__ == '__main__':
  app.run(main)
