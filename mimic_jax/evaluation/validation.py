"""Validation during training: accuracy and cross-entropy of the ensemble prediction over a
whole split, every process reading its share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimic_jax.data import pipeline
from mimic_jax.methods import base
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.training import state as state_lib


def batch_sums(state: state_lib.TrainState, batch: dict, execution: str = 'unrolled') -> jax.Array:
  """``[correct predictions, summed negative log-likelihood, examples]`` of a batch (padding,
  ``mask`` False, excluded)."""
  logp = base.ensemble_log_probs(
    state.apply_fn,
    base.eval_variables(state.params, state.batch_stats),
    batch['image'],
    execution=execution,
  )
  mask = batch['mask'].astype(jnp.float32)
  nll = -jnp.take_along_axis(logp, batch['label'][:, None], axis=-1)[:, 0]
  return jnp.stack(
    [jnp.sum((jnp.argmax(logp, -1) == batch['label']) * mask), jnp.sum(nll * mask), jnp.sum(mask)]
  )


def validate(
  state: state_lib.TrainState,
  source: Sequence[dict],
  sums_fn: Callable,
  *,
  batch_size: int,
  input_channels: int,
  sharding: jax.sharding.NamedSharding,
) -> dict[str, float]:
  """``{'accuracy', 'ce'}`` of the ensemble prediction over the split ``source``;
  ``sums_fn``: :func:`batch_sums`, jit-compiled. The sums are global over processes."""
  total = np.zeros(3)
  for batch in pipeline.eval_batches(
    source, global_batch=batch_size, input_channels=input_channels
  ):
    arrays = mesh_lib.to_global({k: batch[k] for k in ('image', 'label', 'mask')}, sharding)
    total += np.asarray(jax.device_get(sums_fn(state, arrays)), np.float64)
  correct, nll, count = total
  return {'accuracy': correct / count, 'ce': nll / count}
