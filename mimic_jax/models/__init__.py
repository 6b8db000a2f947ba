"""Model zoo: ``create_model(config.model)``.

All models take ``(B, H, W, C)`` float32 input and return ``(B, num_classes)`` logits; call
with ``train=True`` (and ``mutable=['batch_stats']``) to use and update batch statistics, and
``train=False`` to use running averages. Explanations are always computed with ``train=False``
so that one example's map never depends on the other members of its batch (train-mode
BatchNorm statistics would couple them); ``norm='group'`` (ResNets only) removes batch
statistics altogether. Each model exposes its last feature map as ``features`` for Grad-CAM.
"""

import jax
import jax.numpy as jnp
import ml_collections

from mimic_jax.models import densenet
from mimic_jax.models import efficientnet
from mimic_jax.models import resnet

# float32: None, i.e. computed in the inputs' dtype (float32; float64 in float64 tests).
DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}
ARCHITECTURES = {
    'resnet18': resnet.ResNet18,
    'resnet50': resnet.ResNet50,
    'tiny_resnet': resnet.TinyResNet,
    'densenet121': densenet.DenseNet121,
    'efficientnet_b0': efficientnet.EfficientNetB0,
}


def create_model(model: ml_collections.ConfigDict):
  """Instantiates ``model.arch`` with ``num_classes``, ``norm``, ``dtype`` (of the
  computation; parameters stay float32), ``conv_grads`` (``auto``: ``cpu`` on CPU,
  ``lax`` elsewhere), (ResNets) ``width`` and ``downsample`` and (EfficientNet)
  ``depthwise`` (``auto``: ``shifts`` on CPU, ``conv`` elsewhere)."""
  if model.arch not in ARCHITECTURES:
    raise ValueError(f'config.model.arch={model.arch!r} is unknown; choose one of '
                     f'{sorted(ARCHITECTURES)}')
  kwargs = {'num_classes': model.num_classes, 'norm': model.norm,
            'dtype': DTYPES[model.get('dtype', 'float32')],
            'conv_grads': _impl(model, 'conv_grads')}
  if 'resnet' in model.arch:
    if model.get('width'):
      kwargs['width'] = model.width
    kwargs['downsample'] = model.get('downsample', 'stride')
  if model.arch == 'efficientnet_b0':
    kwargs['depthwise'] = _impl(model, 'depthwise')
  return ARCHITECTURES[model.arch](**kwargs)


# Implementation choices with 'auto': (the CPU choice, the GPU/TPU choice). On CPU XLA
# loop-emits a second-order gradient of strided convolutions, fuses elementwise derivatives
# into the transposes before kernel gradients and computes grouped-convolution kernel
# gradients densely; cpu_convs avoids all three (benchmarks/RESULTS.md).
_AUTO = {'conv_grads': ('cpu', 'lax'), 'depthwise': ('shifts', 'conv')}


def _impl(model: ml_collections.ConfigDict, key: str) -> str:
  """``config.model.<key>`` (default ``auto``) resolved for this backend and checked."""
  value = model.get(key, 'auto')
  on_cpu, elsewhere = _AUTO[key]
  if value == 'auto':
    return on_cpu if jax.default_backend() == 'cpu' else elsewhere
  if value not in (on_cpu, elsewhere):
    raise ValueError(f'config.model.{key}={value!r}; use "auto", "{elsewhere}" or "{on_cpu}"')
  return value
