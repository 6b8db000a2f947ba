"""``gaze`` (beyond the paper): the cross-entropy plus a penalty that trains each sub-model's
input-gradient explanation toward the radiologist's gaze (``jax.grad`` inside the loss, so its
gradient is double backprop).

Penalties (``config.gaze.penalty``):

- ``'kld'``: MIT KLD(gaze || |input gradient of the true-class logit|, summed over channels and
  average-pooled to the gaze grid).
- ``'rrr'``: right for the right reasons (Ross et al. 2017): the squared input gradient of the
  summed log-probabilities, weighted by ``1 - gaze / max(gaze)`` (where the radiologist did not
  look), summed over pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mimic_jax import explainers
from mimic_jax.evaluation import saliency_metrics
from mimic_jax.methods import base

# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {'gaze.penalty': ('kld', 'rrr')}


def gradient_kld(grads: jax.Array, gaze: jax.Array) -> jax.Array:
  """The ``kld`` penalty from input gradients ``(B, H, W, C)``: |gradient| summed over channels,
  average-pooled to the ``(B, S, S)`` gaze grid, mean over the batch of KLD(gaze || it)."""
  saliency = explainers.postprocess(
    grads, sign='abs', normalize='none', pool=grads.shape[1] // gaze.shape[1]
  )
  return jnp.mean(saliency_metrics.kld(saliency, gaze, xp=jnp))


def gaze_penalty(
  apply_fn: Callable,
  variables: base.Variables,
  x: jax.Array,
  y: jax.Array,
  gaze: jax.Array,
  *,
  penalty: str = 'kld',
) -> jax.Array:
  """The gaze penalty of one model (eval mode), differentiable in its parameters."""
  logit_fn = lambda z: apply_fn(variables, z, train=False)
  if penalty == 'kld':
    _, grads = explainers.input_gradients(logit_fn, x, y)
    return gradient_kld(grads, gaze)
  grads = jax.grad(lambda z: jax.nn.log_softmax(logit_fn(z)).sum())(x).sum(axis=-1)
  upsampled = jax.image.resize(gaze, (gaze.shape[0], *x.shape[1:3]), 'linear')
  outside = 1.0 - upsampled / jnp.maximum(
    upsampled.max(axis=(1, 2), keepdims=True), saliency_metrics.EPS
  )
  return jnp.mean(jnp.sum((outside * grads) ** 2, axis=(1, 2)))


class Gaze(base.Method):
  """``sum_m CE_m + gaze.weight * sum_m penalty_m`` (``gaze.num_models`` sub-models)."""

  metric_names = base.Method.metric_names + ('penalty',)

  @property
  def num_members(self) -> int:
    return self.config.gaze.num_models

  def shares_forward(self, batch_stats: Any) -> bool:
    """Whether the penalty's input gradient reuses the cross-entropy's forward pass."""
    return not batch_stats and self.config.gaze.penalty == 'kld'

  def member_loss(
    self, params: Any, batch_stats: Any, method_state: Any, batch: dict, rng: jax.Array, phase: str
  ) -> tuple[jax.Array, tuple[base.Aux, Any]]:
    del method_state, rng, phase
    x, y, gaze = batch['image'], batch['label'], batch['gaze']
    if self.shares_forward(batch_stats):
      logits, grads = self.train_forward_and_input_gradients(params, x, y)
      new_bs = {}
      penalties = base.map_members(lambda g: gradient_kld(g, gaze), grads, execution=self.execution)
    else:
      logits, new_bs = self.train_forward(params, batch_stats, x)
      penalties = base.map_members(
        lambda v: gaze_penalty(self.model.apply, v, x, y, gaze, penalty=self.config.gaze.penalty),
        base.eval_variables(params, batch_stats),
        execution=self.execution,
      )
    ce = base.ensemble_ce(logits, y)
    penalty = penalties.sum()
    loss = ce + self.config.gaze.weight * penalty
    return loss, (self.scalars(loss, ce, logits, y, penalty=penalty), new_bs)
