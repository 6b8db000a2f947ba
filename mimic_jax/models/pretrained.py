"""ImageNet-pretrained backbones from PyTorch checkpoints: torchvision ``resnet18`` /
``resnet50`` / ``densenet121`` and timm ``efficientnet_b0`` state dicts into our Flax models.

- :func:`read_state_dict` reads ``.safetensors`` (numpy only, no PyTorch) or ``.pth``/``.pt``
  (through PyTorch, only if it is installed), unwrapping ``{'state_dict': ...}`` and
  ``module.`` prefixes.
- :func:`convert` maps it to Flax variables ``{'params', 'batch_stats'}`` of one model:
  convolution kernels ``(O, I, kh, kw) -> (kh, kw, I, O)``, linear ``(O, I) -> (I, O)``,
  BatchNorm weight/bias -> scale/bias and running mean/var -> batch statistics. It names the
  first tensor whose name or shape does not match, or that the architecture does not have.
- :func:`save_converted` / :func:`load` keep converted variables as safetensors (keys
  ``params/conv0/kernel``; metadata ``format=mimic_jax``, ``arch``).
- :func:`init_backbone` puts them into freshly initialised variables: a classifier with
  another class count keeps its fresh initialisation; for grey input
  (``config.model.input_channels=1``) the first convolution's RGB filters are summed (with
  3 channels the grey image is replicated and ImageNet-normalised by the input pipeline).
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import os

from flax import traverse_util
import numpy as np

from mimic_jax.models import efficientnet

FORMAT = 'mimic_jax'
ARCHES = ('resnet18', 'resnet50', 'densenet121', 'efficientnet_b0')
# How the sub-models of an ensemble start from the weights (``ensemble_from_pretrained``).
MEMBER_INITS = ('same', 'perturb')
# The module whose weights are replaced for a new class count, and the first convolution.
HEAD = {
  'resnet18': 'head',
  'resnet50': 'head',
  'densenet121': 'classifier',
  'efficientnet_b0': 'classifier',
}
FIRST_CONV = {
  'resnet18': 'stem',
  'resnet50': 'stem',
  'densenet121': 'conv0',
  'efficientnet_b0': 'stem',
}
# Bookkeeping tensors of PyTorch modules that carry no weights.
_IGNORED_SUFFIXES = ('num_batches_tracked',)


class ConversionError(ValueError):
  """A checkpoint does not fit the architecture (names the tensor)."""


@dataclasses.dataclass(frozen=True)
class _Layer:
  torch: str  # module prefix in the state dict
  flax: tuple[str, ...]  # module path in the Flax params
  kind: str  # conv | conv_bias | bn | dense


def _resnet18_layers() -> Iterator[_Layer]:
  yield _Layer('conv1', ('stem',), 'conv')
  yield _Layer('bn1', ('stem_norm',), 'bn')
  for stage in range(4):
    for block in range(2):
      flax_block = f'BasicBlock_{2 * stage + block}'
      t = f'layer{stage + 1}.{block}'
      yield _Layer(f'{t}.conv1', (flax_block, 'Conv_0'), 'conv')
      yield _Layer(f'{t}.bn1', (flax_block, 'BatchNorm_0'), 'bn')
      yield _Layer(f'{t}.conv2', (flax_block, 'Conv_1'), 'conv')
      yield _Layer(f'{t}.bn2', (flax_block, 'BatchNorm_1'), 'bn')
      if stage > 0 and block == 0:
        yield _Layer(f'{t}.downsample.0', (flax_block, 'proj'), 'conv')
        yield _Layer(f'{t}.downsample.1', (flax_block, 'proj_norm'), 'bn')
  yield _Layer('fc', ('head',), 'dense')


def _resnet50_layers() -> Iterator[_Layer]:
  yield _Layer('conv1', ('stem',), 'conv')
  yield _Layer('bn1', ('stem_norm',), 'bn')
  k = 0
  for stage, n_blocks in enumerate((3, 4, 6, 3)):
    for block in range(n_blocks):
      flax_block, t = f'BottleneckBlock_{k}', f'layer{stage + 1}.{block}'
      for c in range(3):
        yield _Layer(f'{t}.conv{c + 1}', (flax_block, f'Conv_{c}'), 'conv')
        yield _Layer(f'{t}.bn{c + 1}', (flax_block, f'BatchNorm_{c}'), 'bn')
      if block == 0:
        yield _Layer(f'{t}.downsample.0', (flax_block, 'proj'), 'conv')
        yield _Layer(f'{t}.downsample.1', (flax_block, 'proj_norm'), 'bn')
      k += 1
  yield _Layer('fc', ('head',), 'dense')


def _densenet121_layers() -> Iterator[_Layer]:
  yield _Layer('features.conv0', ('conv0',), 'conv')
  yield _Layer('features.norm0', ('norm0',), 'bn')
  for i, n in enumerate((6, 12, 24, 16), start=1):
    for j in range(1, n + 1):
      t, f = f'features.denseblock{i}.denselayer{j}', f'block{i}_layer{j}'
      yield _Layer(f'{t}.norm1', (f'{f}_norm1',), 'bn')
      yield _Layer(f'{t}.conv1', (f'{f}_conv1',), 'conv')
      yield _Layer(f'{t}.norm2', (f'{f}_norm2',), 'bn')
      yield _Layer(f'{t}.conv2', (f'{f}_conv2',), 'conv')
    if i < 4:
      yield _Layer(f'features.transition{i}.norm', (f'transition{i}_norm',), 'bn')
      yield _Layer(f'features.transition{i}.conv', (f'transition{i}_conv',), 'conv')
  yield _Layer('features.norm5', ('norm5',), 'bn')
  yield _Layer('classifier', ('classifier',), 'dense')


def _efficientnet_b0_layers() -> Iterator[_Layer]:
  yield _Layer('conv_stem', ('stem',), 'conv')
  yield _Layer('bn1', ('stem_norm',), 'bn')
  for i, (expand, *_, repeats) in enumerate(efficientnet.B0_STAGES):
    for j in range(repeats):
      t, f = f'blocks.{i}.{j}', f'stage{i + 1}_block{j + 1}'
      if expand == 1:  # timm's DepthwiseSeparableConv
        order = [
          ('conv_dw', 'conv'),
          ('bn1', 'bn'),
          ('se.conv_reduce', 'conv_bias'),
          ('se.conv_expand', 'conv_bias'),
          ('conv_pw', 'conv'),
          ('bn2', 'bn'),
        ]
      else:  # InvertedResidual
        order = [
          ('conv_pw', 'conv'),
          ('bn1', 'bn'),
          ('conv_dw', 'conv'),
          ('bn2', 'bn'),
          ('se.conv_reduce', 'conv_bias'),
          ('se.conv_expand', 'conv_bias'),
          ('conv_pwl', 'conv'),
          ('bn3', 'bn'),
        ]
      n_conv = n_bn = 0
      for name, kind in order:
        if kind == 'bn':
          yield _Layer(f'{t}.{name}', (f, f'BatchNorm_{n_bn}'), kind)
          n_bn += 1
        else:
          yield _Layer(f'{t}.{name}', (f, f'Conv_{n_conv}'), kind)
          n_conv += 1
  yield _Layer('conv_head', ('head',), 'conv')
  yield _Layer('bn2', ('head_norm',), 'bn')
  yield _Layer('classifier', ('classifier',), 'dense')


_LAYERS = {
  'resnet18': _resnet18_layers,
  'resnet50': _resnet50_layers,
  'densenet121': _densenet121_layers,
  'efficientnet_b0': _efficientnet_b0_layers,
}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A PyTorch state dict as float32 numpy arrays (see the module docstring)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'pretrained weights {path} do not exist')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file

    try:
      tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types for a bad file
      raise ConversionError(f'{path} is not a readable safetensors file ({e})') from None
  elif path.endswith(('.pth', '.pt', '.bin')):
    try:
      import torch
    except ImportError as e:
      raise ImportError(
        f'{path} is a PyTorch pickle and reading it needs PyTorch, which is not installed. '
        'Install it, or convert the file to .safetensors where PyTorch is (safetensors.torch.'
        'save_file(torch.load(path), out)).'
      ) from e
    obj = torch.load(path, map_location=lambda storage, _: storage, weights_only=True)
    for key in ('state_dict', 'model', 'model_state_dict'):
      if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    tensors = {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, 'numpy')}
  else:
    raise ValueError(f'{path}: expected a .safetensors, .pth or .pt file')
  out = {}
  for k, v in tensors.items():
    k = k[len('module.') :] if k.startswith('module.') else k
    out[k] = np.asarray(v, np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
  return out


def _take(
  sd: dict, name: str, arch: str, used: set, ndim: int | None = None, shape: tuple | None = None
) -> np.ndarray:
  """``sd[name]``, checked for rank or shape; raises ConversionError naming the tensor."""
  if name not in sd:
    raise ConversionError(
      f'{arch}: the checkpoint has no tensor {name!r} (is it a {arch} state dict?)'
    )
  value = np.asarray(sd[name], np.float32)
  if (ndim is not None and value.ndim != ndim) or (
    shape is not None and value.shape != tuple(shape)
  ):
    expected = tuple(shape) if shape is not None else f'{ndim} dimensions'
    raise ConversionError(f'{arch}: tensor {name!r} has shape {value.shape}, expected {expected}')
  used.add(name)
  return value


def convert(sd: dict[str, np.ndarray], arch: str) -> dict:
  """Flax variables ``{'params', 'batch_stats'}`` of ``arch`` from a PyTorch state dict. The
  classifier keeps the checkpoint's size. The architecture must match exactly: a missing or
  misshapen tensor, or one ``arch`` does not have (a deeper network's extra layers), is a
  ``ConversionError`` naming it."""
  if arch not in _LAYERS:
    raise ConversionError(f'no converter for arch {arch!r}; supported: {ARCHES}')
  params, stats, used = {}, {}, set()
  for layer in _LAYERS[arch]():
    t, f = layer.torch, layer.flax
    if layer.kind in ('conv', 'conv_bias'):
      w = _take(sd, f'{t}.weight', arch, used, ndim=4)
      params[f + ('kernel',)] = w.transpose(2, 3, 1, 0)
      if layer.kind == 'conv_bias':
        params[f + ('bias',)] = _take(sd, f'{t}.bias', arch, used, shape=w.shape[:1])
    elif layer.kind == 'dense':
      w = _take(sd, f'{t}.weight', arch, used, ndim=2)
      params[f + ('kernel',)] = w.T
      params[f + ('bias',)] = _take(sd, f'{t}.bias', arch, used, shape=w.shape[:1])
    else:  # bn
      w = _take(sd, f'{t}.weight', arch, used, ndim=1)
      params[f + ('scale',)] = w
      params[f + ('bias',)] = _take(sd, f'{t}.bias', arch, used, shape=w.shape)
      stats[f + ('mean',)] = _take(sd, f'{t}.running_mean', arch, used, shape=w.shape)
      stats[f + ('var',)] = _take(sd, f'{t}.running_var', arch, used, shape=w.shape)
  unused = sorted(k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES))
  if unused:
    more = f' and {len(unused) - 1} more' if len(unused) > 1 else ''
    raise ConversionError(
      f'{arch}: the checkpoint has tensors {arch} does not, e.g. {unused[0]!r}{more} (another '
      'architecture, or a deeper or wider variant?)'
    )
  return {
    'params': traverse_util.unflatten_dict(params),
    'batch_stats': traverse_util.unflatten_dict(stats),
  }


def save_converted(variables: dict, arch: str, path: str | os.PathLike) -> None:
  """Writes converted variables as safetensors (keys ``collection/module/.../leaf``)."""
  from safetensors.numpy import save_file

  flat = traverse_util.flatten_dict(variables, sep='/')
  save_file(
    {k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()},
    os.fspath(path),
    metadata={'format': FORMAT, 'arch': arch},
  )


def load(path: str | os.PathLike, arch: str) -> dict:
  """Flax variables of ``arch`` from a converted file or a PyTorch checkpoint."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'pretrained weights {path} do not exist (config.model.pretrained)')
  if path.endswith('.safetensors'):
    from safetensors import safe_open

    try:
      with safe_open(path, framework='numpy') as f:
        meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad file
      raise ConversionError(
        f'{path} is not a readable safetensors file ({type(e).__name__}: {e}); '
        'check config.model.pretrained'
      ) from None
    if meta.get('format') == FORMAT:
      if meta.get('arch') != arch:
        raise ConversionError(
          f'{path} holds {meta.get("arch")} weights, but config.model.arch is {arch!r}'
        )
      from safetensors.numpy import load_file

      return traverse_util.unflatten_dict(load_file(path), sep='/')
  return convert(read_state_dict(path), arch)


def init_backbone(fresh: dict, pretrained: dict, arch: str) -> dict:
  """``fresh`` single-model variables with every tensor taken from ``pretrained``, except
  a classifier of another shape (kept fresh) and a grey first convolution (RGB filters
  summed). Raises ConversionError naming the first tensor that does not fit."""
  flat_fresh = traverse_util.flatten_dict(fresh)
  flat_pre = traverse_util.flatten_dict(pretrained)
  out = {}
  for key, value in flat_fresh.items():
    name = '/'.join(key)
    module = key[1]
    if key not in flat_pre:
      raise ConversionError(f'{arch}: pretrained weights have no {name}')
    new = np.asarray(flat_pre[key])
    if module == HEAD[arch] and new.shape != value.shape:
      out[key] = value  # a new classifier for this task's classes
      continue
    if (
      module == FIRST_CONV[arch]
      and key[-1] == 'kernel'
      and new.shape[2] == 3
      and value.shape[2] == 1
    ):
      new = new.sum(axis=2, keepdims=True)
    if new.shape != value.shape:
      raise ConversionError(
        f'{arch}: pretrained {name} has shape {new.shape}, the model needs {value.shape}'
      )
    out[key] = new.astype(value.dtype)
  return traverse_util.unflatten_dict(out)


def model_shapes(arch: str, num_classes: int, input_channels: int = 3) -> dict:
  """Shapes of ``arch``'s Flax ``params`` and ``batch_stats`` (no computation)."""
  import jax
  import jax.numpy as jnp

  from mimic_jax import models

  model = models.ARCHITECTURES[arch](num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, 64, 64, input_channels), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))
  return {k: shapes[k] for k in ('params', 'batch_stats')}


def check_against_model(variables: dict, arch: str) -> None:
  """Raises ConversionError naming the first variable whose name or shape differs from
  ``arch``'s (with the checkpoint's class count)."""
  num_classes = variables['params'][HEAD[arch]]['kernel'].shape[-1]
  expected = traverse_util.flatten_dict(model_shapes(arch, num_classes))
  got = traverse_util.flatten_dict(variables)
  for key, struct in expected.items():
    if key not in got:
      raise ConversionError(f'{arch}: nothing converted for {"/".join(key)}')
    if tuple(got[key].shape) != tuple(struct.shape):
      raise ConversionError(
        f'{arch}: converted {"/".join(key)} has shape '
        f'{tuple(got[key].shape)}, the Flax model has {struct.shape}'
      )
  extra = sorted('/'.join(k) for k in got if k not in expected)
  if extra:
    raise ConversionError(f'{arch}: converted variables the Flax model lacks: {extra[:5]}')


def ensemble_from_pretrained(
  fresh: dict, pretrained: dict, arch: str, member_init: str, perturb_scale: float, seed: int
) -> dict:
  """Stacked ``(M, ...)`` variables: every sub-model's backbone from ``pretrained``
  (``member_init='same'``, as the paper), or that plus Gaussian noise of ``perturb_scale``
  times each tensor's standard deviation, independently per sub-model (``'perturb'``).
  Classifier heads of a new class count stay as initialised (different per sub-model)."""
  m = next(iter(traverse_util.flatten_dict(fresh).values())).shape[0]
  rng = np.random.default_rng(seed)
  members = []
  for i in range(m):
    one = traverse_util.flatten_dict(init_backbone(_index(fresh, i), pretrained, arch))
    if member_init == 'perturb':
      for key, v in one.items():
        if key[0] == 'params' and key[1] != HEAD[arch] and v.size > 1:
          one[key] = (v + rng.normal(0.0, perturb_scale * float(np.std(v)), v.shape)).astype(
            v.dtype
          )
    members.append(one)
  return traverse_util.unflatten_dict(
    {k: np.stack([mem[k] for mem in members]) for k in members[0]}
  )


def _index(tree: dict, i: int) -> dict:
  return traverse_util.unflatten_dict(
    {k: np.asarray(v[i]) for k, v in traverse_util.flatten_dict(tree).items()}
  )
