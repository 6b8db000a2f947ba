"""Grad-CAM (Selvaraju et al. 2017) of a Flax model at a named feature map."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def grad_cam(
  apply_fn: Callable,
  variables: dict,
  x: jax.Array,
  y: jax.Array,
  *,
  layer: str,
  target: str = 'logit',
) -> tuple[jax.Array, jax.Array]:
  """Grad-CAM (Selvaraju et al. 2017) at the feature map named ``layer``.

  The model must expose that map with ``self.perturb(layer, a)`` and
  ``self.sow('intermediates', layer, a)`` (all ``mimic_jax.models`` do, per stage), and
  ``apply_fn(variables, x, train=False, mutable=[...])`` must run it in eval mode.

  ``target``: the score whose gradient weighs the channels: ``'logit'``, the class logit (as
  Selvaraju et al.), or ``'log_softmax'``, its log-probability.

  Returns ``(logits, cam)`` with ``cam`` float ``(B, h, w)`` at the layer's resolution:
  ``ReLU(sum_c w_c A_c)`` with ``w_c`` the spatial mean of ``d score_y / dA_c``.
  """

  def run(perturbations: dict):
    logits, state = apply_fn(
      {**variables, 'perturbations': perturbations}, x, train=False, mutable=['intermediates']
    )
    scores = jax.nn.log_softmax(logits) if target == 'log_softmax' else logits
    score = jnp.sum(scores * jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))
    return score, (logits, state['intermediates'][layer][0])

  shapes = jax.eval_shape(lambda: apply_fn(variables, x, train=False, mutable=['perturbations'])[1])
  if layer not in shapes['perturbations']:
    raise ValueError(
      f'layer {layer!r} is not exposed by the model; it exposes {sorted(shapes["perturbations"])}'
    )
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['perturbations'])
  grads, (logits, feats) = jax.grad(run, has_aux=True)(zeros)
  weights = grads[layer].mean(axis=(1, 2), keepdims=True)
  return logits, jax.nn.relu(jnp.sum(weights * feats, axis=-1))
