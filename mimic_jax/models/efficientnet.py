"""EfficientNet-B0 (Tan & Le 2019) in Flax Linen, layer for layer as timm's ``efficientnet_b0``
(BatchNorm epsilon 1e-5, symmetric padding; ``mimic_jax.models.pretrained`` loads its weights).

Input ``(B, H, W, C)``; logits ``(B, num_classes)``. Each of the 7 MBConv stages is exposed
as ``stage{i}`` (``stage7``, 320 channels at H/32, is the paper's Grad-CAM layer
``encoder.blocks.6``) and the 1280-channel head map as ``features``. Stochastic depth and the
classifier dropout of the reference are not applied (deterministic training).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# (expand ratio, kernel, stride, output channels, repeats) of B0.
B0_STAGES = (
  (1, 3, 1, 16, 1),
  (6, 3, 2, 24, 2),
  (6, 5, 2, 40, 2),
  (6, 3, 2, 80, 3),
  (6, 5, 1, 112, 3),
  (6, 5, 2, 192, 4),
  (6, 3, 1, 320, 1),
)


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand, depthwise k x k, squeeze-excitation, 1x1 project."""

  expand: int
  kernel: int
  strides: int
  out: int
  train: bool
  dtype: Any = None
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not self.train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    conv = functools.partial(self.conv, dtype=self.dtype)
    cin = x.shape[-1]
    hidden = cin * self.expand
    y = x
    if self.expand != 1:
      y = nn.silu(norm()(conv(hidden, (1, 1), use_bias=False)(y)))
    y = nn.Conv(
      hidden,
      (self.kernel, self.kernel),
      (self.strides, self.strides),
      padding=self.kernel // 2,
      feature_group_count=hidden,
      use_bias=False,
      dtype=self.dtype,
    )(y)  # depthwise
    y = nn.silu(norm()(y))
    s = jnp.mean(y, axis=(1, 2), keepdims=True)
    s = nn.silu(conv(max(1, cin // 4), (1, 1))(s))
    y = y * nn.sigmoid(conv(hidden, (1, 1))(s))
    y = norm()(conv(self.out, (1, 1), use_bias=False)(y))
    if self.strides == 1 and cin == self.out:
      y = y + x
    return y


class EfficientNetB0(nn.Module):
  """EfficientNet-B0 with a ``num_classes`` linear head."""

  num_classes: int = 3
  norm: str = 'batch'  # BatchNorm only, as timm
  dtype: Any = None  # computation dtype (None: the inputs'; parameters stay float32)
  conv: ModuleDef = nn.Conv  # every dense convolution's module

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype)
    x = nn.silu(norm(name='stem_norm')(conv(32, (3, 3), (2, 2), padding=1, name='stem')(x)))
    for i, (expand, kernel, strides, out, repeats) in enumerate(B0_STAGES):
      for j in range(repeats):
        x = MBConv(
          expand,
          kernel,
          strides if j == 0 else 1,
          out,
          train,
          self.dtype,
          self.conv,
          name=f'stage{i + 1}_block{j + 1}',
        )(x)
      x = self.perturb(f'stage{i + 1}', x)
      self.sow('intermediates', f'stage{i + 1}', x)
    x = nn.silu(norm(name='head_norm')(conv(1280, (1, 1), name='head')(x)))
    x = self.perturb('features', x)
    self.sow('intermediates', 'features', x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(
      jnp.mean(x, axis=(1, 2))
    )
    return logits if self.dtype is None else logits.astype(jnp.float32)
