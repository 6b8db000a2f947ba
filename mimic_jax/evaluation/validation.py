"""Validation during training: the ensemble prediction's accuracy and cross-entropy, and how
close the evaluation explainer's maps (Grad-CAM at the architecture's layer, the sub-models'
mean) are to the gaze: MIT KLD against the heatmap and NSS against the fixations, means over
the split. Every process reads its share; the sums are global."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimic_jax.data import pipeline
from mimic_jax.evaluation import maps as maps_lib
from mimic_jax.evaluation import saliency_metrics
from mimic_jax.methods import base
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.training import state as state_lib

# Validation metrics a run can select its best checkpoint by, and which way is better.
BEST_MODES = {'accuracy': 'max', 'ce': 'min', 'kld': 'min', 'nss': 'max'}


def batch_nss(saliency: jax.Array, fixation_map: jax.Array) -> jax.Array:
  """``(B,)`` MIT NSS of ``(B, S, S)`` maps (z-scored with the N - 1 standard deviation, mean
  at the fixated pixels); NaN for a constant map or no fixation, as ``saliency_metrics.nss``."""
  n = saliency.shape[1] * saliency.shape[2]
  mean = saliency.mean(axis=(1, 2), keepdims=True)
  std = jnp.sqrt(((saliency - mean) ** 2).sum(axis=(1, 2), keepdims=True) / (n - 1))
  fixated = (fixation_map != 0).astype(saliency.dtype)
  return (((saliency - mean) / std) * fixated).sum(axis=(1, 2)) / fixated.sum(axis=(1, 2))


def batch_sums(
  state: state_lib.TrainState,
  batch: dict,
  *,
  layer: str,
  gradcam_target: str = 'logit',
  execution: str = 'unrolled',
) -> jax.Array:
  """Sums over a batch's real examples (``mask`` True): ``[correct predictions, negative
  log-likelihood, examples, KLD, images with an NSS, NSS]`` (KLD and NSS of the sub-models'
  mean Grad-CAM against the gaze)."""
  x, y = batch['image'], batch['label']
  logp = base.ensemble_log_probs(
    state.apply_fn, base.eval_variables(state.params, state.batch_stats), x, execution=execution
  )
  mask = batch['mask'].astype(jnp.float32)
  nll = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
  cams = maps_lib.member_maps(
    state,
    x,
    y,
    None,
    explainer='grad_cam',
    size=batch['gaze'].shape[-1],
    layer=layer,
    gradcam_target=gradcam_target,
    execution=execution,
  ).mean(axis=0)
  kld = saliency_metrics.kld(cams, batch['gaze'], xp=jnp)
  nss = batch_nss(cams, batch['fixation_map'])
  has_nss = mask * jnp.isfinite(nss)
  return jnp.stack(
    [
      jnp.sum((jnp.argmax(logp, -1) == y) * mask),
      jnp.sum(nll * mask),
      jnp.sum(mask),
      jnp.sum(kld * mask),
      jnp.sum(has_nss),
      jnp.sum(jnp.where(has_nss > 0, nss, 0.0)),
    ]
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
  """``{'accuracy', 'ce', 'kld', 'nss'}`` over the split ``source``; ``sums_fn``:
  :func:`batch_sums`, jit-compiled. KLD and NSS of Grad-CAM against the gaze (NSS over the
  images where it is defined)."""
  total = np.zeros(6)
  keys = ('image', 'label', 'mask', 'gaze', 'fixation_map')
  for batch in pipeline.eval_batches(
    source, global_batch=batch_size, input_channels=input_channels
  ):
    arrays = mesh_lib.to_global({k: batch[k] for k in keys}, sharding)
    total += np.asarray(jax.device_get(sums_fn(state, arrays)), np.float64)
  correct, nll, count, kld, with_nss, nss = total
  return {
    'accuracy': correct / count,
    'ce': nll / count,
    'kld': kld / count,
    'nss': nss / with_nss if with_nss else float('nan'),
  }


def display_maps(
  method: base.Method, state: state_lib.TrainState, batch: dict, rng: jax.Array, *, layer: str
) -> dict[str, jax.Array]:
  """For TensorBoard: per sub-model, the method's own explanation of the true classes
  (``method.display_explanations``) and Grad-CAM at ``layer``, each ``(M, B, h, w)``."""
  x, y = batch['image'], batch['label']
  variables = base.eval_variables(state.params, state.batch_stats)
  return {
    'training explanation': method.display_explanations(
      state.params, state.batch_stats, state.method_state, x, y, rng
    ),
    'Grad-CAM': base.member_grad_cams(
      state.apply_fn, variables, x, y, layer=layer, execution=method.execution
    ),
  }
