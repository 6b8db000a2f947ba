"""The jit-compiled training step: one update of a method's phase.

``train_step(method, phase, state, batch, weights)`` is a pure function written for one device with
global-batch semantics; ``mimic_jax.training.loop`` jits one program per phase over a device
mesh. It knows nothing about any particular method: the method updates its own state (for
``mimic``, the discriminator) and gives the sub-models' loss, whose gradient updates them.
"""

from __future__ import annotations

import functools
from typing import Any

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp

from mimic_jax.methods import base
from mimic_jax.training import state as state_lib


@functools.cache
def metrics_class(names: tuple[str, ...]) -> type[clu_metrics.Collection]:
  """A ``clu`` collection averaging the scalars ``names`` over steps."""
  return clu_metrics.Collection.create(
    **{name: clu_metrics.Average.from_output(name) for name in names}
  )


def train_step(
  method: base.Method,
  phase: str,
  state: state_lib.TrainState,
  batch: dict,
  weights: dict[str, jax.Array] | None = None,
) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
  """The method's state update, then one Adam step of the sub-models on its loss.

  ``batch``: ``image`` ``(B, H, W, C)``, ``label`` ``(B,)``, ``gaze`` ``(B, S, S)``.
  ``weights``: :func:`loss_weights` (``None``: compiled in as constants). The step
  key splits into the next state's key and this step's; the method's state update draws from
  the step's key folded with 1. Returns the new state and the step's metrics
  (``method.metric_names``).
  """
  key = jax.random.wrap_key_data(state.rng)
  next_key, step_key = jax.random.split(key)
  method_state, method_scalars = method.update_method_state(
    state.params, state.batch_stats, state.method_state, batch, jax.random.fold_in(key, 1), phase
  )

  def loss_fn(params: Any):
    return method.member_loss(
      params, state.batch_stats, method_state, batch, step_key, phase, weights
    )

  (_, (scalars, new_batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(
    grads=grads,
    batch_stats=new_batch_stats,
    method_state=method_state,
    rng=jax.random.key_data(next_key),
  )
  metrics = metrics_class(method.metric_names).single_from_model_output(
    **{**scalars, **method_scalars}
  )
  return new_state, metrics


def loss_weights(method: base.Method) -> dict[str, jax.Array]:
  """The method's loss weights as float32 arrays, the step's ``weights`` argument."""
  return {k: jnp.float32(v) for k, v in method.loss_weights().items()}
