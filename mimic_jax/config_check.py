"""Validates a config before any work, naming the offending key."""

from __future__ import annotations

import os

import jax
import ml_collections

from mimic_jax import compile_options
from mimic_jax import explain
from mimic_jax import host_malloc
from mimic_jax import models
from mimic_jax import pretrained

CHOICES = {
    'method': ('single', 'ensemble', 'mimic', 'gaze'),
    'host_malloc': host_malloc.SETTINGS,
    'model.norm': ('batch', 'group'),
    'model.input_channels': (1, 3),
    'mimic.objective': ('neg_ce', 'confusion'),
    'mimic.alternation': ('epoch', 'step'),
    'mimic.explanation_gradient': ('through', 'stop'),
    'mimic.explainer': tuple(explain.ATTRIBUTION_EXPLAINERS),
    'mimic.post.sign': ('abs', 'relu', 'none'),
    'mimic.post.normalize': ('minmax', 'sum', 'none'),
    'mimic.post.channels': ('sum', 'mean', 'max'),
    'gaze.penalty': ('kld', 'rrr'),
    'ensemble.execution': ('vmap', 'unrolled', 'auto'),
    'model.depthwise': ('auto', 'conv', 'shifts'),
    'model.conv_grads': ('auto', 'lax', 'cpu'),
    'model.cpu_conv_library': compile_options.LIBRARIES,
    'data.builder_config': ('224', '128', '64'),
}


def _get(config, dotted):
  for k in dotted.split('.'):
    config = config[k]
  return config


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ``ValueError`` naming the first bad key, with the allowed values."""
  for key, allowed in CHOICES.items():
    value = _get(config, key)
    if value not in allowed:
      raise ValueError(f'config.{key}={value!r} is invalid; choose one of {list(allowed)}')
  if config.model.arch not in models.ARCHITECTURES:
    raise ValueError(f'config.model.arch={config.model.arch!r} is invalid; choose one of '
                     f'{sorted(models.ARCHITECTURES)}')
  if config.model.norm == 'group' and 'resnet' not in config.model.arch:
    raise ValueError(f'config.model.norm="group" needs a ResNet; config.model.arch is '
                     f'{config.model.arch!r}')
  if config.method in ('ensemble', 'mimic') and config.ensemble.num_models < 2:
    raise ValueError(f'config.ensemble.num_models={config.ensemble.num_models} must be >= 2 '
                     f'for method {config.method!r}')
  if config.gaze.num_models < 1:
    raise ValueError(f'config.gaze.num_models={config.gaze.num_models} must be >= 1')
  if config.model.downsample not in ('stride', 'pool'):
    raise ValueError(f'config.model.downsample={config.model.downsample!r} is invalid; choose '
                     'stride or pool')
  if config.model.get('pretrained') and config.model.downsample != 'stride':
    raise ValueError('config.model.pretrained needs config.model.downsample="stride" (the '
                     'torchvision ResNet)')
  if config.model.dtype not in models.DTYPES:
    raise ValueError(f'config.model.dtype={config.model.dtype!r} is invalid; choose one of '
                     f'{sorted(models.DTYPES)}')
  if config.model.get('pretrained'):
    if config.model.arch not in pretrained.ARCHES:
      raise ValueError(f'config.model.pretrained needs config.model.arch in {pretrained.ARCHES}, '
                       f'not {config.model.arch!r}')
    if config.model.norm != 'batch':
      raise ValueError('config.model.pretrained needs config.model.norm="batch" (the '
                       'checkpoints have BatchNorm)')
    if not os.path.exists(config.model.pretrained):
      raise ValueError(f'config.model.pretrained={config.model.pretrained!r} does not exist')
    if config.model.member_init not in ('same', 'perturb'):
      raise ValueError(f'config.model.member_init={config.model.member_init!r}; use same or '
                       'perturb')
  n = jax.device_count() if num_devices is None else num_devices
  if config.batch_size <= 0 or config.batch_size % n:
    raise ValueError(f'config.batch_size={config.batch_size} must be a positive multiple of '
                     f'the device count {n}')
  chunks = config.get('batch_chunks', 0)
  if chunks < 0 or (chunks and config.batch_size % chunks):
    raise ValueError(f'config.batch_chunks={chunks} must be 0 (auto) or a positive divisor of '
                     f'config.batch_size={config.batch_size}')
  if chunks > 1 and config.model.norm == 'batch':
    raise ValueError(f'config.batch_chunks={chunks} needs config.model.norm="group": chunks '
                     'would change BatchNorm statistics')
  for key in ('learning_rate', 'mimic.disc_learning_rate'):
    if not _get(config, key) > 0:
      raise ValueError(f'config.{key}={_get(config, key)} must be > 0')
  if config.mimic.period < 2:
    raise ValueError(f'config.mimic.period={config.mimic.period} must be >= 2')
  if config.mimic.post.pool < 1:
    raise ValueError(f'config.mimic.post.pool={config.mimic.post.pool} must be >= 1')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('config.num_epochs or config.num_train_steps must be > 0')
  for key in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    if _get(config, key) < 1:
      raise ValueError(f'config.{key}={_get(config, key)} must be >= 1')
