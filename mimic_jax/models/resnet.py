"""Width-configurable ResNet (v1.5) for grey chest X-rays, Flax Linen.

Input ``x``: float32 ``(B, H, W, C)`` (C = 1, or 3 for ImageNet-style input). Output: logits
``(B, num_classes)``. Every stage output passes through ``self.perturb('stage{i}', ...)`` and
``self.sow('intermediates', 'stage{i}', ...)`` so that explainers can take gradients with
respect to, and read, any stage's feature map (Grad-CAM); the last one is also ``features``,
the name every model in the zoo gives its final feature map.

Normalisation: ``norm='batch'`` (BatchNorm; in ``train=False`` mode it uses running averages,
so each example's output depends on that example alone) or ``norm='group'`` (GroupNorm,
always per example).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def _norm(kind: str, train: bool, name: str | None = None, zero_init: bool = False,
          dtype: Any = jnp.float32):
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  if kind == 'batch':
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=scale_init, dtype=dtype, name=name)
  if kind == 'group':
    return nn.GroupNorm(num_groups=None, group_size=8, scale_init=scale_init, dtype=dtype,
                        name=name)
  raise ValueError(f'unknown norm {kind!r}; use "batch" or "group"')


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity or projected shortcut."""
  filters: int
  strides: int = 1
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(_norm, self.norm, train, dtype=self.dtype)
    y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), padding=1)(y)
    y = norm(zero_init=True)(y)
    if x.shape[-1] != self.filters or self.strides != 1:
      x = conv(self.filters, (1, 1), (self.strides, self.strides), name='proj')(x)
      x = norm(name='proj_norm')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet with ``stage_sizes`` basic blocks per stage and ``width`` filters in stage 1."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  num_classes: int = 3
  norm: str = 'batch'
  stem_pool: bool = True
  dtype: Any = jnp.float32  # computation dtype (parameters stay float32)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.width, (7, 7), (2, 2), padding=3, use_bias=False, dtype=self.dtype,
                name='stem')(x)
    x = nn.relu(_norm(self.norm, train, name='stem_norm', dtype=self.dtype)(x))
    if self.stem_pool:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, self.norm, self.dtype)(x, train)
      x = self.perturb(f'stage{i + 1}', x)
      self.sow('intermediates', f'stage{i + 1}', x)
    x = self.perturb('features', x)  # the last stage again, under the common name
    self.sow('intermediates', 'features', x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), width=64)
TinyResNet = functools.partial(ResNet, stage_sizes=(1, 1, 1), width=8, stem_pool=False)
