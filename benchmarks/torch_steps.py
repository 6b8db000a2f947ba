r"""The PyTorch reference of the train steps that ``step_time.py`` times in JAX.

Run by ``step_time.py`` with .venv-torch's Python (PyTorch is never a mimic-jax dependency):

  .venv-torch/bin/python benchmarks/torch_steps.py --spec SPEC.json --out OUT.json

SPEC (written by ``step_time.py``): ``{"arch", "width", "size", "channels", "batch", "steps",
"methods" (single | ensemble | mimic_ig | mimic_gshap | gaze), "num_models", "gaze_weight",
"gaze_size", "beta", "pool", "disc_hidden", "gshap_samples", "compile", "threads", "dtype"}``.
On a CUDA device (used when present) ``dtype='bfloat16'`` runs the steps under
``torch.autocast``; peak memory is ``torch.cuda.max_memory_allocated`` per method. The same
architecture (torchvision DenseNet-121, timm EfficientNet-B0, or the twin of our tiny
GroupNorm ResNet), batch, losses and Adam as ``mimic_jax.training.steps.train_step``,
written as a PyTorch user would: eager, sub-models in a Python loop, explanations with
``torch.autograd.grad(..., create_graph=True)`` (double backprop), eval-mode explanations for
BatchNorm models and one shared forward where train and eval mode coincide (GroupNorm), as
ours. ``compile``: also ``torch.compile`` each step (reports the error where it fails).
"""

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

KLD_EPS = 2.220446049250313e-16


class _Block(nn.Module):
  """Our ``resnet.BasicBlock`` with GroupNorm (groups of 8 channels) and pooling downsampling
  (``downsample='pool'``: 2 x 2 average pooling, then stride-1 convolutions)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.pool = stride
    self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    self.n1 = nn.GroupNorm(cout // 8, cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.n2 = nn.GroupNorm(cout // 8, cout)
    self.proj = None
    if cin != cout:
      self.proj = nn.Sequential(
        nn.Conv2d(cin, cout, 1, 1, bias=False), nn.GroupNorm(cout // 8, cout)
      )

  def forward(self, x):
    if self.pool > 1:
      x = F.avg_pool2d(x, self.pool)
    y = F.relu(self.n1(self.conv1(x)))
    y = self.n2(self.conv2(y))
    return F.relu((x if self.proj is None else self.proj(x)) + y)


class TinyResNet(nn.Module):
  """Twin of ``mimic_jax.models.resnet.TinyResNet`` (stages (1, 1, 1), no stem pooling)."""

  def __init__(self, channels, width, num_classes=3):
    super().__init__()
    self.stem = nn.Conv2d(channels, width, 7, 2, 3, bias=False)
    self.stem_norm = nn.GroupNorm(width // 8, width)
    self.blocks = nn.Sequential(
      _Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2)
    )
    self.head = nn.Linear(4 * width, num_classes)

  def forward(self, x):
    x = self.blocks(F.relu(self.stem_norm(self.stem(x))))
    return self.head(x.mean((2, 3)))


def build(arch, channels, width):
  if arch == 'tiny_resnet':
    return TinyResNet(channels, width)
  if arch == 'efficientnet_b0':
    import timm

    return timm.create_model('efficientnet_b0', num_classes=3, in_chans=channels)
  import torchvision

  return torchvision.models.densenet121(num_classes=3)


def has_batchnorm(net):
  return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def postprocess(attr, pool, normalize):
  a = attr.abs().sum(1)
  if pool > 1:
    a = F.avg_pool2d(a[:, None], pool)[:, 0]
  if normalize == 'minmax':
    lo = a.amin((1, 2), keepdim=True)
    hi = a.amax((1, 2), keepdim=True)
    a = (a - lo) / (hi - lo).clamp_min(1e-12)
  return a


def kld(sal, gaze):
  s = sal / sal.sum((1, 2), keepdim=True).clamp_min(KLD_EPS)
  g = gaze / gaze.sum((1, 2), keepdim=True).clamp_min(KLD_EPS)
  return (g * torch.log(KLD_EPS + g / (s + KLD_EPS))).sum((1, 2)).mean()


def explanation(net, x, y, explainer, samples, shared):
  """True-class attribution with a graph to the parameters. ``shared``: (logits, x leaf) of
  the CE forward, reused for input gradients when train and eval modes coincide."""
  if explainer == 'input_gradients':
    if shared is not None:
      logits, xi = shared
    else:
      xi = x.detach().requires_grad_(True)
      logits = net(xi)
    (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), xi, create_graph=True)
    return g
  total = 0.0
  for alpha in torch.rand(samples).tolist():
    xs = (alpha * x).detach().requires_grad_(True)  # baseline 0
    (g,) = torch.autograd.grad(net(xs).gather(1, y[:, None]).sum(), xs, create_graph=True)
    total = total + x * g
  return total / samples


def make_step(spec, key, nets, opt, disc, batch):
  """One train step of method ``key`` (the sub-models' adversarial step for mimic_*)."""
  x, y, gaze = batch
  method = 'mimic' if key.startswith('mimic') else key
  explainer = 'input_gradients' if key == 'mimic_ig' else 'gradient_shap'
  samples = spec['gshap_samples']
  bn = has_batchnorm(nets[0])

  def step():
    opt.zero_grad(set_to_none=True)
    loss = 0.0
    shared = []
    for net in nets:
      net.train()
      if method in ('gaze', 'mimic') and not bn:
        xi = x.detach().requires_grad_(True)
        logits = net(xi)
        shared.append((logits, xi))
      else:
        logits = net(x)
        shared.append(None)
      loss = loss + F.cross_entropy(logits, y)
    if method == 'gaze':
      for net, sh in zip(nets, shared):
        if bn:
          net.eval()
        g = explanation(net, x, y, 'input_gradients', 1, sh)
        loss = loss + spec['gaze_weight'] * kld(
          postprocess(g, spec['size'] // gaze.shape[1], 'none'), gaze
        )
    elif method == 'mimic':
      maps = []
      for net, sh in zip(nets, shared):
        if bn:
          net.eval()
        a = explanation(net, x, y, explainer, samples, sh)
        maps.append(postprocess(a, spec['pool'], 'minmax'))
      m = torch.stack(maps)  # (M, B, h, w)
      d_logits = disc(m.reshape(m.shape[0] * m.shape[1], -1))
      labels = torch.arange(len(nets), device=x.device).repeat_interleave(x.shape[0])
      loss = loss - spec['beta'] * F.cross_entropy(d_logits, labels)
    loss.backward()
    opt.step()
    return loss

  return step


def _sync():
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def time_step(step, steps, dtype, first_done=None):
  """Seconds per step over ``steps`` calls after two warm-up calls; ``first_done(wall time)``
  is called when the first warm-up call has finished."""
  if torch.cuda.is_available() and dtype == 'bfloat16':
    plain = step

    def step():
      with torch.autocast('cuda', dtype=torch.bfloat16):
        return plain()

  for i in range(2):  # warm-up (allocator, thread pool; compilation)
    step()
    if i == 0 and first_done is not None:
      _sync()
      first_done(time.time())
  _sync()
  if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  _sync()
  return (time.perf_counter() - t0) / steps


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--spec', required=True)
  p.add_argument('--out', required=True)
  args = p.parse_args()
  with open(args.spec) as f:
    spec = json.load(f)
  torch.set_num_threads(spec['threads'])
  torch.manual_seed(0)
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.set_default_device(dev)
  rng = np.random.default_rng(0)
  b, s, c = spec['batch'], spec['size'], spec['channels']
  x = torch.tensor(rng.normal(size=(b, c, s, s)).astype(np.float32))
  y = torch.tensor(np.arange(b) % 3, dtype=torch.long)
  gs = spec['gaze_size']
  gaze = torch.tensor(rng.random((b, gs, gs)).astype(np.float32))
  x, y, gaze = x.to(dev), y.to(dev), gaze.to(dev)
  out = {
    'torch': torch.__version__,
    'threads': torch.get_num_threads(),
    'device': dev,
    'eager': {},
    'compiled': {},
    'peak_bytes': {},
    # time.time() at the end of each method's first step (end_to_end.py: time to first step).
    'first_step_wall': {},
  }
  for method in spec['methods']:
    m = spec['num_models'] if method in ('ensemble', 'mimic_ig', 'mimic_gshap') else 1
    nets = [build(spec['arch'], c, spec['width']) for _ in range(m)]
    params = [q for n in nets for q in n.parameters()]
    opt = torch.optim.Adam(params, 1e-4)
    side = s // spec['pool']
    disc = nn.Sequential(
      nn.Linear(side * side, spec['disc_hidden']), nn.ReLU(), nn.Linear(spec['disc_hidden'], m)
    )
    step = make_step(spec, method, nets, opt, disc, (x, y, gaze))
    out['eager'][method] = time_step(
      step,
      spec['steps'],
      spec.get('dtype', 'float32'),
      first_done=lambda t, method=method: out['first_step_wall'].__setitem__(method, t),
    )
    if dev == 'cuda':
      out['peak_bytes'][method] = torch.cuda.max_memory_allocated()
    print('torch eager', method, out['eager'][method], flush=True)
    if spec.get('compile'):
      try:
        out['compiled'][method] = time_step(
          torch.compile(step), spec['steps'], spec.get('dtype', 'float32')
        )
      except Exception as e:
        out['compiled'][method] = f'failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}'
      print('torch compiled', method, out['compiled'][method], flush=True)
    with open(args.out, 'w') as f:
      json.dump(out, f, indent=1)
  t = torch.randn(2048, 2048)
  torch.mm(t, t)
  _sync()
  best = float('inf')
  for _ in range(10):  # the fastest call, as step_time.matmul_gflops
    t0 = time.perf_counter()
    torch.mm(t, t)
    _sync()
    best = min(best, time.perf_counter() - t0)
  out['matmul_gflops'] = 2 * 2048**3 / best / 1e9
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)


if __name__ == '__main__':
  main()
