"""Attribution explainers: differentiable, batched gradients of the target logit at the input.

Attribution explainers take ``logit_fn(x) -> logits`` (float32 ``(B, K)``; a closure over the
parameters, so everything here is differentiable with respect to them: ``jax.grad`` of a loss
of an explanation is double backprop), inputs ``x`` ``(B, H, W, C)`` and integer targets ``y``
``(B,)``, and return ``(logits at x, attribution (B, H, W, C))``. The target score is the
*logit* of the target class (as Grad-CAM and captum use). Examples are independent as long as
``logit_fn`` is (eval-mode BatchNorm or GroupNorm), so one backward pass of the summed target
logits gives every example's own input gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LogitFn = Callable[[jax.Array], jax.Array]


def _vjp_grads(logit_fn: LogitFn, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One forward and one backward pass: (logits, d logit_y / dx) sharing the forward."""
  logits, vjp = jax.vjp(logit_fn, x)
  (grads,) = vjp(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))
  return logits, grads


def _sample_grads(logit_fn: LogitFn, xs: jax.Array, y: jax.Array) -> jax.Array:
  """``d logit_y / dx`` at S inputs per example: ``xs`` ``(S, B, H, W, C)`` -> the same
  shape, from one pass over a batch of B * S.

  The batch is example-major, ``(B, S)`` flattened: where the B examples are split over a
  device mesh, every device then explains its own examples (``jax.vmap`` over the samples
  would make it sample-major, which the partitioner cannot split by example: it ran every
  sample of the whole batch on every device).
  """
  s, b = xs.shape[:2]
  flat = jnp.swapaxes(xs, 0, 1).reshape(b * s, *xs.shape[2:])
  grads = _vjp_grads(logit_fn, flat, jnp.repeat(y, s))[1]
  return jnp.swapaxes(grads.reshape(b, s, *xs.shape[2:]), 0, 1)


def input_gradients(
  logit_fn: LogitFn, x: jax.Array, y: jax.Array, rng: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """Vanilla gradient ``d logit_y / dx``."""
  del rng
  return _vjp_grads(logit_fn, x, y)


def gradient_x_input(
  logit_fn: LogitFn, x: jax.Array, y: jax.Array, rng: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """``x * d logit_y / dx``."""
  del rng
  logits, g = _vjp_grads(logit_fn, x, y)
  return logits, x * g


def smoothgrad(
  logit_fn: LogitFn,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array | None,
  *,
  samples: int = 8,
  noise: float = 0.15,
) -> tuple[jax.Array, jax.Array]:
  """Mean gradient over ``samples`` copies of ``x`` with Gaussian noise of standard deviation
  ``noise * (max(x) - min(x))`` per example (Smilkov et al. 2017)."""
  span = x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True)
  eps = jax.random.normal(rng, (samples, *x.shape), x.dtype) * noise * span
  return logit_fn(x), _sample_grads(logit_fn, x + eps, y).mean(axis=0)


def _baseline(x: jax.Array, baseline: float | jax.Array):
  return jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)


def gradient_shap(
  logit_fn: LogitFn,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array | None,
  *,
  samples: int = 5,
  baseline: float | jax.Array = 0.0,
  stdev: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """GradientSHAP / expected gradients (captum ``GradientShap``; the paper's training
  explainer, 5 samples, no noise by default).

  ``E_{alpha ~ U(0, 1), eps ~ N(0, stdev^2)}[(x + eps - b) * d logit_y / dx (b + alpha (x + eps
  - b))]`` estimated with ``samples`` draws of ``alpha`` (and ``eps``) per example, as captum
  draws them; ``b`` is a constant or an array broadcastable to ``x`` (the released code used
  a constant 0.1307 baseline in training, zeros in evaluation).
  """
  b = _baseline(x, baseline)
  k_alpha, k_eps = jax.random.split(rng)
  alphas = jax.random.uniform(k_alpha, (samples, x.shape[0]), x.dtype)  # (S, B)
  eps = jax.random.normal(k_eps, (samples, *x.shape), x.dtype) * stdev
  xn = x + eps
  points = b + alphas.reshape(*alphas.shape, *[1] * (x.ndim - 1)) * (xn - b)
  return logit_fn(x), ((xn - b) * _sample_grads(logit_fn, points, y)).mean(axis=0)


def integrated_gradients(
  logit_fn: LogitFn,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array | None = None,
  *,
  steps: int = 16,
  baseline: float | jax.Array = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Integrated gradients with the midpoint rule over ``steps`` points of the straight path
  from the baseline to ``x`` (Sundararajan et al. 2017)."""
  del rng
  b = _baseline(x, baseline)
  alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
  points = b + alphas.reshape(-1, *[1] * x.ndim) * (x - b)
  return logit_fn(x), (x - b) * _sample_grads(logit_fn, points, y).mean(axis=0)


ATTRIBUTION_EXPLAINERS = {
  'input_gradients': input_gradients,
  'gradient_x_input': gradient_x_input,
  'smoothgrad': smoothgrad,
  'gradient_shap': gradient_shap,
  'integrated_gradients': integrated_gradients,
}
