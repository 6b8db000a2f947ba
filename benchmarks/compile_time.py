r"""Compile time of every program of a paper-configuration run, and which XLA passes take it.

  .venv/bin/python benchmarks/compile_time.py [--archs densenet121,efficientnet_b0] \
      [--variant mimic] [--explainer gradient_shap|input_gradients] [--batch 8] \
      [--executions unrolled,per_member] [--programs all] [--step_repeats 2] [--timeout 900] \
      [--aot_threads 1,2] [--override mimic.disc_steps=5 ...] \
      [--out benchmarks/out/compile_cpu.json]

Programs: the member step of each phase of the method (``mimic``: ``discriminator``,
``adversarial``, ``cross_entropy``), validation (accuracy, CE and Grad-CAM KLD/NSS against the
gaze), the validation-time monitors (``monitor:game``, ``monitor:loss_terms``: one sub-model's
gradient) and evaluation's prediction and explainers. ``--override KEY=VALUE`` changes the
config (e.g. the game's options). Each program is compiled in a fresh
process with the persistent cache off and XLA's pass timers on
(``TF_CPP_VMODULE=hlo_pass_pipeline=1,cpu_compiler=1``, read from its log), and reports:
trace + lowering seconds, compile seconds, HLO size (StableHLO ops lowered; instructions after
optimisation), time in HLO passes vs. backend code generation, the five slowest passes, and
for the member steps the steady step time (the fastest of ``--step_repeats`` calls after one
warm-up call; a step still running after ``--timeout`` seconds of its program is reported as
"> N" with its compile figures). Random inputs at 224 x 224 RGB; ``--executions`` compares
``config.xla.ensemble_execution`` values side by side (``per_member``: a step's three programs,
their seconds and sizes summed). Prints a Markdown table. ``--aot_threads 1,2`` measures
instead whether compiling a run's programs ahead of time in parallel pays: in a fresh process
per thread count, every ``--programs`` program lowered, then all compiled by that many threads.
"""

import collections
import functools
import json
import os
import pathlib
import re
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
_ARCHS = flags.DEFINE_list('archs', ['densenet121', 'efficientnet_b0'], 'Architectures.')
_VARIANT = flags.DEFINE_string('variant', 'mimic', 'A variant of configs/mimic.py.')
_EXPLAINER = flags.DEFINE_string(
  'explainer', 'gradient_shap', "mimic's training explainer (input_gradients: 'mimic_ig')."
)
_BATCH = flags.DEFINE_integer('batch', 8, 'Global batch (compile time barely depends on it).')
_EXECUTIONS = flags.DEFINE_list('executions', ['unrolled'], 'config.xla.ensemble_execution.')
_PROGRAMS = flags.DEFINE_list('programs', ['all'], 'Program names, or all.')
_STEP_REPEATS = flags.DEFINE_integer('step_repeats', 2, 'Timed calls of a member step.')
_TIMEOUT = flags.DEFINE_integer(
  'timeout', 900, 'Seconds per program; a step still running then is reported as timed out.'
)
_OUT = flags.DEFINE_string('out', None, 'JSON output file.')
_AOT_THREADS = flags.DEFINE_list(
  'aot_threads',
  [],
  'Instead of one program per process: every --programs program of each run lowered, then '
  'compiled ahead of time by this many threads at once (e.g. 1,2), each count in a fresh process.',
)
_OVERRIDES = flags.DEFINE_multi_string(
  'override', [], 'A config override KEY=VALUE (e.g. mimic.disc_steps=5); repeatable.'
)
_CHILD = flags.DEFINE_string('child', None, 'Internal: measure one program (arch:execution:name).')
_CHILD_AOT = flags.DEFINE_string(
  'child_aot', None, 'Internal: compile programs in threads (arch:execution:threads:names).'
)

_UNITS = {'us': 1e-6, 'ms': 1e-3, 's': 1.0, 'min': 60.0, 'h': 3600.0}


def _config(arch: str, execution: str):
  from configs import mimic

  c = mimic.get_config(_VARIANT.value)
  c.model.arch = arch
  c.batch_size = _BATCH.value
  c.xla.ensemble_execution = execution
  if _EXPLAINER.value == 'input_gradients':
    c.mimic.explainer = 'input_gradients'
    c.mimic.explainer_kwargs = {}
  from mimic_jax import config_check

  for item in _OVERRIDES.value:
    key, _, text = item.partition('=')
    current = config_check.get(c, key)
    config_check.set_value(c, key, type(current)(text) if current is not None else text)
  return c


def _programs(config) -> dict:
  """name -> (jitted function, example arguments, whether it is a member step)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mimic_jax import methods
  from mimic_jax import models
  from mimic_jax import tuning as tuning_lib
  from mimic_jax.evaluation import evaluate
  from mimic_jax.evaluation import validation
  from mimic_jax.training import state as state_lib
  from mimic_jax.training import steps

  tuning = tuning_lib.resolve(config.xla)
  method = methods.build(config, tuning.conv, tuning.ensemble_execution)
  shape = (224, 224, 3)
  state = tuning.jit(functools.partial(state_lib.create_state, method, shape))(jax.random.key(0))
  rng = np.random.default_rng(0)
  b = config.batch_size
  gaze = rng.random((b, 224, 224)).astype(np.float32)
  batch = {
    'image': jnp.asarray(rng.normal(size=(b, *shape)), jnp.float32),
    'label': jnp.asarray(np.arange(b) % 3, jnp.int32),
    'gaze': jnp.asarray(gaze / gaze.sum(axis=(1, 2), keepdims=True)),
    'fixation_map': jnp.asarray(rng.random((b, 224, 224)) < 0.01, jnp.uint8),
    'mask': jnp.ones((b,), bool),
  }
  out = {}
  keep = lambda f, **kw: tuning.jit(f, **{k: v for k, v in kw.items() if k != 'donate_argnums'})  # noqa: E731
  for phase in method.phases:  # without donation: the timed calls reuse one state
    step = steps.compile_step(method, phase, keep, per_member=tuning.per_member_steps)
    out[f'step:{phase}'] = (step, (state, batch, steps.loss_weights(method)), True)
  sums = tuning.jit(
    functools.partial(
      validation.batch_sums,
      layer=models.gradcam_layer(config.model.arch),
      gradcam_target=config.evaluation.gradcam_target,
      execution=tuning.ensemble_execution,
    )
  )
  out['validation'] = (sums, (state, batch), False)
  # The validation-time monitors: mimic's game (maps and the discriminator) and one sub-model's
  # gradient for the loss terms' shares (what runs where steps are one program).
  from mimic_jax.training import loop

  monitor = loop._monitor_fn(method, tuning.jit, None)
  out['monitor:game'] = (monitor, (state, batch, jax.random.key(2)), False)
  if method.loss_weights():
    terms = steps.LossTermGradients(method, method.loss_term_phase or method.phases[0], tuning.jit)
    member_args = (state.params, state.batch_stats, state.method_state, batch, jax.random.key(3))
    weights = steps.loss_weights(method)
    out['monitor:loss_terms'] = (terms.gradients, (*member_args, weights, terms.indices[0]), False)
  fns = evaluate._jitted_functions(config, tuning)
  out['eval:predict'] = (fns['predict'], (state, batch['image']), False)
  for name, fn in fns.items():
    if name != 'predict':
      args = (state, batch['image'], batch['label'], jax.random.key(1))
      out[f'eval:{name}'] = (fn, args, False)
  return out


def _measure(spec: str) -> dict:
  """In this (child) process: one program's trace, lowering and compile times, HLO sizes and,
  for a member step, the steady step time."""
  import jax

  from mimic_jax.training import steps

  arch, execution, name = spec.split(':', 2)
  config = _config(arch, execution)
  fn, args, is_step = _programs(config)[name]
  t0 = time.perf_counter()
  lowered = _lowered(fn, args)
  t1 = time.perf_counter()
  compiled = {k: v.compile() for k, v in lowered.items()}
  t2 = time.perf_counter()
  if isinstance(fn, steps.PerMemberStep):
    call = functools.partial(fn.run, compiled)
  else:
    call = compiled['']
  texts = [c.as_text() for c in compiled.values()]
  result = {
    'program': name,
    'arch': arch,
    'execution': execution,
    'batch': config.batch_size,
    'lower_s': t1 - t0,
    'compile_s': t2 - t1,
    'hlo_ops_lowered': sum(
      1
      for low in lowered.values()
      for line in low.as_text().splitlines()
      if re.search(r'= "?stablehlo\.', line)
    ),
    'hlo_instructions_optimised': sum(
      1 for text in texts for line in text.splitlines() if re.match(r'\s+(ROOT )?%?\S+ = ', line)
    ),
    'modules': [text.split('\n', 1)[0].split()[1].rstrip(',') for text in texts],
  }
  if is_step:
    print(json.dumps(result), flush=True)  # the compile figures survive a step that times out
    jax.block_until_ready(call(*args))  # warm-up
    best = float('inf')
    for _ in range(_STEP_REPEATS.value):
      t0 = time.perf_counter()
      jax.block_until_ready(call(*args))
      best = min(best, time.perf_counter() - t0)
    result['step_s'] = best
  return result


def _seconds(text: str) -> float:
  value, unit = text.split()
  return float(value) * _UNITS[unit]


def _pass_times(log: str, modules: list[str]) -> dict:
  """From XLA's timer lines for ``modules``: seconds in HLO passes, in backend code generation
  and per pass (summed over its runs and the modules)."""
  passes, current = collections.Counter(), None
  hlo_s = backend_s = 0.0
  names = '|'.join(re.escape(m) for m in modules)
  for line in log.splitlines():
    if m := re.search(r'Running HLO pass pipeline on module (\S+): ', line):
      current = m.group(1)
    elif current in modules and (m := re.search(r'HLO pass: (\S+) time: ([\d.]+ \w+) \(', line)):
      passes[m.group(1)] += _seconds(m.group(2))
    if m := re.search(rf'Running HLO passes on \[(?:{names})\] .* time: ([\d.]+ \w+) \(', line):
      hlo_s += _seconds(m.group(1))
    if m := re.search(rf'Compiling \[(?:{names})\] for CPU using JIT time: ([\d.]+ \w+) \(', line):
      backend_s += _seconds(m.group(1))
  return {
    'hlo_passes_s': hlo_s,
    'backend_codegen_s': backend_s,
    'top_passes': [(k, round(v, 2)) for k, v in passes.most_common(5)],
  }


def _lowered(fn, args) -> dict:
  """A jitted function's lowered program, or a per-member step's three, by name."""
  from mimic_jax.training import steps

  if isinstance(fn, steps.PerMemberStep):
    return fn.lower(*args)
  return {'': fn.trace(*args).lower()}


def _measure_aot(spec: str) -> dict:
  """In this (child) process: the named programs lowered one after another, then compiled by
  ``threads`` threads at once (XLA releases the GIL while it compiles)."""
  from concurrent import futures

  arch, execution, threads, names = spec.split(':', 3)
  config = _config(arch, execution)
  programs = _programs(config)
  t0 = time.perf_counter()
  lowered = []
  for name in names.split(','):
    fn, args, _ = programs[name]
    lowered += list(_lowered(fn, args).values())
  t1 = time.perf_counter()
  with futures.ThreadPoolExecutor(int(threads)) as pool:
    list(pool.map(lambda low: low.compile(), lowered))
  t2 = time.perf_counter()
  return {
    'arch': arch,
    'execution': execution,
    'threads': int(threads),
    'programs': names,
    'lowered_modules': len(lowered),
    'lower_s': t1 - t0,
    'compile_wall_s': t2 - t1,
  }


def _run_child(spec: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_COMPILATION_CACHE_DIR',)}
  env.update(
    JAX_ENABLE_COMPILATION_CACHE='false',
    TF_CPP_MIN_LOG_LEVEL='0',
    TF_CPP_VMODULE='hlo_pass_pipeline=1,cpu_compiler=1',
    PYTHONPATH=str(ROOT),
  )
  args = [f'--{f.name}={f.value}' for f in (_VARIANT, _EXPLAINER, _BATCH, _STEP_REPEATS)]
  args += [f'--override={o}' for o in _OVERRIDES.value]
  try:
    out = subprocess.run(
      [sys.executable, __file__, f'--child={spec}', *args],
      capture_output=True,
      text=True,
      env=env,
      check=False,
      timeout=_TIMEOUT.value,
    )
    stdout, stderr, failed = out.stdout, out.stderr, out.returncode != 0
  except subprocess.TimeoutExpired as e:  # keep what it measured before the limit
    text = lambda b: b.decode() if isinstance(b, bytes) else (b or '')  # noqa: E731
    stdout, stderr, failed = text(e.stdout), text(e.stderr), False
  lines = [line for line in stdout.splitlines() if line.startswith('{')]
  if failed or not lines:
    raise RuntimeError(f'{spec} failed:\n{stderr[-3000:]}')
  result = json.loads(lines[-1])
  if 'step_s' not in result and result['program'].startswith('step:'):
    result['step_timed_out_after_s'] = _TIMEOUT.value
  result.update(_pass_times(stderr, result['modules']))
  return result


def _run_aot_child(spec: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_COMPILATION_CACHE_DIR',)}
  env.update(JAX_ENABLE_COMPILATION_CACHE='false', PYTHONPATH=str(ROOT))
  args = [f'--{f.name}={f.value}' for f in (_VARIANT, _EXPLAINER, _BATCH)]
  out = subprocess.run(
    [sys.executable, __file__, f'--child_aot={spec}', *args],
    capture_output=True,
    text=True,
    env=env,
    check=False,
  )
  lines = [line for line in out.stdout.splitlines() if line.startswith('{')]
  if out.returncode or not lines:
    raise RuntimeError(f'{spec} failed:\n{out.stderr[-3000:]}')
  return json.loads(lines[-1])


def table(results: list[dict]) -> str:
  rows = [
    '| arch | execution | program | batch | lower s | compile s | HLO passes s | codegen s '
    '| ops lowered | instructions optimised | step s | slowest passes (s) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in results:
    step = f'{r["step_s"]:.2f}' if 'step_s' in r else ''
    if 'step_timed_out_after_s' in r:
      step = f'> {r["step_timed_out_after_s"] - r["lower_s"] - r["compile_s"]:.0f}'
    passes = ', '.join(f'{k} {v}' for k, v in r['top_passes'][:3])
    rows.append(
      f'| {r["arch"]} | {r["execution"]} | {r["program"]} | {r.get("batch", "")} | '
      f'{r["lower_s"]:.1f} | '
      f'{r["compile_s"]:.1f} | {r["hlo_passes_s"]:.1f} | {r["backend_codegen_s"]:.1f} | '
      f'{r["hlo_ops_lowered"]} | {r["hlo_instructions_optimised"]} | {step} | {passes} |'
    )
  return '\n'.join(rows)


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(_measure(_CHILD.value)), flush=True)
    return
  if _CHILD_AOT.value:
    print(json.dumps(_measure_aot(_CHILD_AOT.value)), flush=True)
    return
  import jax

  if _AOT_THREADS.value:
    rows = [
      '| arch | execution | threads | modules | lower s | compile wall s |',
      '|---|---|---|---|---|---|',
    ]
    for arch in _ARCHS.value:
      for execution in _EXECUTIONS.value:
        names = _PROGRAMS.value
        if names == ['all']:
          names = list(_programs_names(arch, execution))
        for threads in _AOT_THREADS.value:
          r = _run_aot_child(f'{arch}:{execution}:{threads}:{",".join(names)}')
          print(json.dumps(r), flush=True)
          rows.append(
            f'| {arch} | {execution} | {threads} | {r["lowered_modules"]} | '
            f'{r["lower_s"]:.1f} | {r["compile_wall_s"]:.1f} |'
          )
    print('\n'.join(rows))
    return

  results = []
  for arch in _ARCHS.value:
    for execution in _EXECUTIONS.value:
      names = _PROGRAMS.value
      if names == ['all']:
        names = list(_programs_names(arch, execution))
      for name in names:
        r = _run_child(f'{arch}:{execution}:{name}')
        print(
          f'{arch} {execution} {name}: compile {r["compile_s"]:.1f} s '
          f'(HLO passes {r["hlo_passes_s"]:.1f} s, codegen {r["backend_codegen_s"]:.1f} s)',
          flush=True,
        )
        results.append(r)
        if _OUT.value:  # after every program: a long run that stops keeps what it measured
          path = pathlib.Path(_OUT.value)
          path.parent.mkdir(parents=True, exist_ok=True)
          meta = {'jax': jax.__version__, 'backend': jax.default_backend(), 'batch': _BATCH.value}
          path.write_text(json.dumps({'meta': meta, 'results': results}, indent=1))
  print(table(results))


def _programs_names(arch: str, execution: str) -> list[str]:
  """The program names of a run, without building anything."""
  from mimic_jax import methods
  from mimic_jax.evaluation import report

  config = _config(arch, execution)
  phases = methods.METHODS[config.method].phases
  return (
    [f'step:{p}' for p in phases]
    + ['validation', 'eval:predict']
    + [f'eval:{e}' for e in report.EXPLAINERS]
  )


if __name__ == '__main__':
  sys.path.insert(0, str(ROOT))
  app.run(main)
