"""Post-processing of attribution maps: sign, channel reduction, pooling, normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Allowed values, gathered by ``mimic_jax.config_check``.
SIGNS = ('abs', 'relu', 'none')
CHANNEL_REDUCTIONS = ('sum', 'mean', 'max')
NORMALIZATIONS = ('minmax', 'sum', 'none')


def postprocess(
  attribution: jax.Array,
  *,
  sign: str = 'abs',
  channels: str = 'sum',
  normalize: str = 'minmax',
  pool: int = 1,
) -> jax.Array:
  """Composable map post-processing, per example.

  Args:
    attribution: ``(B, H, W, C)`` or ``(B, H, W)``.
    sign: ``'abs'``, ``'relu'`` or ``'none'``.
    channels: reduce C by ``'sum'``, ``'mean'`` or ``'max'`` (ignored for 3-D input).
    normalize: ``'minmax'`` to [0, 1], ``'sum'`` to a distribution, or ``'none'``.
    pool: average-pool by this integer factor (downsampling before a discriminator).

  Returns:
    ``(B, H / pool, W / pool)`` float maps.
  """
  a = {'abs': jnp.abs, 'relu': jax.nn.relu, 'none': lambda v: v}[sign](attribution)
  if a.ndim == 4:
    a = {'sum': jnp.sum, 'mean': jnp.mean, 'max': jnp.max}[channels](a, axis=-1)
  if pool > 1:
    b, h, w = a.shape
    a = a[:, : h - h % pool, : w - w % pool].reshape(b, h // pool, pool, w // pool, pool)
    a = a.mean(axis=(2, 4))
  if normalize == 'minmax':
    lo = a.min(axis=(1, 2), keepdims=True)
    hi = a.max(axis=(1, 2), keepdims=True)
    a = (a - lo) / jnp.maximum(hi - lo, 1e-12)
  elif normalize == 'sum':
    a = a / jnp.maximum(a.sum(axis=(1, 2), keepdims=True), 1e-12)
  return a
