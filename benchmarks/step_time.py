r"""Train-step time of each method, JAX side by side with PyTorch eager (GPU or CPU).

  python benchmarks/step_time.py --arch densenet121 --size 224 --batch 32 \
      [--methods single,ensemble,mimic,gaze] [--executions vmap,unrolled] [--torch] \
      [--out results.json]
  python benchmarks/step_time.py --synthetic --size 64 --methods single,mimic \
      --executions vmap,unrolled --steps 3       # the CPU-size configs

JAX: the jit-compiled ``member_step`` of ``mimic_jax.steps`` (mimic: the adversarial phase,
GradientSHAP with 5 samples; gaze: the input-gradient KLD penalty), Adam, float32, random
inputs, after one compiling call; FLOPs from XLA's cost analysis. PyTorch (``--torch``):
torchvision's same architecture, the plain CE step and the gaze step (input gradient with
``create_graph=True``, i.e. double backprop), Adam, eager. Peak device memory where the
backend reports it.
"""

import functools
import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import mimic
from mimic_jax import models
from mimic_jax import steps

_ARCH = flags.DEFINE_string('arch', 'densenet121', 'Model architecture.')
_SIZE = flags.DEFINE_integer('size', 224, 'Image side.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps.')
_METHODS = flags.DEFINE_list('methods', ['single', 'ensemble', 'mimic', 'gaze'], 'Methods.')
_EXECUTIONS = flags.DEFINE_list('executions', ['vmap'], 'Ensemble executions to time.')
_TORCH = flags.DEFINE_bool('torch', False, 'Also time PyTorch eager steps.')
_OUT = flags.DEFINE_string('out', None, 'JSON output file.')
_SYNTHETIC = flags.DEFINE_bool('synthetic', False, 'Use the CPU-size synthetic configs '
                               '(tiny GroupNorm ResNet, 1 channel) instead of --arch.')

VARIANT = {'single': 'baseline', 'ensemble': 'ensemble', 'mimic': 'mimic', 'gaze': 'gaze'}


def _config(method, execution):
  if _SYNTHETIC.value:
    c = mimic.get_config(f'{VARIANT[method]},synthetic')
  else:
    c = mimic.get_config(VARIANT[method])
    c.model.arch = _ARCH.value
    c.model.norm = 'batch'
    c.mimic.post.pool = 8
  c.batch_size = _BATCH.value
  c.ensemble.execution = execution
  return c


def _peak_bytes():
  try:
    return jax.devices()[0].memory_stats().get('peak_bytes_in_use')
  except Exception:  # pylint: disable=broad-except
    return None


def time_jax(method, execution, batch):
  c = _config(method, execution)
  model = models.create_model(c.model)
  shape = batch['image'].shape[1:]
  state = jax.jit(functools.partial(steps.create_state, c, model, shape))(jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.member_step, c), donate_argnums=(0,))
  compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  t0 = time.perf_counter()
  state, _ = step(state, batch)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  dt = (time.perf_counter() - t0) / _STEPS.value
  return {'step_s': dt, 'images_per_s': _BATCH.value / dt, 'first_call_s': first,
          'flops': flops, 'tflops_per_s': flops / dt / 1e12, 'peak_bytes': _peak_bytes()}


def time_torch(method, x_np, y_np, gaze_np):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  net = getattr(torchvision.models, _ARCH.value)(num_classes=3).to(dev)
  opt = torch.optim.Adam(net.parameters(), 1e-4)
  x = torch.tensor(np.repeat(x_np.transpose(0, 3, 1, 2), 3 // x_np.shape[-1], 1), device=dev)
  y = torch.tensor(y_np, device=dev, dtype=torch.long)
  gaze = torch.tensor(gaze_np, device=dev)

  def step():
    opt.zero_grad(set_to_none=True)
    if method == 'gaze':
      xi = x.clone().requires_grad_(True)
      net.eval()
      logits_e = net(xi)
      (g,) = torch.autograd.grad(logits_e.gather(1, y[:, None]).sum(), xi, create_graph=True)
      sal = g.abs().sum(1)
      s = sal / sal.sum((1, 2), keepdim=True).clamp_min(2.2e-16)
      q = gaze / gaze.sum((1, 2), keepdim=True)
      pen = (q * torch.log(2.2e-16 + q / (s + 2.2e-16))).sum((1, 2)).mean()
      net.train()
      loss = torch.nn.functional.cross_entropy(net(x), y) + pen
    else:
      net.train()
      loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()

  def sync():
    if dev == 'cuda':
      torch.cuda.synchronize()

  step()
  sync()
  if dev == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    step()
  sync()
  dt = (time.perf_counter() - t0) / _STEPS.value
  peak = torch.cuda.max_memory_allocated() if dev == 'cuda' else None
  return {'step_s': dt, 'images_per_s': _BATCH.value / dt, 'peak_bytes': peak,
          'torch': torch.__version__, 'device': dev}


def _save(out):
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(out, f, indent=1)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  s, b = _SIZE.value, _BATCH.value
  x = rng.normal(size=(b, s, s, 1 if _SYNTHETIC.value else 3)).astype(np.float32)
  y = (np.arange(b) % 3).astype(np.int32)
  gaze = rng.random((b, s, s)).astype(np.float32)
  gaze /= gaze.sum(axis=(1, 2), keepdims=True)
  batch = {'image': jnp.asarray(x), 'label': jnp.asarray(y), 'gaze': jnp.asarray(gaze)}
  arch = 'synthetic config' if _SYNTHETIC.value else _ARCH.value
  out = {'device': str(jax.devices()[0]), 'jax': jax.__version__, 'arch': arch,
         'size': s, 'batch': b, 'jax_steps': {}, 'torch_steps': {}}
  for method in _METHODS.value:
    for execution in (_EXECUTIONS.value if method in ('ensemble', 'mimic') else ['vmap']):
      key = f'{method}/{execution}' if method in ('ensemble', 'mimic') else method
      out['jax_steps'][key] = time_jax(method, execution, batch)
      print('jax', key, json.dumps(out['jax_steps'][key]), flush=True)
      _save(out)
  if _TORCH.value:
    for method in ('single', 'gaze'):
      out['torch_steps'][method] = time_torch(method, x, y, gaze)
      print('torch', method, json.dumps(out['torch_steps'][method]), flush=True)
      _save(out)
  single = out['jax_steps'].get('single', {}).get('step_s')
  if single:
    out['ratio_to_single'] = {k: v['step_s'] / single for k, v in out['jax_steps'].items()}
  if out['torch_steps']:
    out['jax_over_torch'] = {m: out['jax_steps'][m]['step_s'] / out['torch_steps'][m]['step_s']
                             for m in out['torch_steps'] if m in out['jax_steps']}
  print(json.dumps(out, indent=1))
  _save(out)


if __name__ == '__main__':
  app.run(main)
