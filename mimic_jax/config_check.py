"""Validates a config once, before any work, naming the offending key with its full path.

Every module that reads a config value with a fixed set of choices exports them (a
``CHOICES`` dict of dotted keys); this module gathers them and adds the rules that involve
several keys. Nothing downstream checks config values again.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from data_builders.mimic_cxr_egd import mimic_cxr_egd_dataset_builder as egd_builder
from data_builders.synthetic_egd import readers
from mimic_jax import methods
from mimic_jax import models
from mimic_jax import tuning
from mimic_jax.data import staging
from mimic_jax.evaluation import report
from mimic_jax.evaluation import validation
from mimic_jax.models import pretrained
from mimic_jax.training import checkpoints

CHOICES = {
  **methods.CHOICES,
  **models.CHOICES,
  **tuning.CHOICES,
  **report.CHOICES,
  'best_metric': tuple(validation.BEST_MODES),
  'model.member_init': pretrained.MEMBER_INITS,
  'data.builder_config': tuple(c.name for c in egd_builder.MimicCxrEgd.BUILDER_CONFIGS),
  'data.dataset': staging.DATASETS,
}
_POSITIVE = ('learning_rate', 'mimic.disc_learning_rate')
_AT_LEAST_ONE = (
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'eval_every_epochs',
  'gaze.num_models',
  'mimic.post.pool',
  'mimic.disc_hidden',
  'mimic.disc_steps',
)


def get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """``config``'s value at the dotted path ``dotted`` (e.g. ``'mimic.post.pool'``); a
  ``ValueError`` naming the whole path if it does not exist."""
  node = config
  for k in dotted.split('.'):
    try:
      node = node[k]
    except (KeyError, AttributeError, TypeError):
      raise ValueError(f'config.{dotted} does not exist (no key {k!r} there)') from None
  return node


def set_value(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets ``config``'s value at the dotted path ``dotted`` (which must exist)."""
  *path, leaf = dotted.split('.')
  parent = get(config, '.'.join(path)) if path else config
  if leaf not in parent:
    raise ValueError(f'config.{dotted} does not exist (no key {leaf!r} there)')
  parent[leaf] = value


def _fail(message: str) -> None:
  raise ValueError(message)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ``ValueError`` naming the first bad key (``config.a.b=value``) and what is allowed.

  ``num_devices``: the devices the global batch is split over (default: all of JAX's).
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  for key, allowed in CHOICES.items():
    value = get(config, key)
    if value not in allowed:
      _fail(f'config.{key}={value!r} is invalid; choose one of {list(allowed)}')
  for key in _POSITIVE:
    if not get(config, key) > 0:
      _fail(f'config.{key}={get(config, key)} must be > 0')
  for key in _AT_LEAST_ONE:
    if get(config, key) < 1:
      _fail(f'config.{key}={get(config, key)} must be >= 1')
  model = config.model
  if model.norm == 'group' and model.arch not in models.RESNETS:
    _fail(f'config.model.norm="group" needs a ResNet; config.model.arch is {model.arch!r}')
  if config.method in ('ensemble', 'mimic') and config.ensemble.num_models < 2:
    _fail(
      f'config.ensemble.num_models={config.ensemble.num_models} must be >= 2 for method '
      f'{config.method!r}'
    )
  if not checkpoints.valid_selection(config.select_checkpoint):
    _fail(
      f'config.select_checkpoint={config.select_checkpoint!r} is invalid; choose latest, best '
      'or a step number'
    )
  syn = config.data.get('synthetic')
  if syn:
    if syn.get('reader', 'realistic') not in readers.READER_KINDS:
      _fail(
        f'config.data.synthetic.reader={syn.reader!r} is invalid; choose one of '
        f'{list(readers.READER_KINDS)}'
      )
    if not 0.0 <= syn.get('multi_reader_share', 0.0) <= 1.0:
      _fail(f'config.data.synthetic.multi_reader_share={syn.multi_reader_share} must be in [0, 1]')
    if syn.get('readers', 1) < 1:
      _fail(f'config.data.synthetic.readers={syn.readers} must be >= 1')
  gc = config.gaze
  if not 0.0 <= gc.floor < 1.0:
    _fail(f'config.gaze.floor={gc.floor} must be in [0, 1)')
  if not 0.0 < gc.region_mass <= 1.0:
    _fail(f'config.gaze.region_mass={gc.region_mass} must be in (0, 1]')
  if gc.pool < 1 or gc.warmup_epochs < 0:
    _fail(
      f'config.gaze.pool={gc.pool} must be >= 1 and config.gaze.warmup_epochs='
      f'{gc.warmup_epochs} >= 0'
    )
  if config.mimic.period < 2:
    _fail(f'config.mimic.period={config.mimic.period} must be >= 2')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    _fail('config.num_epochs or config.num_train_steps must be > 0')
  if config.batch_size <= 0 or config.batch_size % num_devices:
    _fail(
      f'config.batch_size={config.batch_size} must be a positive multiple of the device '
      f'count {num_devices}'
    )
  if model.get('pretrained'):
    if model.arch not in pretrained.ARCHES:
      _fail(
        f'config.model.pretrained needs config.model.arch in {list(pretrained.ARCHES)}, '
        f'not {model.arch!r}'
      )
    if model.norm != 'batch':
      _fail(
        'config.model.pretrained needs config.model.norm="batch" (the checkpoints have BatchNorm)'
      )
    if model.downsample != 'stride':
      _fail(
        'config.model.pretrained needs config.model.downsample="stride" (the torchvision ResNet)'
      )
    if not os.path.exists(model.pretrained):
      _fail(f'config.model.pretrained={model.pretrained!r} does not exist')
