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

from mimic_jax.models import cpu_convs
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
  computation; parameters stay float32), ``strided_conv`` (``auto``: ``windows`` on CPU,
  ``conv`` elsewhere), (ResNets) ``width`` and ``downsample`` and (EfficientNet)
  ``depthwise`` (``auto``: ``shifts`` on CPU, ``conv`` elsewhere)."""
  if model.arch not in ARCHITECTURES:
    raise ValueError(f'config.model.arch={model.arch!r} is unknown; choose one of '
                     f'{sorted(ARCHITECTURES)}')
  kwargs = {'num_classes': model.num_classes, 'norm': model.norm,
            'dtype': DTYPES[model.get('dtype', 'float32')],
            'strided_conv': strided_conv_impl(model.get('strided_conv', 'auto'))}
  if 'resnet' in model.arch:
    if model.get('width'):
      kwargs['width'] = model.width
    kwargs['downsample'] = model.get('downsample', 'stride')
  if model.arch == 'efficientnet_b0':
    kwargs['depthwise'] = depthwise_impl(model.get('depthwise', 'auto'))
  return ARCHITECTURES[model.arch](**kwargs)


def strided_conv_impl(strided_conv: str) -> str:
  """``config.model.strided_conv`` resolved: ``auto`` is ``windows`` on CPU (where XLA
  loop-emits a second-order gradient of strided convolutions), ``conv`` on GPU/TPU."""
  if strided_conv == 'auto':
    return 'windows' if jax.default_backend() == 'cpu' else 'conv'
  if strided_conv not in cpu_convs.STRIDED_CONV:
    raise ValueError(f'config.model.strided_conv={strided_conv!r}; use "auto", "conv" or '
                     '"windows"')
  return strided_conv


def depthwise_impl(depthwise: str) -> str:
  """``config.model.depthwise`` resolved: ``auto`` is ``shifts`` on CPU (where XLA computes
  grouped-convolution kernel gradients densely), ``conv`` on GPU/TPU."""
  if depthwise == 'auto':
    return 'shifts' if jax.default_backend() == 'cpu' else 'conv'
  if depthwise not in ('conv', 'shifts'):
    raise ValueError(f'config.model.depthwise={depthwise!r}; use "auto", "conv" or "shifts"')
  return depthwise
