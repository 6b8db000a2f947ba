"""Group normalisation (Wu & He, 2018) with ``flax.linen.GroupNorm``'s parameters and
numbers, written so that its first- and second-order gradients are few passes over the
activations.

flax reshapes ``(B, H, W, C)`` to ``(B, H, W, G, C/G)`` and reduces over ``H, W, C/G``; its
automatic derivative, and the derivative of that derivative (double backprop through an
explanation), become many small reductions and broadcasts over that five-dimensional view.
Here the statistics are per-channel sums over ``H, W`` folded into groups on the small
``(B, C)`` arrays, and the normalisation is one multiply-add with per-example, per-channel
coefficients; JAX's derivatives of that are again per-channel sums and multiply-adds. The
demo model's training step is about a third faster this way (``benchmarks/RESULTS.md``).

Same mathematics as flax (its default fast variance ``E[x^2] - E[x]^2``, clipped at 0;
statistics in float32; output in ``dtype`` or, when that is ``None``, the promoted dtype of
the input and the parameters), same parameters (``scale``, ``bias``: ``(C,)`` float32), so
checkpoints and pretrained weights are interchangeable with ``nn.GroupNorm``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupNorm(nn.Module):
  """``nn.GroupNorm(num_groups=None, group_size=group_size)`` over ``(B, ..., C)`` inputs:
  statistics per example and group of ``group_size`` channels, over every axis but the
  first and the last."""

  group_size: int
  epsilon: float = 1e-6
  dtype: Any = None  # the output's; None: promoted from the input and the parameters
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array):
    channels = x.shape[-1]
    if x.ndim < 3 or channels % self.group_size:
      raise ValueError(
        f'GroupNorm: input {x.shape} must be (batch, ..., channels) with '
        f'channels a multiple of group_size={self.group_size}'
      )
    scale = self.param('scale', self.scale_init, (channels,), jnp.float32)
    bias = self.param('bias', self.bias_init, (channels,), jnp.float32)
    out_dtype = self.dtype or jnp.result_type(x, scale, bias)
    return group_norm(x, scale, bias, self.group_size, self.epsilon).astype(out_dtype)


def _channel_sums(t: jax.Array):
  """Sums of ``t`` ``(B, ..., C)`` over its middle axes: ``(B, C)``."""
  return jnp.sum(t, axis=tuple(range(1, t.ndim - 1)))


def _group_mean(per_channel: jax.Array, group_size: int, count: int):
  """``(B, C)`` channel sums -> each channel's group sum / ``count``, ``(B, C)``."""
  b, c = per_channel.shape
  groups = per_channel.reshape(b, c // group_size, group_size).sum(-1) / count
  return jnp.repeat(groups, group_size, axis=1)


def _per_channel(coefficient: jax.Array, ndim: int):
  """``(B, C)`` -> ``(B, 1, ..., 1, C)``, to broadcast against an ``ndim``-array."""
  return coefficient.reshape(coefficient.shape[:1] + (1,) * (ndim - 2) + coefficient.shape[1:])


def group_norm(
  x: jax.Array, scale: jax.Array, bias: jax.Array, group_size: int, epsilon: float
) -> jax.Array:
  """``(x - mean) * rstd * scale + bias`` per example and channel group, computed in float32
  (or in ``x``'s dtype where that is wider, float64).

  Args:
    x: ``(B, ..., C)``, any float dtype.
    scale, bias: ``(C,)``.
    group_size: channels per group (divides ``C``).
    epsilon: added to the variance.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  count = x.size // (x.shape[0] * x.shape[-1]) * group_size
  mean = _group_mean(_channel_sums(x), group_size, count)
  # x * x, not jnp.square(x): the JVP of square keeps 2 * x as an extra array for double
  # backprop; x * x's keeps x.
  mean_sq = _group_mean(_channel_sums(x * x), group_size, count)
  rstd = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)
  a = rstd * scale
  return x * _per_channel(a, x.ndim) + _per_channel(bias - mean * a, x.ndim)
