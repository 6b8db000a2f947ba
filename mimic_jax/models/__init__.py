"""Model zoo: ``create_model(config.model, conv=...)``.

All models take ``(B, H, W, C)`` float input and return ``(B, num_classes)`` logits; call
with ``train=True`` (and ``mutable=['batch_stats']``) to use and update batch statistics, and
``train=False`` to use running averages. Explanations are always computed with ``train=False``
so that one example's map never depends on the other members of its batch (train-mode
BatchNorm statistics would couple them); ``norm='group'`` (ResNets only) removes batch
statistics altogether. Each model exposes its last feature map as ``features``, and its
stages by name, for Grad-CAM (``GRADCAM_LAYERS`` names the one the paper used).

``conv`` is the module class of the dense convolutions, ``flax.linen.Conv`` by default. A
drop-in replacement (same parameters, same numbers, computed differently for a backend) comes
from ``mimic_jax.tuning``; the models themselves know nothing of backends.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mimic_jax.models import densenet
from mimic_jax.models import efficientnet
from mimic_jax.models import resnet

ARCHITECTURES = {
  'resnet18': resnet.ResNet18,
  'resnet50': resnet.ResNet50,
  'tiny_resnet': resnet.TinyResNet,
  'densenet121': densenet.DenseNet121,
  'efficientnet_b0': efficientnet.EfficientNetB0,
}
RESNETS = ('resnet18', 'resnet50', 'tiny_resnet')
# The layer whose Grad-CAM the evaluation scores: the last convolutional block, as the paper
# (EfficientNet-B0: timm's ``blocks.6``, not the 1280-channel 1 x 1 head after it).
GRADCAM_LAYERS = {
  'resnet18': 'features',
  'resnet50': 'features',
  'tiny_resnet': 'features',
  'densenet121': 'features',
  'efficientnet_b0': 'stage7',
}
# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {
  'model.arch': tuple(ARCHITECTURES),
  'model.norm': ('batch', 'group'),
  'model.dtype': ('float32', 'bfloat16'),
  'model.downsample': ('stride', 'pool'),
  'model.input_channels': (1, 3),
}
# float32: None, i.e. computed in the inputs' dtype (float32; float64 in float64 tests).
_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def create_model(model: ml_collections.ConfigDict, conv: Any = nn.Conv) -> nn.Module:
  """``model.arch`` with ``num_classes``, ``norm``, ``dtype`` (of the computation; parameters
  stay float32) and, for ResNets, ``width`` and ``downsample``; its dense convolutions are
  ``conv`` modules. ``model`` is a validated ``config.model``."""
  kwargs = {
    'num_classes': model.num_classes,
    'norm': model.norm,
    'dtype': _DTYPES[model.get('dtype', 'float32')],
    'conv': conv,
  }
  if model.arch in RESNETS:
    if model.get('width'):
      kwargs['width'] = model.width
    kwargs['downsample'] = model.get('downsample', 'stride')
  return ARCHITECTURES[model.arch](**kwargs)


def gradcam_layer(arch: str) -> str:
  """The feature map the evaluation's Grad-CAM uses for ``arch``."""
  return GRADCAM_LAYERS[arch]
