"""The train state: stacked sub-models, their optimiser, batch statistics, the method's own
state and the step's random key."""

from __future__ import annotations

from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp

from mimic_jax.methods import base


class TrainState(train_state.TrainState):
  """Stacked sub-models (leading axis M) with Adam, their BatchNorm statistics (``{}`` without
  BatchNorm), the method's own state (``mimic``: the discriminator's ``TrainState``; else
  ``None``) and the step's random key (raw uint32 ``[2]``, checkpointable)."""

  batch_stats: Any
  rng: jax.Array
  method_state: Any = None


def create_state(method: base.Method, image_shape: tuple[int, ...], rng: jax.Array) -> TrainState:
  """M independently initialised sub-models, the method's state and the step key."""
  init_rng, method_rng, step_rng = jax.random.split(rng, 3)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = base.init_ensemble(method.model, init_rng, x, method.num_members)
  return TrainState.create(
    apply_fn=method.model.apply,
    params=variables['params'],
    tx=base.optimizer(method.config.learning_rate),
    batch_stats=variables.get('batch_stats', {}),
    method_state=method.init_method_state(method_rng, image_shape),
    rng=jax.random.key_data(step_rng),
  )
