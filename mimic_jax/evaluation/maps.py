"""The explanation maps the evaluation scores against gaze, per sub-model, on the gaze grid."""

from __future__ import annotations

import jax

from mimic_jax.methods import base
from mimic_jax.training import state as state_lib


def member_maps(
  state: state_lib.TrainState,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array,
  *,
  explainer: str,
  size: int,
  layer: str,
  gradcam_target: str,
  execution: str,
) -> jax.Array:
  """``(M, B, size, size)`` non-negative maps of every sub-model for the classes ``y``,
  resized to the gaze grid: ``explainer`` ``'grad_cam'`` at ``layer`` (score:
  ``gradcam_target``), or the absolute value of an attribution explainer summed over channels
  (GradientSHAP with 8 samples). The ensemble's map is their mean."""
  variables = base.eval_variables(state.params, state.batch_stats)
  if explainer == 'grad_cam':
    target = 'log_softmax' if gradcam_target == 'ensemble_log_softmax' else 'logit'
    maps = base.member_grad_cams(
      state.apply_fn, variables, x, y, layer=layer, target=target, execution=execution
    )
  else:
    kwargs = {'samples': 8} if explainer == 'gradient_shap' else {}
    maps = base.member_explanations(
      state.apply_fn,
      variables,
      x,
      y,
      rng,
      explainer=explainer,
      explainer_kwargs=kwargs,
      post={'sign': 'abs', 'channels': 'sum', 'normalize': 'none'},
      execution=execution,
    )
  if maps.shape[-1] != size:
    m, b = maps.shape[:2]
    maps = jax.image.resize(maps, (m, b, size, size), 'linear')
  return maps
