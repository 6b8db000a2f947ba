r"""Train-step time of every method, JAX side by side with the PyTorch reference, in one run.

  .venv/bin/python benchmarks/step_time.py --presets cpu,densenet121,efficientnet_b0 \
      [--batch_224 8] [--steps 3] [--methods single,ensemble,mimic_ig,mimic_gshap,gaze] \
      [--dtype float32|bfloat16] [--torch_python .venv-torch/bin/python] [--torch_compile] \
      [--conv_gradients auto|lax|custom] [--cpu_conv_library auto|xla_default|eigen] \
      [--ablations conv_gradients=lax,...] [--rounds 1] [--cache_dir /tmp/xla_cache] \
      [--out benchmarks/out/cpu.json]

Presets: ``cpu`` is the CPU configuration of ``configs/mimic.py:synthetic`` (tiny GroupNorm
ResNet, width 16, 64 x 64 grey images, batch 32, GradientSHAP with 2 samples);
``densenet121`` / ``efficientnet_b0`` the paper's models at 224 x 224 RGB (GradientSHAP with
5 samples). Methods: ``single``; ``ensemble`` (M = 3); ``mimic_ig`` / ``mimic_gshap``: the
adversarial step of ``mimic`` (M = 3) with input gradients / GradientSHAP as the training
explanation; ``gaze``: CE + the KLD penalty of the input gradient (M = 1).

JAX: the jit-compiled ``mimic_jax.training.steps.train_step`` (Adam; ``mimic``: its adversarial
phase), random inputs, timed after two
warm-up calls (with ``--rounds R``, R times, alternating with the PyTorch run; the fastest
round counts); FLOPs from XLA's cost analysis, as a fraction of this machine's float32
matmul rate measured here (the fastest reading of the run; the rate is read again before each
round's JAX steps, and the table adds each step's fraction of the reading next to it, round by
round, since a shared machine's speed drifts between rounds, and each explanation step's
ratio to the plain step of the same round); memory from XLA's buffer assignment (arguments +
outputs + temporaries). PyTorch: ``benchmarks/torch_steps.py`` in its own environment (eager,
and ``torch.compile`` with ``--torch_compile``), which inherits this process's environment
(source ``scripts/xla_cpu_env.sh`` first on CPU, as the main job does; the JSON records
``GLIBC_TUNABLES``). Also the input pipeline's examples/s (ArrayRecord -> grain -> batches) on
the synthetic build. Prints a Markdown table; ``--out`` keeps JSON.
"""

import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import mimic
from mimic_jax import methods
from mimic_jax import tuning
from mimic_jax.training import state as state_lib
from mimic_jax.training import steps
from mimic_jax.tuning import compiler_options

ROOT = pathlib.Path(__file__).resolve().parents[1]
_PRESETS = flags.DEFINE_list('presets', ['cpu'], 'cpu, densenet121, efficientnet_b0.')
_BATCH_224 = flags.DEFINE_integer('batch_224', 8, 'Batch of the 224 px presets.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps (after two warm-up calls).')
_METHODS = flags.DEFINE_list(
  'methods', ['single', 'ensemble', 'mimic_ig', 'mimic_gshap', 'gaze'], 'Methods.'
)
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'JAX computation.')
_TORCH_PYTHON = flags.DEFINE_string(
  'torch_python',
  str(ROOT / '.venv-torch/bin/python'),
  'Python with torch/torchvision/timm; empty: skip PyTorch.',
)
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False, 'Also time torch.compile steps.')
_THREADS = flags.DEFINE_integer('threads', os.cpu_count(), 'PyTorch CPU threads.')
_EXECUTION = flags.DEFINE_enum(
  'execution',
  'auto',
  ['auto', 'vmap', 'unrolled', 'scan', 'per_member'],
  'config.xla.ensemble_execution of the JAX ensembles.',
)
_CONV_GRADIENTS = flags.DEFINE_enum(
  'conv_gradients', 'auto', ['auto', 'lax', 'custom'], 'config.xla.conv_gradients of the JAX steps.'
)
_CPU_CONV_LIBRARY = flags.DEFINE_enum(
  'cpu_conv_library',
  'auto',
  compiler_options.LIBRARIES,
  'config.xla.cpu_conv_library of the JAX steps.',
)
_ROUNDS = flags.DEFINE_integer(
  'rounds',
  1,
  'Rounds of (PyTorch, then every JAX method); each step time is its fastest '
  'round (step times on a shared machine drift by 15-40% within minutes).',
)
_OUT = flags.DEFINE_string('out', None, 'JSON output file.')
_ABLATIONS = flags.DEFINE_list(
  'ablations',
  [],
  'config.xla overrides (KEY=VALUE, e.g. conv_gradients=lax), each timed beside the default '
  'steps in the same rounds; the table adds each step time over the default one, per round.',
)
_JAX_SKIP = flags.DEFINE_list(
  'jax_skip',
  [],
  'Methods timed in PyTorch only (gpu.sh: their JAX compilation did not finish in its time).',
)
_CACHE_DIR = flags.DEFINE_string(
  'cache_dir',
  None,
  'Persistent XLA compilation cache: runs that share it compile a step '
  'once (benchmarks/gpu.sh warms it with one process per method in parallel).',
)

PLAIN = {
  'single': 'single',
  'gaze': 'single',
  'ensemble': 'ensemble',
  'mimic_ig': 'ensemble',
  'mimic_gshap': 'ensemble',
}


def preset_config(preset: str, method: str):
  """The config a method runs with in a preset."""
  variant = {'single': 'baseline', 'ensemble': 'ensemble', 'gaze': 'gaze'}.get(method, 'mimic')
  if preset == 'cpu':
    c = mimic.get_config(f'{variant},synthetic')
  else:
    c = mimic.get_config(variant)
    c.model.arch = preset
    c.batch_size = _BATCH_224.value
  c.model.dtype = _DTYPE.value
  c.xla.ensemble_execution = _EXECUTION.value
  c.xla.conv_gradients = _CONV_GRADIENTS.value
  c.xla.cpu_conv_library = _CPU_CONV_LIBRARY.value
  if method == 'mimic_ig':
    c.mimic.explainer = 'input_gradients'
    c.mimic.explainer_kwargs = {}
  return c


def _size(preset):
  return 64 if preset == 'cpu' else 224


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
  """float32 matmul rate of the default device through XLA: the fastest of ``reps`` calls."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


def compile_jax(config, batch) -> dict:
  """The jit-compiled training step of ``config`` (``mimic``: its adversarial phase) and a
  fresh state, with XLA's FLOPs and buffer sizes and the compile time:
  ``{'step', 'state', 'stats'}``."""
  t = tuning.resolve(config.xla)
  method = methods.build(config, t.conv, t.ensemble_execution)
  shape = batch['image'].shape[1:]
  state = t.jit(functools.partial(state_lib.create_state, method, shape))(jax.random.PRNGKey(0))
  phase = 'adversarial' if 'adversarial' in method.phases else 'train'
  step = steps.compile_step(method, phase, t.jit, per_member=t.per_member_steps)
  t0 = time.perf_counter()
  weights = steps.loss_weights(method)
  if isinstance(step, steps.PerMemberStep):  # FLOPs: the gradient's program counts M times
    programs = {k: v.compile() for k, v in step.lower(state, batch, weights).items()}
    run = functools.partial(step.run, programs)
    counts = {'gradients': len(step.indices)}
  else:
    programs = {'step': step.lower(state, batch, weights).compile()}
    run = programs['step']
    counts = {}
  compile_s = time.perf_counter() - t0
  flops, mem_bytes = 0.0, 0
  for name, compiled in programs.items():
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops += counts.get(name, 1) * float(cost.get('flops', float('nan')) if cost else float('nan'))
    mem = compiled.memory_analysis()
    if mem is not None:  # the largest program's buffers
      used = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
      mem_bytes = max(mem_bytes, used)
  return {
    'step': lambda state, batch: run(state, batch, weights),
    'state': state,
    'stats': {
      'compile_s': compile_s,
      'gflop': flops / 1e9,
      'xla_buffer_bytes': mem_bytes or None,
      'tuning': t.describe(),
    },
  }


def time_jax(jitted: dict, batch) -> float:
  """Seconds per step of a :func:`compile_jax` result over ``--steps`` steps after two
  warm-up calls; its ``state`` moves on."""
  step, state = jitted['step'], jitted['state']
  for _ in range(2):  # warm-up
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  jitted['state'] = state
  return (time.perf_counter() - t0) / _STEPS.value


def jax_result(
  jitted: dict, times: list[float], matmul_rounds: list[float], batch_size: int
) -> dict:
  """One method's JSON entry: the fastest round's step time and what follows from it, and
  each round's GFLOP/s as a fraction of the matmul rate (GFLOP/s) read just before it."""
  dt = min(times)
  try:
    peak = jax.devices()[0].memory_stats().get('peak_bytes_in_use')
  except Exception:
    peak = None
  return {
    **jitted['stats'],
    'step_s': dt,
    'step_s_rounds': times,
    'images_per_s': batch_size / dt,
    'gflop_per_s': jitted['stats']['gflop'] / dt,
    'matmul_fraction_rounds': [
      jitted['stats']['gflop'] / t / m for t, m in zip(times, matmul_rounds)
    ],
    'device_peak_bytes': peak,
  }


def fastest_torch(rounds: list[dict]) -> dict:
  """The PyTorch results of several rounds: each step time the fastest round's."""
  failed = [r for r in rounds if 'error' in r]
  if failed or len(rounds) == 1:
    return (failed or rounds)[0]
  out = {**rounds[-1], 'rounds': rounds}
  for kind in ('eager', 'compiled'):
    out[kind] = {
      m: (min(r[kind][m] for r in rounds) if isinstance(v, float) else v)
      for m, v in rounds[-1].get(kind, {}).items()
    }
  return out


def time_torch(preset, configs) -> dict:
  c = configs['single']
  gshap = configs.get('mimic_gshap', c).mimic.explainer_kwargs
  spec = {
    'arch': c.model.arch,
    'size': _size(preset),
    'channels': c.model.input_channels,
    'width': c.model.width or 64,
    'batch': c.batch_size,
    'steps': _STEPS.value,
    'methods': list(configs),
    'num_models': c.ensemble.num_models,
    'gaze_weight': c.gaze.weight,
    'beta': c.mimic.beta,
    'pool': c.mimic.post.pool,
    'gaze_size': _size(preset),
    'disc_hidden': c.mimic.disc_hidden,
    'gshap_samples': gshap.get('samples', 5),
    'compile': _TORCH_COMPILE.value,
    'threads': _THREADS.value,
    'dtype': _DTYPE.value,
  }
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = pathlib.Path(tmp, 'spec.json'), pathlib.Path(tmp, 'out.json')
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
      [
        _TORCH_PYTHON.value,
        str(ROOT / 'benchmarks' / 'torch_steps.py'),
        '--spec',
        str(spec_path),
        '--out',
        str(out_path),
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    if proc.returncode != 0:
      return {'error': proc.stderr[-2000:]}
    return json.loads(out_path.read_text())


def pipeline_rate(config, batches: int = 20) -> float:
  """Training examples/s from the synthetic ArrayRecord build through grain."""
  from mimic_jax.data import pipeline as input_pipeline
  from mimic_jax.data import prepare

  prepare.prepare_dataset(config.data)
  source = input_pipeline.data_source(config.data, 'train')
  ds, _ = input_pipeline.train_dataset(
    source, global_batch=config.batch_size, input_channels=config.model.input_channels, seed=0
  )
  it = input_pipeline.iterate_from(
    ds, 0, threads=config.data.threads, prefetch=config.data.prefetch
  )
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t0)


def _random_batch(config, size):
  rng = np.random.default_rng(0)
  b, c = config.batch_size, config.model.input_channels
  gaze = rng.random((b, size, size)).astype(np.float32)
  return {
    'image': jnp.asarray(rng.normal(size=(b, size, size, c)).astype(np.float32)),
    'label': jnp.asarray(np.arange(b) % 3, jnp.int32),
    'gaze': jnp.asarray(gaze / gaze.sum(axis=(1, 2), keepdims=True)),
  }


def table(result) -> str:
  rate = result['matmul_gflops_xla']
  lines = [
    f'Device: {result["device"]}; jax {result["jax"]}; {result["dtype"]}; XLA float32 '
    f'matmul {rate:.0f} GFLOP/s'
    + (
      f', PyTorch {result["matmul_gflops_torch"]:.0f}' if result.get('matmul_gflops_torch') else ''
    ),
    '',
    '| preset | method | JAX step (s) | img/s | GFLOP | GFLOP/s | % matmul | x plain '
    '| JAX MB | torch eager (s) | JAX / eager | torch.compile (s) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for preset, pr in result['presets'].items():
    for method in pr.get('methods', list(pr['jax'])):
      j, t = pr['jax'].get(method), pr.get('torch', {})
      eager = t.get('eager', {}).get(method)
      comp = t.get('compiled', {}).get(method)
      tmem = t.get('peak_bytes', {}).get(method)
      torch_cols = (
        (f'{eager:.3f}' + (f' ({tmem / 2**20:.0f} MB)' if tmem else ''))
        if isinstance(eager, float)
        else '-'
      )
      comp_col = f'{comp:.3f}' if isinstance(comp, float) else (comp or '-')
      if j is None:
        lines.append(
          f'| {preset} (b{pr["batch"]}) | {method} | not timed | | | | | | | '
          f'{torch_cols} | - | {comp_col} |'
        )
        continue
      plain = pr['jax'].get(PLAIN[method], {}).get('step_s')
      mem = j['device_peak_bytes'] or j['xla_buffer_bytes']
      mb = mem / 2**20 if mem else float('nan')
      lines.append(
        f'| {preset} (b{pr["batch"]}) | {method} | {j["step_s"]:.3f} | '
        f'{j["images_per_s"]:.0f} | {j["gflop"]:.1f} | {j["gflop_per_s"]:.0f} | '
        f'{100 * j["gflop_per_s"] / rate:.0f}% | '
        + (f'{j["step_s"] / plain:.2f}' if plain else '-')
        + f' | {mb:.0f} | {torch_cols} | '
        + (f'{j["step_s"] / eager:.2f}' if isinstance(eager, float) else '-')
        + f' | {comp_col} |'
      )
    paired = {
      m: sorted(j['matmul_fraction_rounds'])
      for m, j in pr['jax'].items()
      if len(j.get('matmul_fraction_rounds', [])) > 1
    }
    if paired:
      lines.append(
        f'\nRound by round ({preset}), GFLOP/s as a fraction of the matmul rate read '
        'just before the round, median (range): '
        + ', '.join(
          f'{m} {100 * float(np.median(f)):.0f}% ({100 * f[0]:.0f}-{100 * f[-1]:.0f}%)'
          for m, f in paired.items()
        )
        + '.'
      )
    ratios = {
      m: sorted(a / b for a, b in zip(j['step_s_rounds'], pr['jax'][PLAIN[m]]['step_s_rounds']))
      for m, j in pr['jax'].items()
      if PLAIN[m] != m and len(pr['jax'].get(PLAIN[m], {}).get('step_s_rounds', [])) > 1
    }
    if ratios:
      lines.append(
        f'\nRound by round ({preset}), each step over the plain step of the same round '
        '(x plain), median (range): '
        + ', '.join(
          f'{m} {float(np.median(q)):.2f} ({q[0]:.2f}-{q[-1]:.2f})' for m, q in ratios.items()
        )
        + '.'
      )
    for ablation, per_method in pr.get('ablations', {}).items():
      ratios = {
        m: sorted(a / b for a, b in zip(v['step_s_rounds'], pr['jax'][m]['step_s_rounds']))
        for m, v in per_method.items()
      }
      lines.append(
        f'\nAblation `{ablation}` ({preset}), its step time over the default one of the same '
        'round, median (range): '
        + ', '.join(
          f'{m} {float(np.median(q)):.2f} ({q[0]:.2f}-{q[-1]:.2f})' for m, q in ratios.items()
        )
        + '.'
      )
    if pr.get('pipeline_examples_per_s'):
      single = pr['jax'].get('single', {}).get('images_per_s')
      lines.append(
        f'\nInput pipeline ({preset}): {pr["pipeline_examples_per_s"]:.0f} '
        'examples/s' + (f'; the single step consumes {single:.0f}/s.' if single else '.')
      )
  return '\n'.join(lines)


def main(argv):
  del argv
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  result = {
    'device': str(jax.devices()[0]),
    'jax': jax.__version__,
    'dtype': _DTYPE.value,
    'date': time.strftime('%Y-%m-%d'),
    'command': ' '.join(sys.argv),
    'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
    'matmul_gflops_xla': matmul_gflops(),
    'presets': {},
  }
  print(f'XLA float32 matmul: {result["matmul_gflops_xla"]:.0f} GFLOP/s', flush=True)
  for preset in _PRESETS.value:
    configs = {m: preset_config(preset, m) for m in _METHODS.value}
    batch = _random_batch(next(iter(configs.values())), _size(preset))
    pr = result['presets'][preset] = {
      'batch': batch['image'].shape[0],
      'jax': {},
      'methods': list(configs),
      'matmul_gflops_xla_rounds': [],
    }
    jitted, times, torch_rounds = {}, {m: [] for m in configs}, []
    ablated = {}  # (ablation, method) -> config
    for ablation in _ABLATIONS.value:
      key, value = ablation.split('=')
      for method in configs:
        ablated[(ablation, method)] = c = preset_config(preset, method)
        c.xla[key] = value
    ablation_times = {k: [] for k in ablated}
    for r in range(_ROUNDS.value):
      if _TORCH_PYTHON.value:  # first: on a GPU it then leaves the memory to JAX
        torch_rounds.append(time_torch(preset, configs))
        print(preset, 'torch', f'round {r + 1}', json.dumps(torch_rounds[-1]), flush=True)
        pr['torch'] = fastest_torch(torch_rounds)
        result['matmul_gflops_torch'] = pr['torch'].get('matmul_gflops')
      rate = matmul_gflops()
      pr['matmul_gflops_xla_rounds'].append(rate)
      result['matmul_gflops_xla'] = max(result['matmul_gflops_xla'], rate)
      print(preset, f'round {r + 1}: XLA float32 matmul {rate:.0f} GFLOP/s', flush=True)
      for method, config in configs.items():
        if method in _JAX_SKIP.value:
          continue
        if method not in jitted:
          jitted[method] = compile_jax(config, batch)
        times[method].append(time_jax(jitted[method], batch))
        pr['jax'][method] = jax_result(
          jitted[method], times[method], pr['matmul_gflops_xla_rounds'], config.batch_size
        )
        print(preset, 'jax', method, f'round {r + 1}', json.dumps(pr['jax'][method]), flush=True)
        _save(result)
      for (ablation, method), config in ablated.items():
        if (ablation, method) not in jitted:
          jitted[(ablation, method)] = compile_jax(config, batch)
        ablation_times[(ablation, method)].append(time_jax(jitted[(ablation, method)], batch))
        pr.setdefault('ablations', {}).setdefault(ablation, {})[method] = {
          'step_s_rounds': ablation_times[(ablation, method)],
          'compile_s': jitted[(ablation, method)]['stats']['compile_s'],
          'tuning': jitted[(ablation, method)]['stats']['tuning'],
        }
        _save(result)
    if preset == 'cpu':
      pr['pipeline_examples_per_s'] = pipeline_rate(next(iter(configs.values())))
    _save(result)
  print(table(result))


def _save(result):
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  app.run(main)
