"""The explanation maps the evaluation scores against gaze, per sub-model, on the gaze grid."""

from __future__ import annotations

from collections.abc import Callable

import jax

from mimic_jax.evaluation import report
from mimic_jax.methods import base
from mimic_jax.training import state as state_lib


def _grad_cam(apply_fn, variables, x, y, rng, *, layer, gradcam_target, execution):  # noqa: ANN001
  del rng
  target = 'log_softmax' if gradcam_target == 'ensemble_log_softmax' else 'logit'
  return base.member_grad_cams(
    apply_fn, variables, x, y, layer=layer, target=target, execution=execution
  )


def _absolute_attribution(explainer: str, explainer_kwargs: dict) -> Callable:
  """The |attribution| of ``explainer``, summed over channels, per sub-model."""

  def maps(apply_fn, variables, x, y, rng, *, layer, gradcam_target, execution):  # noqa: ANN001
    del layer, gradcam_target
    return base.member_explanations(
      apply_fn,
      variables,
      x,
      y,
      rng,
      explainer=explainer,
      explainer_kwargs=explainer_kwargs,
      post={'sign': 'abs', 'channels': 'sum', 'normalize': 'none'},
      execution=execution,
    )

  return maps


# How each of ``report.EXPLAINERS`` computes its ``(M, B, h, w)`` maps: a new explainer is an
# entry here and one in ``report.EXPLAINERS`` (its name and sign mode).
COMPUTE = {
  'grad_cam': _grad_cam,
  'input_gradients': _absolute_attribution('input_gradients', {}),
  'gradient_shap': _absolute_attribution('gradient_shap', {'samples': 8}),
}
assert set(COMPUTE) == set(report.EXPLAINERS), 'report.EXPLAINERS and maps.COMPUTE differ'


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
  resized to the gaze grid: ``explainer`` of :data:`COMPUTE` (``'grad_cam'`` at ``layer``,
  score ``gradcam_target``; or the absolute value of an attribution explainer summed over
  channels, GradientSHAP with 8 samples). The ensemble's map is their mean."""
  variables = base.eval_variables(state.params, state.batch_stats)
  maps = COMPUTE[explainer](
    state.apply_fn,
    variables,
    x,
    y,
    rng,
    layer=layer,
    gradcam_target=gradcam_target,
    execution=execution,
  )
  if maps.shape[-1] != size:
    m, b = maps.shape[:2]
    maps = jax.image.resize(maps, (m, b, size, size), 'linear')
  return maps
