"""ResNet (v1.5, He et al. 2016) in Flax Linen, layer for layer as torchvision's.

Input ``x``: float ``(B, H, W, C)`` (C = 1, or 3 for ImageNet-style input). Output: logits
``(B, num_classes)``. Every stage output passes through ``self.perturb('stage{i}', ...)`` and
``self.sow('intermediates', 'stage{i}', ...)`` so that explainers can take gradients with
respect to, and read, any stage's feature map (Grad-CAM); the last one is also ``features``,
the name every model in the zoo gives its final feature map.

Normalisation: ``norm='batch'`` (BatchNorm; with ``train=False`` it uses running averages, so
each example's output depends on that example alone) or ``norm='group'`` (GroupNorm, always
per example).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mimic_jax.models import group_norm

ModuleDef = Any


def _norm(
  kind: str, train: bool, name: str | None = None, zero_init: bool = False, dtype: Any = None
) -> nn.Module:
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  if kind == 'batch':
    return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      scale_init=scale_init,
      dtype=dtype,
      name=name,
    )
  return group_norm.GroupNorm(group_size=8, scale_init=scale_init, dtype=dtype, name=name)


class _Block(nn.Module):
  """A residual block: ``relu(shortcut(x) + residual(x))``; subclasses give the residual."""

  filters: int
  strides: int = 1
  norm: str = 'batch'
  dtype: Any = None
  downsample: str = 'stride'
  conv: ModuleDef = nn.Conv
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(_norm, self.norm, train, dtype=self.dtype)
    strides = self.strides
    if strides != 1 and self.downsample == 'pool':  # average-pool, then stride-1 convolutions
      x, strides = nn.avg_pool(x, (strides, strides), (strides, strides)), 1
    y = self.residual(x, strides, conv, norm)
    out = self.expansion * self.filters
    if x.shape[-1] != out or strides != 1:
      x = norm(name='proj_norm')(conv(out, (1, 1), (strides, strides), name='proj')(x))
    return nn.relu(x + y)


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18)."""

  def residual(self, x: jax.Array, strides: int, conv: ModuleDef, norm: ModuleDef) -> jax.Array:
    y = nn.relu(norm()(conv(self.filters, (3, 3), (strides, strides), padding=1)(x)))
    return norm(zero_init=True)(conv(self.filters, (3, 3), padding=1)(y))


class BottleneckBlock(_Block):
  """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand to ``4 * filters`` (ResNet-50)."""

  expansion: ClassVar[int] = 4

  def residual(self, x: jax.Array, strides: int, conv: ModuleDef, norm: ModuleDef) -> jax.Array:
    y = nn.relu(norm()(conv(self.filters, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.filters, (3, 3), (strides, strides), padding=1)(y)))
    return norm(zero_init=True)(conv(4 * self.filters, (1, 1))(y))


class ResNet(nn.Module):
  """ResNet with ``stage_sizes`` blocks per stage and ``width`` filters in stage 1."""

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  num_classes: int = 3
  norm: str = 'batch'
  stem_pool: bool = True
  block: str = 'basic'  # basic (ResNet-18) | bottleneck (ResNet-50)
  dtype: Any = None  # computation dtype (None: the inputs'; parameters stay float32)
  # Stage transitions: 'stride', stride-2 convolutions (torchvision's); 'pool', 2 x 2
  # average pooling before stride-1 convolutions (the same parameters and FLOPs; the
  # synthetic demo's model, benchmarks/RESULTS.md says why). The stem stays strided.
  downsample: str = 'stride'
  conv: ModuleDef = nn.Conv  # every convolution's module (flax's, or a drop-in replacement)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = self.conv(
      self.width, (7, 7), (2, 2), padding=3, use_bias=False, dtype=self.dtype, name='stem'
    )(x)
    x = nn.relu(_norm(self.norm, train, name='stem_norm', dtype=self.dtype)(x))
    if self.stem_pool:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    block = BottleneckBlock if self.block == 'bottleneck' else BasicBlock
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, strides, self.norm, self.dtype, self.downsample, self.conv)(
          x, train
        )
      x = self.perturb(f'stage{i + 1}', x)
      self.sow('intermediates', f'stage{i + 1}', x)
    x = self.perturb('features', x)  # the last stage again, under the common name
    self.sow('intermediates', 'features', x)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return logits if self.dtype is None else logits.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), width=64)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), width=64, block='bottleneck')
TinyResNet = functools.partial(ResNet, stage_sizes=(1, 1, 1), width=8, stem_pool=False)
