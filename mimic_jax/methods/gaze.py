"""``gaze`` (beyond the paper): the cross-entropy plus a penalty that trains each sub-model's
explanation toward the radiologist's gaze (``jax.grad`` inside the loss, so its gradient is
double backprop).

The explanation (``config.gaze.explanation``): ``'input_gradients'``, |d logit_y / dx| summed
over channels and average-pooled to the gaze grid; ``'gradient_shap'``, |GradientSHAP| of the
true logit (``gaze.samples`` points per example on the path from a zero baseline) likewise,
which, unlike a gradient at one point, a model cannot shrink where it uses the pixels without
also shrinking their effect on the logit; or ``'grad_cam'``, the true class's Grad-CAM at the
evaluation layer, with the gaze average-pooled to its grid. ``gaze.pool`` pools both
further. Penalties (``config.gaze.penalty``), each a mean over the batch:

- ``'kld'``: MIT KLD(gaze || saliency), the saliency sum-normalised and mixed with a uniform map
  of weight ``gaze.floor`` (0: the metric itself, unbounded where the saliency vanishes under
  the gaze).
- ``'energy'``: the share of the saliency's mass outside the gazed region (the smallest set of
  pixels holding ``gaze.region_mass`` of the gaze), in [0, 1] and free of the map's scale (the
  energy loss of Rao et al. 2023, for a region from gaze).
- ``'rrr'``: right for the right reasons as Ross et al. (2017) define it: the squared input
  gradient of the summed log-probabilities outside the gazed region (a binary mask, upsampled
  to the image), summed over pixels; ``explanation`` and ``pool`` do not apply.

``gaze.grad_cam_weight`` > 0 adds that many times the same penalty of the sub-models' Grad-CAM
(with ``kld`` or ``energy``): the explanation of the evaluation, aligned beside the input
attribution. ``gaze.warmup_epochs``: cross-entropy only for this many epochs first (phase
``cross_entropy``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mimic_jax import explainers
from mimic_jax import models
from mimic_jax.evaluation import saliency_metrics
from mimic_jax.methods import base

# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {
  'gaze.penalty': ('kld', 'energy', 'rrr'),
  'gaze.explanation': ('input_gradients', 'gradient_shap', 'grad_cam'),
}


def average_pool(maps: jax.Array, factor: int) -> jax.Array:
  """``(B, H, W)`` -> ``(B, H / factor, W / factor)`` means of ``factor x factor`` blocks."""
  if factor == 1:
    return maps
  b, h, w = maps.shape
  return maps.reshape(b, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def gazed_region(gaze: jax.Array, mass: float) -> jax.Array:
  """``(B, S, S)`` bool: per example, the smallest set of pixels (the highest first) holding
  at least ``mass`` of its gaze. All pixels for an all-zero gaze map."""
  b = gaze.shape[0]
  flat = gaze.reshape(b, -1)
  ordered = -jnp.sort(-flat, axis=1)  # descending
  cumulative = jnp.cumsum(ordered, axis=1) / jnp.maximum(flat.sum(1, keepdims=True), 1e-30)
  k = jax.vmap(jnp.searchsorted)(cumulative, jnp.full((b,), mass))
  threshold = jnp.take_along_axis(ordered, jnp.minimum(k, flat.shape[1] - 1)[:, None], 1)
  return gaze >= threshold[:, :, None]


def kld_penalty(saliency: jax.Array, gaze: jax.Array, floor: float = 0.0) -> jax.Array:
  """Mean MIT KLD(gaze || (1 - floor) saliency / sum + floor / N) of ``(B, S, S)`` maps."""
  total = saliency.sum(axis=(1, 2), keepdims=True)
  normalised = saliency / jnp.where(total > 0, total, 1.0)
  mixed = (1.0 - floor) * normalised + floor / (saliency.shape[1] * saliency.shape[2])
  return jnp.mean(saliency_metrics.kld(mixed, gaze, xp=jnp))


def energy_penalty(saliency: jax.Array, region: jax.Array) -> jax.Array:
  """Mean share of the non-negative ``(B, S, S)`` saliency's mass outside ``region``."""
  total = saliency.sum(axis=(1, 2))
  outside = jnp.sum(jnp.where(region, 0.0, saliency), axis=(1, 2))
  return jnp.mean(outside / jnp.maximum(total, 1e-30))


def rrr_penalty(log_prob_grads: jax.Array, outside: jax.Array) -> jax.Array:
  """Ross et al.'s term: ``mean_b sum (outside * d sum_k log p_k / dx)^2`` over pixels and
  channels; ``log_prob_grads`` ``(B, H, W, C)``, ``outside`` ``(B, H, W)`` 0/1."""
  return jnp.mean(jnp.sum((outside[..., None] * log_prob_grads) ** 2, axis=(1, 2, 3)))


def _true_logit(y: jax.Array):
  return lambda logits: jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)


def _summed_log_probs(logits: jax.Array) -> jax.Array:
  """The cotangent that makes a VJP the gradient of ``sum_k log_softmax(logits)_k``."""
  return 1.0 - logits.shape[-1] * jax.nn.softmax(logits)


class Gaze(base.Method):
  """``sum_m CE_m + gaze.weight * sum_m penalty_m`` (``gaze.num_models`` sub-models)."""

  phases = ('train', 'cross_entropy')
  metric_names = base.Method.metric_names + ('penalty',)

  def __init__(self, config: ml_collections.ConfigDict, model: Any, execution: str = 'unrolled'):
    super().__init__(config, model, execution)
    self.layer = models.gradcam_layer(config.model.arch)

  @property
  def num_members(self) -> int:
    return self.config.gaze.num_models

  def phase(self, step: int, steps_per_epoch: int) -> str:
    warm = step < self.config.gaze.get('warmup_epochs', 0) * steps_per_epoch
    return 'cross_entropy' if warm else 'train'

  def shares_forward(self, batch_stats: Any) -> bool:
    """Whether the penalty's input gradient reuses the cross-entropy's forward pass."""
    gc = self.config.gaze
    return not batch_stats and (gc.penalty == 'rrr' or gc.explanation == 'input_gradients')

  def display_explanations(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
  ) -> jax.Array:
    """The explanation the penalty compares with the gaze (attributions as magnitudes summed
    over channels; for ``rrr``: |d sum_k log p_k / dx|)."""
    del method_state
    return self._explanations(base.eval_variables(params, batch_stats), x, y, rng, absolute=True)

  def _explanations(
    self, variables: base.Variables, x: jax.Array, y: jax.Array, rng: jax.Array, absolute: bool
  ) -> jax.Array:
    """``(M, ...)`` each sub-model's explanation in eval mode: Grad-CAM ``(M, B, h, w)`` or an
    attribution ``(M, B, H, W, C)`` (``absolute``: its magnitude summed over channels)."""
    gc = self.config.gaze
    if gc.penalty != 'rrr' and gc.explanation == 'grad_cam':
      return base.member_grad_cams(
        self.model.apply, variables, x, y, layer=self.layer, execution=self.execution
      )
    cotangent = _summed_log_probs if gc.penalty == 'rrr' else _true_logit(y)

    def one(v: base.Variables) -> jax.Array:
      logit_fn = lambda z: self.model.apply(v, z, train=False)
      if gc.penalty != 'rrr' and gc.explanation == 'gradient_shap':
        attribution = explainers.gradient_shap(logit_fn, x, y, rng, samples=gc.samples)[1]
      else:
        out, vjp = jax.vjp(logit_fn, x)
        attribution = vjp(cotangent(out))[0]
      return jnp.abs(attribution).sum(axis=-1) if absolute else attribution

    return base.map_members(one, variables, execution=self.execution)

  def _penalty(self, explanation: jax.Array, gaze: jax.Array) -> jax.Array:
    """One sub-model's penalty from its explanation: an attribution ``(B, H, W, C)`` of the
    true logit (or, for ``rrr``, the input gradient of the summed log-probabilities) or a
    Grad-CAM ``(B, h, w)``."""
    gc = self.config.gaze
    if gc.penalty == 'rrr':
      factor = explanation.shape[1] // gaze.shape[1]
      outside = ~gazed_region(gaze, gc.region_mass)
      outside = jnp.repeat(jnp.repeat(outside, factor, axis=1), factor, axis=2)
      return rrr_penalty(explanation, outside.astype(explanation.dtype))
    if explanation.ndim == 4:  # input gradients, on the gaze grid
      saliency = explainers.postprocess(
        explanation, sign='abs', normalize='none', pool=explanation.shape[1] // gaze.shape[1]
      )
    else:  # Grad-CAM, with the gaze on its grid
      saliency = explanation
      gaze = average_pool(gaze, gaze.shape[1] // explanation.shape[1])
    saliency, gaze = average_pool(saliency, gc.pool), average_pool(gaze, gc.pool)
    if gc.penalty == 'kld':
      return kld_penalty(saliency, gaze, gc.floor)
    return energy_penalty(saliency, gazed_region(gaze, gc.region_mass))

  def _penalties(self, explanations: jax.Array, gaze: jax.Array) -> jax.Array:
    """``(M,)`` each sub-model's penalty."""
    return base.map_members(
      lambda e: self._penalty(e, gaze), explanations, execution=self.execution
    )

  def loss_weights(self) -> dict[str, float]:
    gc = self.config.gaze
    return {'weight': gc.weight, 'grad_cam_weight': gc.grad_cam_weight}

  def member_loss(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    batch: dict,
    rng: jax.Array,
    phase: str,
    weights: dict[str, jax.Array] | None = None,
    member: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[base.Aux, jax.Array, Any]]:
    del member  # every sub-model's penalty is its own, with the same key
    if phase == 'cross_entropy':
      return super().member_loss(params, batch_stats, method_state, batch, rng, phase)
    gc = self.config.gaze
    x, y, gaze = batch['image'], batch['label'], batch['gaze']
    cotangent = _summed_log_probs if gc.penalty == 'rrr' else _true_logit(y)
    if self.shares_forward(batch_stats):
      logits, explanations = self.train_forward_and_input_gradients(params, x, cotangent)
      new_bs = {}
    else:
      logits, new_bs = self.train_forward(params, batch_stats, x)
      variables = base.eval_variables(params, batch_stats)
      explanations = self._explanations(variables, x, y, rng, absolute=False)
    weights = weights or self.loss_weights()
    penalty = self._penalties(explanations, gaze).sum()
    if gc.grad_cam_weight and gc.explanation != 'grad_cam' and gc.penalty != 'rrr':
      cams = base.member_grad_cams(
        self.model.apply,
        base.eval_variables(params, batch_stats),
        x,
        y,
        layer=self.layer,
        execution=self.execution,
      )
      penalty = penalty + weights['grad_cam_weight'] * self._penalties(cams, gaze).sum()
    ce = base.ensemble_ce(logits, y)
    loss = ce + weights['weight'] * penalty
    return loss, (self.scalars(loss, ce, penalty=penalty), logits, new_bs)
