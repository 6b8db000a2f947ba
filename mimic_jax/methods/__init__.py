"""Training methods, one module each, behind the interface of ``base.Method``.

- ``single`` (``single.py``): one model, cross-entropy.
- ``ensemble`` (``ensemble.py``): M sub-models, the sum of their cross-entropies.
- ``mimic`` (``mimic.py``): the paper's explanation ensemble, with a discriminator.
- ``gaze`` (``gaze.py``): cross-entropy plus a gaze penalty on the input-gradient explanation.

A new method is a subclass of ``base.Method`` in its own module, added to ``METHODS``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import ml_collections

from mimic_jax import models
from mimic_jax.methods import base
from mimic_jax.methods import ensemble
from mimic_jax.methods import gaze
from mimic_jax.methods import mimic
from mimic_jax.methods import single

METHODS: dict[str, type[base.Method]] = {
  'single': single.Single,
  'ensemble': ensemble.Ensemble,
  'mimic': mimic.Mimic,
  'gaze': gaze.Gaze,
}
# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {'method': tuple(METHODS), **mimic.CHOICES, **gaze.CHOICES}


def create(
  config: ml_collections.ConfigDict, model: nn.Module, execution: str = 'unrolled'
) -> base.Method:
  """The method ``config.method`` training ``model`` sub-models, run as ``execution``."""
  return METHODS[config.method](config, model, execution)


def build(
  config: ml_collections.ConfigDict, conv: Any = nn.Conv, execution: str = 'unrolled'
) -> base.Method:
  """The method of ``config`` with its model (dense convolutions ``conv``)."""
  return create(config, models.create_model(config.model, conv=conv), execution)
